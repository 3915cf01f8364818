"""The MQTT router: requests on `<root>/...`, wake word claims, and house traffic.

Requests go ahead of house traffic (see assistant.link.inbox); our own inputs are
answered `busy` when they cannot be taken, and every bad payload gets one clear
`event/error`, so no request ends in silence.

With the daemon's persistent session (assistant/link/client.py) our own inputs are
subscribed at QoS 1, so the broker keeps them while we are away, and acknowledged only
once handled; one that waited too long is answered `stale_request` instead
(assistant/daemon/freshness.py). House traffic is subscribed at QoS 0: the broker keeps
none of it for us (a flood of states must not crowd requests out of its queue), and the
retained states come again when we subscribe after reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import openai

from assistant.agent.images import ImagePublisher, ImageRequest, parse_image_request
from assistant.audio.listener import Listener
from assistant.daemon.events import Events
from assistant.daemon.freshness import judge, sent_at_of
from assistant.daemon.payloads import (
    BadRequest,
    decode_payload,
    optional_str,
    parse_signal,
    parse_switch,
    parse_text_request,
)
from assistant.daemon.state import Event, StateMachine
from assistant.daemon.turns import SayTurn, Turns
from assistant.home.house import House
from assistant.link.client import Message, MqttLink

log = logging.getLogger(__name__)

HOUSE_SLICE_S = 0.005  # house traffic is read for this long between two turns of the loop
INPUTS = ("ask", "say", "listen", "cancel", "mute/set", "image/generate")
REMEMBERED = 1000  # requests with an id remembered to recognise a copy (QoS 1 delivers at least once)


class Inputs:
    """Reads the link's inbox and hands each message to the part that serves it."""

    def __init__(
        self,
        link: MqttLink,
        root: str,
        claims_topic: str,
        *,
        events: Events,
        house: House,
        machine: StateMachine,
        listener: Listener,
        turns: Turns,
        images: ImagePublisher | None,
        set_muted: Callable[[bool], None],
        also_first: set[str],
        max_age_s: float = 120.0,
    ) -> None:
        """`also_first`: more topics read ahead of house traffic (the service bridge's results).

        `max_age_s`: a request older than this is answered stale_request ([mqtt] request_max_age_s).
        """
        self.link = link
        self.root = root
        self.claims_topic = claims_topic
        self.events = events
        self.house = house
        self.machine = machine
        self.listener = listener
        self.turns = turns
        self.images = images
        self.set_muted = set_muted
        self.topics = [f"{root}/{name}" for name in INPUTS]
        self.requests = set(self.topics)
        self.also_first = set(also_first)
        self.max_age_s = max_age_s
        # Requests go ahead of house traffic (see assistant.link.inbox).
        link.messages.is_request = {*self.requests, claims_topic, *also_first}.__contains__
        link.held = self.requests.__contains__  # acknowledged to the broker once handled
        self.background: set[asyncio.Task[Any]] = set()
        self._lost_reported = 0
        self.holding = False  # stopping: requests the broker keeps are left to the next instance
        self._seen: OrderedDict[tuple[str, bytes], float] = OrderedDict()  # (topic, payload) -> time.monotonic()

    def input_topics(self) -> list[str]:
        """Topics this daemon reads."""
        return [*self.topics, self.claims_topic, *self.house.topics()]

    def subscribe(self) -> None:
        """Subscribe to every input; with a persistent session, only requests are kept for us while away."""
        if not self.link.persistent:
            self.link.subscribe(self.input_topics())
            return
        self.link.subscribe([*self.topics, *sorted(self.also_first)], qos=1)
        self.link.subscribe([self.claims_topic, *self.house.topics()], qos=0)  # later ones: link.default_qos

    async def dispatch(self) -> None:
        """Route incoming MQTT messages: requests first, house traffic in slices between them.

        A slice of house traffic (discovery configs, states) is followed by a look at the
        requests and a turn of the loop, so microphone frames and requests never wait for a
        discovery storm to be read (see assistant.link.inbox).
        """
        inbox = self.link.messages
        while True:
            await inbox.wait()
            self.serve_requests()
            house = inbox.take_house()
            done = 0
            while done < len(house):
                until = time.monotonic() + HOUSE_SLICE_S
                while done < len(house) and time.monotonic() < until:
                    self.route(house[done])
                    done += 1
                self.house.flush()
                await asyncio.sleep(0)  # frames, turns and timers run here
                self.serve_requests()

    def serve_requests(self) -> None:
        """Handle every waiting request, and answer `busy` to those that did not fit."""
        refused, lost = self.link.messages.take_refused()
        for message in refused:
            self.refuse(message)
            self.link.ack(message)
        if lost > self._lost_reported:
            log.error("%d requests dropped without an answer: the input queue stayed full", lost - self._lost_reported)
            self._lost_reported = lost
        for message in self.link.messages.take_requests():
            if self.holding and message.qos and message.topic in self.requests:
                continue  # not acknowledged: the broker delivers it again to the next instance
            if not self.copy(message):
                self.route(message)
            self.link.ack(message)  # handled or answered: the broker need not keep it any longer

    def copy(self, message: Message) -> bool:
        """Whether this is a copy of a request with an id handled lately (say True, and log it).

        QoS 1 is "at least once": a publisher whose acknowledgement was lost with the connection
        sends again, and a broker restored from its last save can deliver again what we had
        already acknowledged. The same id and payload on the same topic within `max_age_s` is
        taken as such a copy: answered once, acted on once.
        """
        if not message.qos or message.topic not in self.requests:
            return False
        if request_id_of(message.payload) is None:  # only a JSON `id`: a button's plain PRESS comes again and again
            return False  # without an id, the same words twice are two requests
        now, key = time.monotonic(), (message.topic, message.payload)
        while self._seen and (len(self._seen) > REMEMBERED or next(iter(self._seen.values())) < now - self.max_age_s):
            self._seen.popitem(last=False)
        if key in self._seen:
            log.info("a copy of a request on %s came again; handled once", message.topic)
            return True
        self._seen[key] = now
        return False

    def hold(self) -> None:
        """From now on, leave requests the broker keeps for us unhandled and unacknowledged.

        On a stop with a persistent session: a request that arrives then is delivered again
        to the next instance (a restart) rather than answered `stopping`.
        """
        self.holding = True
        log.info("stopping: requests from now on are left to the next instance")

    def refuse(self, message: Message) -> None:
        """A request that arrived while too many were waiting: `event/error` busy, with its id if readable."""
        if message.topic not in self.requests:  # a claim or a bridge result: nobody to answer
            log.warning("input queue full; dropped a message on %s", message.topic)
            return
        signal = message.topic.endswith(("/listen", "/cancel"))  # where a plain-text payload is an id
        self.events.error(request_id_of(message.payload, signal), "busy", f"{message.topic}: too many requests waiting")

    def route(self, message: Message) -> None:
        """Handle one message; a bad payload is answered on event/error."""
        try:
            self.on_message(message)
        except BadRequest as error:
            self.events.error(error.request_id, "bad_request", f"{message.topic}: {error}")
        except Exception:  # one bad message must not end the dispatcher: report it and go on
            log.exception("handling a message on %s failed", message.topic)
            self.events.error(None, "internal_error", f"{message.topic}: the message could not be handled")

    def on_message(self, message: Message) -> None:
        """Handle one MQTT message."""
        if message.topic == self.claims_topic:
            self.listener.on_claim(message.payload)
            return
        if not message.topic.startswith(self.root + "/"):
            self.house.handle(message)
            return
        name = message.topic.removeprefix(self.root + "/")
        if message.topic in self.requests and self.stale(message):
            return
        if name == "ask":
            self.turns.submit(parse_text_request(message.payload, speak_default=False))
        elif name == "say":
            request = parse_text_request(message.payload, speak_default=True)
            self.turns.submit(SayTurn(request.text, request.id))
        elif name == "listen":
            request_id = parse_signal(message.payload)
            if self.machine.muted:
                raise BadRequest("the microphone is muted", request_id)
            if self.machine.busy:
                self.turns.interrupt()  # as if the wake word was heard: the new request replaces the current one
            self.listener.open("mqtt", request_id)
        elif name == "cancel":
            parse_signal(message.payload)
            self.machine.handle(Event.CANCEL)
            self.listener.close()
            self.turns.interrupt()
        elif name == "mute/set":
            self.set_muted(parse_switch(message.payload))
        elif name == "image/generate":
            image_request = parse_image_request(message.payload)
            if self.images is None:
                raise BadRequest("image generation is off (set [images] enabled = true)", image_request.id)
            task = asyncio.create_task(self.generate_image(self.images, image_request))
            self.background.add(task)  # image generation takes a while: it must not hold up voice turns
            task.add_done_callback(self.background.discard)
        else:
            self.house.handle(message)  # e.g. a state topic that happens to sit under our prefix

    def stale(self, message: Message) -> bool:
        """Answer `stale_request` (and say True) for a request too old to act on."""
        verdict = judge(
            sent_at_of(message.payload),
            backlog=message.backlog,
            away_since=message.away_since,
            now=time.time(),
            max_age_s=self.max_age_s,
        )
        if verdict is None:
            return False
        signal = message.topic.endswith(("/listen", "/cancel"))
        self.events.error(
            request_id_of(message.payload, signal),
            "stale_request",
            f"{message.topic}: not acted on: {verdict.message}",
            age_s=verdict.age_s,
            age_exact=verdict.exact,
        )
        return True

    async def generate_image(self, images: ImagePublisher, request: ImageRequest) -> None:
        """Serve `<prefix>/image/generate`; failures are answered on event/error."""
        try:
            await images.run(request)
        except openai.APIError as error:
            self.events.error(request.id, "api_error", f"images: {type(error).__name__}: {error}")
        except RuntimeError as error:
            self.events.error(request.id, "api_error", f"images: {error}")


def request_id_of(payload: bytes, signal: bool = False) -> str | None:
    """The `id` of a JSON request (or of a plain-text `signal`: listen, cancel), if it can be read."""
    try:
        data = decode_payload(payload)
        if isinstance(data, dict):
            return optional_str(data, "id", None)
    except BadRequest:
        return None
    return data if signal and isinstance(data, str) and 0 < len(data) <= 64 else None
