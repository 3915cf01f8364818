"""The daemon's wiring: microphone -> VAD -> transcription -> agent -> MQTT + speech.

`Assistant` builds the parts and hands them to each other; the work is theirs:
`Events` (everything published), `Speech` (the voice output), `Turns` (the turn queue
and how each turn is answered), `Inputs` (the MQTT router) and the `Listener` (when
microphone audio becomes a request). One asyncio loop runs the capture, the MQTT
dispatcher and the turn worker until SIGTERM, or a SIGHUP reload hands over to the next
instance.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import signal
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from assistant.agent.conversation import Agent, Reply
from assistant.agent.images import ImageMaker, ImagePublisher
from assistant.agent.providers import make_client, prewarm, resolve, stages_in_use
from assistant.agent.tools import HomeTools, Tool
from assistant.audio.devices import SoundCard
from assistant.audio.echo import EchoCanceller
from assistant.audio.listener import Listener
from assistant.audio.microphone import Microphone
from assistant.config import Config
from assistant.daemon import systemd
from assistant.daemon.events import Events
from assistant.daemon.inputs import Inputs
from assistant.daemon.lifecycle import (
    EXIT_CREDENTIALS,
    reload_config,
    until_connected_or_stopped,
    verify_credentials,
    watchdog,
)
from assistant.daemon.listening import ListenerHost
from assistant.daemon.speech import Speech
from assistant.daemon.state import Event, State, StateMachine
from assistant.daemon.store import Store
from assistant.daemon.turns import FINISH_REPLY_S, STOP_TASKS_TIMEOUT_S, Turns
from assistant.fastpath import FastPath
from assistant.home.bridge import ServiceBridge
from assistant.home.entities import Command
from assistant.home.house import House
from assistant.home.registry import Registry
from assistant.link.client import MqttLink
from assistant.link.delivery import Delivery
from assistant.voice.stt import Transcriber
from assistant.voice.tts import make_voice

log = logging.getLogger(__name__)

STOP_STACKS_AFTER_S = 8.0
ALIVE_EVERY_S = 60.0  # how often `alive_at` is written: after a crash, what the broker kept is at most this much older
STOPPING = "the assistant is stopping; this request was not handled"


class Assistant:
    """Builds the daemon's parts, hands them to each other, and runs them until stopped."""

    def __init__(
        self,
        config: Config,
        env: Mapping[str, str] | None = None,
        *,
        daemon: bool = True,
        config_path: Path | None = None,
        link: MqttLink | None = None,
    ) -> None:
        """`daemon=False` (one-off CLI turns) neither announces status nor publishes state.

        `link`: the connection of the instance before a reload, still up (see `kept_link`).
        """
        env = os.environ if env is None else env
        self.env = env
        self.config = config
        self.root = config.topic_root
        self.daemon = daemon
        self.link_taken_over = link is not None
        self.link = link if link is not None else MqttLink(config.mqtt, self.root, will=daemon, persistent=daemon)
        self.events = Events(self.link, f"{config.mqtt.topic_prefix}/arbitration")
        self.registry = Registry(config.homeassistant)
        ha = config.homeassistant
        self.bridge = (
            ServiceBridge(ha.service_topic, self.send_command, ha.bridge_timeout_s) if ha.service_topic else None
        )
        ids = Store(config.device.state_dir, "entity_ids.json")  # learned entity ids, kept like HA's registry
        self.house = House(config, self.link, self.registry, self.bridge, ids.load(), ids.write)
        self.store = Store(config.device.state_dir)
        self.machine = StateMachine(config.wake.mode, bool(self.store.load().get("muted", False)), self._state_changed)
        self.state_published = False  # the state goes out once the daemon is ready
        clients = {stage: make_client(resolve(config, stage, env)) for stage in stages_in_use(config)}
        self.clients_to_warm = list(clients.values())  # emptied once warmed, as the first request comes
        self.transcriber = Transcriber(config.stt, clients["stt"])
        self.home_tools = HomeTools(self.registry, self.publish_command, self.bridge)
        self.images = (
            ImagePublisher(ImageMaker(config.images, clients["images"]), self.root, self.link.publish)
            if config.images.enabled
            else None
        )
        self.agent = Agent(config.agent, config.device, clients["agent"], self.registry, self.agent_tools)
        echo = EchoCanceller(config.audio.sample_rate) if config.audio.echo_cancel else None
        self.card = SoundCard(config.audio.output_device, echo)
        voice = make_voice(config.tts, clients.get("tts"), config.device.language, config.device.state_dir)
        self.speech = Speech(voice, self.card, self.machine, self.events)
        self.stopping = asyncio.Event()
        self.fast_path = (
            FastPath(self.registry, config.device.language, area=config.device.area)
            if config.agent.local_intents
            else None
        )
        self.turns = Turns(
            config,
            machine=self.machine,
            events=self.events,
            speech=self.speech,
            agent=self.agent,
            transcriber=self.transcriber,
            home_tools=self.home_tools,
            fast_path=self.fast_path,
            stopping=self.stopping,
            follow_up=self._follow_up,
        )
        self.hearing = ListenerHost(self.machine, self.events, self.speech, self.turns, self.transcriber)
        self.listener = Listener(config, self.hearing)
        if config.realtime.enabled:  # spoken requests go to Realtime sessions (assistant/daemon/realtime.py)
            from assistant.daemon.realtime import RealtimeVoice, realtime_connector

            self.turns.realtime = self.hearing.realtime = RealtimeVoice(
                config,
                realtime_connector(config, env),
                agent=self.agent,
                events=self.events,
                speech=self.speech,
                machine=self.machine,
                end_utterance=self.listener.end_utterance,
            )
        self.inputs = Inputs(
            self.link,
            self.root,
            self.events.claims_topic,
            events=self.events,
            house=self.house,
            machine=self.machine,
            listener=self.listener,
            turns=self.turns,
            images=self.images,
            set_muted=self.set_muted,
            also_first={self.bridge.result_topic} if self.bridge is not None else set(),
            max_age_s=config.mqtt.request_max_age_s,
        )
        self.microphone: Microphone | None = None
        self.listener.on_open = self._hear
        self.exit_code = 0
        self.config_path = config_path
        self.next_config: Config | None = None  # set by a valid SIGHUP reload
        self.kept_link: MqttLink | None = None  # after a reload: the connection the next instance takes over

    # --- outputs -------------------------------------------------------------

    def _state_changed(self, state: State) -> None:
        """The state machine moved: publish `<root>/state` (retained) and tell systemd."""
        if state in (State.LISTENING, State.TRANSCRIBING, State.THINKING) and self.clients_to_warm:
            clients, self.clients_to_warm = self.clients_to_warm, []
            asyncio.get_running_loop().run_in_executor(None, prewarm, clients)
        if self.daemon and self.state_published:
            self.link.publish(f"{self.root}/state", state, retain=True)
            systemd.notify(f"STATUS={state}")

    def publish_state(self) -> None:
        """Start publishing the state (the daemon is ready), and publish it now."""
        self.state_published = True
        self._state_changed(self.machine.state)

    def on_connect(self) -> None:
        """After every (re)connect: our retained outputs and discovery, again."""
        if self.state_published:
            self.link.publish(f"{self.root}/state", self.machine.state, retain=True)
        self.link.publish(f"{self.root}/mute", "ON" if self.machine.muted else "OFF", retain=True)
        self.house.announce()
        self.house.request_snapshot()

    def set_muted(self, muted: bool) -> None:
        """Mute or unmute the microphone; remembered across restarts."""
        self.machine.handle(Event.MUTE if muted else Event.UNMUTE)
        if muted:
            self.listener.close()
        else:
            self._hear()
        self.store.save(muted=muted)
        self.link.publish(f"{self.root}/mute", "ON" if muted else "OFF", retain=True)
        log.info("microphone %s", "muted" if muted else "unmuted")

    def agent_tools(self) -> list[Tool]:
        """The home's tools, and the picture tool when images are on."""
        tools = self.home_tools.tools()
        if self.images is not None and self.config.images.tool:
            tools.append(self.images.tool())
        return tools

    async def publish_command(self, command: Command) -> Delivery:
        """Publish an entity command; say truthfully whether the broker took it."""
        return await self.send_command(command.topic, command.payload, command.retain)

    async def send_command(self, topic: str, payload: str, retain: bool = False) -> Delivery:
        """A device command or bridge request, confirmed within mqtt.command_timeout_s."""
        return await self.link.send_command(topic, payload, retain=retain, timeout=self.config.mqtt.command_timeout_s)

    # --- for the tests (the work is done by the parts) ------------------------

    def input_topics(self) -> list[str]:
        """Topics this daemon reads."""
        return self.inputs.input_topics()

    def serve_requests(self) -> None:
        """Handle every waiting request (see Inputs.serve_requests)."""
        self.inputs.serve_requests()

    def _follow_up(self, request_id: str) -> None:
        """The reply asked a question: listen for the answer without the wake word."""
        self.listener.open("followup", request_id, timeout_s=self.config.wake.followup_s)

    async def capture(self, microphone: Microphone) -> None:
        """Hand every microphone frame to the listener; stop reading while none can matter."""
        microphone.on_trouble = self.hearing.audio_trouble
        async for frame in microphone.frames():
            self.listener.feed(frame)
            microphone.batch = 2 if self.listener.wake_word_only() else 1
            if not self.listener.needs_audio():
                microphone.pause()  # until _hear

    def _hear(self) -> None:
        """A listen window opened (or the microphone was unmuted): read the microphone again."""
        if self.microphone is not None and self.listener.needs_audio():
            self.microphone.batch = 1
            self.microphone.resume()

    # --- lifecycle -----------------------------------------------------------

    async def remember_alive(self) -> None:
        """Write `alive_at` now and then: after a crash, the next start bounds the age of what the
        broker kept meanwhile by it (assistant/daemon/freshness.py), instead of not knowing it."""
        while True:
            await asyncio.sleep(ALIVE_EVERY_S)
            if not await asyncio.to_thread(self.store.save, alive_at=time.time()):
                await self.stopping.wait()  # the disk will not take it (warned once): a crash leaves it unknown

    async def settle(self) -> None:
        """What start-up need not wait for, in a thread beside it: the broker connection and the
        credential check mostly wait on the network, so it is usually done by READY (a request
        that comes before it is does it itself)."""
        if self.fast_path is not None:
            await asyncio.to_thread(self.fast_path.load)

    def _critical_task_done(self, task: asyncio.Task[None]) -> None:
        """A loop that ends by itself is a bug: log it and stop, so systemd restarts us."""
        if task.cancelled() or self.stopping.is_set():
            return
        error = task.exception()
        log.critical("%s ended unexpectedly", task.get_coro(), exc_info=error)
        self.exit_code = 1
        self.stopping.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config; switch to it only if it is valid, else keep running."""
        if self.config_path is None:
            log.warning("SIGHUP: no config file to reload")
            return
        if self.stopping.is_set() and self.next_config is None:
            log.warning("SIGHUP: already stopping; not reloading")
            return
        following = reload_config(self.config_path, self.env, self.events)
        if following is None:
            return
        self.next_config = following
        log.info("reloading %s", self.config_path)
        self.stopping.set()

    def request_stop(self) -> None:
        """SIGTERM / SIGINT: stop, even when a reload was under way."""
        self.next_config = None
        self.stopping.set()

    async def run(self, audio: bool = True) -> int:
        """Run until SIGTERM / SIGINT (or a SIGHUP reload); READY once the broker and audio are up."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.inputs.subscribe()
        self.link.on_connect.append(self.on_connect)
        settling = asyncio.create_task(self.settle())
        if self.link_taken_over:
            # Still connected and subscribed since before the reload: nothing sent meanwhile was
            # missed. The new registry needs the retained discovery configs and states again.
            self.link.resubscribe(self.house.topics())
            if self.link.connected.is_set():
                self.on_connect()
        else:
            log.info("connecting to the broker at %s:%d", self.config.mqtt.host, self.config.mqtt.port)
            # When the last instance stopped reading: bounds the age of what the broker kept meanwhile.
            self.link.offline_since = away_since(self.store.load())
            await self.link.start(timeout=None)
        if not await until_connected_or_stopped(self.link, self.stopping):
            settling.cancel()
            self.link.stop()
            return self.exit_code
        coroutines: list[Coroutine[Any, Any, None]] = [self.inputs.dispatch(), self.turns.worker()]
        if self.link.persistent:
            self.store.save(offline_at=None, alive_at=time.time())
            coroutines.append(self.remember_alive())
        microphone = None
        if audio:
            microphone = self.microphone = Microphone(
                self.card,
                self.config.audio.input_device,
                self.config.audio.sample_rate,
                self.config.audio.frame_ms,
                self.config.audio.input_gain,
            )
            coroutines.append(self.capture(microphone))
        watchdog_usec = int(self.env.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_usec and self.env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
            coroutines.append(watchdog(watchdog_usec / 1e6 / 2))
        verified = await verify_credentials(self.config, self.env, self.events, self.stopping)
        if verified != "verified":
            if verified == "rejected":
                self.exit_code = EXIT_CREDENTIALS
                self.turns.drop_unfinished("credentials", "an API key was rejected; this request was not handled")
            elif self.next_config is None:
                self.turns.drop_unfinished("stopping", STOPPING)
            settling.cancel()
            self.link.stop()
            return self.exit_code
        tasks = [asyncio.create_task(c) for c in coroutines]
        for task in tasks:
            task.add_done_callback(self._critical_task_done)
        self.publish_state()
        systemd.notify("READY=1")
        log.info("ready: %s (mode %s)", self.root, self.config.wake.mode)
        tasks.append(settling)
        await self.stopping.wait()
        await self.wind_down(tasks, microphone)
        return self.exit_code

    async def wind_down(self, tasks: list[asyncio.Task[None]], microphone: Microphone | None) -> None:
        """Stop (SIGTERM) or hand over to the next instance (SIGHUP) without losing a request.

        The turn under way finishes (within FINISH_REPLY_S); turns not started go to the next
        instance on a reload and are answered on event/error on a stop.
        """
        if self.next_config is None:
            systemd.notify("STOPPING=1")
            log.info("stopping")
        else:  # systemd then waits for the READY=1 of the next instance
            systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        faulthandler.dump_traceback_later(STOP_STACKS_AFTER_S + FINISH_REPLY_S, exit=False)  # a hang shows where
        stopped_reading = time.time()  # what comes from now on may wait for the next instance
        if self.next_config is None and self.link.persistent:
            self.inputs.hold()  # the broker keeps what comes now for the next instance
        await self.turns.finish_current_turn(lambda: self.next_config is not None)
        for task in tasks:
            task.cancel()
        if self.turns.current is not None:
            self.turns.current.cancel()
        _done, pending = await asyncio.wait(tasks, timeout=STOP_TASKS_TIMEOUT_S)
        if pending:
            log.error("tasks did not stop in time: %s", [t.get_coro() for t in pending])
        if self.next_config is None:
            self.turns.drop_unfinished("stopping", STOPPING)
        if self.turns.realtime is not None:
            await self.turns.realtime.close()
        if microphone is not None:
            microphone.close()
        self.card.close()
        self.house.save()  # before a reload's next instance reads them
        following = self.next_config
        if following is not None and following.mqtt == self.config.mqtt and following.topic_root == self.root:
            # The next instance keeps this connection: no request sent during the reload is
            # missed and Home Assistant never sees the device offline. A changed [mqtt] reconnects.
            self.link.on_connect.remove(self.on_connect)  # the next instance announces itself
            self.kept_link = self.link
        else:
            if self.link.persistent:
                self.store.save(offline_at=stopped_reading)
            self.link.stop()
        faulthandler.cancel_dump_traceback_later()


def away_since(saved: Mapping[str, Any]) -> float | None:
    """Since when the last instance has not read its inputs: its clean stop, else (a crash) the
    last time it said it was alive; None when neither was written."""
    for key in ("offline_at", "alive_at"):
        value = saved.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def describe_reply(reply: Reply) -> str:
    """Reply text and actions, as the CLI prints them."""
    return "\n".join([reply.text] + [f"  action: {json.dumps(a.as_dict())}" for a in reply.actions])
