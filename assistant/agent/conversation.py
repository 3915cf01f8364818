"""The conversation agent: a streamed chat completion with a capped tool loop.

Text deltas are handed out as they arrive (so speech can start early); tool calls are
run once their arguments are complete and their results go back to the model, errors
included, until it answers in words or the loop cap is reached. Each reply carries the
tokens the API reported for the turn, and says when the answer was cut short (length,
content filter, or a stream that ended without its final chunk): a cut-short round's
tool calls are never run, their arguments may be incomplete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
import openai
from openai.types.chat import ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from assistant.agent.catalog import Listing, is_minor, listing, states_line
from assistant.agent.memory import Memory
from assistant.agent.prompt import Instructions
from assistant.agent.tools import Action, Tool
from assistant.config import (
    RECOMMENDED_MAX_TOKENS,
    RECOMMENDED_MODEL,
    RECOMMENDED_REASONING_EFFORT,
    AgentConfig,
    DeviceConfig,
)
from assistant.home.budget import estimate_tokens
from assistant.home.commands import ACTIONS
from assistant.home.entities import Entity
from assistant.home.registry import Registry

log = logging.getLogger(__name__)

LOOP_CAP_REPLY = "Sorry, I could not finish that."
UNTUNED_KEYS = ("user", "safety_identifier", "service_tier")  # sent whether or not `recommended` is on
CONTROLLABLE = set().union(*ACTIONS.values())  # domains a tool can act on: listed before read-only ones
COMPLETE_FINISH = {"stop", "tool_calls", "function_call"}
CUT_CODES = {"length": "reply_truncated", "content_filter": "content_filtered", None: "stream_cut"}
READ_STATES = (
    "Current states are not listed: for any question about how something is now, call get_state "
    "(or find_entities for an area or a domain) and answer from its result; never guess a state."
)
READ_STATES_LISTED = (  # with states_in_prompt: the states may be at the end, or left out if they did not fit
    "For any question about how something is now, use the current states at the end of this prompt; "
    "when they are not there, call get_state (or find_entities for an area or a domain)."
)


@dataclass
class Usage:
    """Tokens the API reported for one turn, summed over its requests (one per tool round)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0  # chat requests made
    reported: int = 0  # of which the API reported usage

    def add(self, usage: CompletionUsage) -> None:
        """Count one request's usage."""
        self.prompt_tokens += usage.prompt_tokens or 0
        self.completion_tokens += usage.completion_tokens or 0
        details = usage.prompt_tokens_details
        self.cached_tokens += (details.cached_tokens or 0) if details is not None else 0
        self.reported += 1

    def as_dict(self) -> dict[str, int] | None:
        """For event/reply: zeros when no request was made, None when the API reported nothing."""
        if self.requests and not self.reported:
            return None
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass
class Reply:
    """The agent's answer to one turn."""

    text: str
    actions: list[Action] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cut: str | None = None  # why the answer is incomplete: reply_truncated, content_filtered, stream_cut, api_error


# code -> (event/error message, said after the whole sentences that arrived, said when none did)
CUT_SHORT: dict[str, tuple[str, str, str]] = {
    "reply_truncated": (
        "the answer reached the token limit (finish_reason length)",
        "Sorry, my answer was cut short.",
        "Sorry, my answer was cut short before I could say anything. Please try again.",
    ),
    "content_filtered": (
        "the provider's content filter stopped the answer (finish_reason content_filter)",
        "Sorry, I can't say more about that.",
        "Sorry, I can't answer that.",
    ),
    "stream_cut": (
        "the answer's stream ended before its final chunk",
        "Sorry, the rest of my answer was lost.",
        "Sorry, my answer was lost on the way. Please try again.",
    ),
}


def cut_short(reply: Reply, said: list[str]) -> tuple[Reply, str]:
    """A cut-short answer as the household hears it, and what is still to be said.

    `said` holds the whole sentences already handed to speech; the unfinished one is
    dropped, and a short note says the answer is incomplete (an apology alone when no
    whole sentence arrived). The reply's text is exactly what is spoken.
    """
    _message, note, apology = CUT_SHORT[reply.cut or "stream_cut"]
    ending = note if said else apology
    return Reply(" ".join([*said, ending]), reply.actions, reply.usage, reply.cut), ending


@dataclass
class ToolCall:
    """A function call the model asked for, its arguments as the JSON text it wrote."""

    id: str = ""
    name: str = ""
    arguments: str = ""


class Agent:
    """Answers a request, acting through tools when the model asks."""

    def __init__(
        self,
        config: AgentConfig,
        device: DeviceConfig,
        client: openai.AsyncOpenAI,
        registry: Registry,
        tools: Callable[[], list[Tool]],
    ) -> None:
        self.config = config
        self.device = device
        self.client = client
        self.registry = registry
        self.tools = tools
        self.instructions_template = Instructions(config.instructions, device, registry)
        self.memory = Memory(config.history_turns, config.history_ttl_s, config.history_tokens)
        self.ask_usage = True  # until the endpoint refuses stream_options (Azure before 2024-08-01-preview)
        self._listing: tuple[Any, Listing] | None = None  # (what it was built from, the listing)

    def instructions(self) -> str:
        """The system prompt for a turn: what stays the same first, what changes last.

        Providers cache the longest prefix they saw before (the tools and then the
        messages). Your instructions and the entity table change only when you or the
        house do; the time comes after them. States are read with tools (as Home
        Assistant's GetLiveContext does), so each entity costs its id and area words
        only; `states_in_prompt` adds every state at the end when the table and the
        states fit in `listing_tokens`. Rendered once per turn.
        """
        try:
            text = self.instructions_template.render()
        except jinja2.TemplateError as error:
            log.error("agent.instructions failed to render (%s); using it unrendered", error)  # noqa: TRY400
            text = self.config.instructions
        parts = [text]
        states = ""
        if self.config.control_home_assistant:
            exposed = self.registry.exposed()
            house = self.listing(exposed)
            parts.append(house.text)
            if exposed:
                parts.append(READ_STATES_LISTED if self.config.states_in_prompt else READ_STATES)
            if self.config.states_in_prompt and house.complete:
                states = states_line(exposed)
                if estimate_tokens(house.text + states) > self.config.listing_tokens:
                    states = ""
        else:
            parts.append("You cannot control or read devices in the home; if asked to, say that you can't.")
        parts.append(f"The current time is {datetime.now().astimezone():%A %d %B %Y %H:%M}.")
        if states:
            parts.append(states)
        return "\n".join(parts)

    def listing(self, exposed: list[Entity]) -> Listing:
        """The entity listing, built again only when ids, names, areas, aliases or categories change."""
        key = [(e.entity_id, e.name, e.area, tuple(e.aliases), is_minor(e)) for e in exposed]
        if self._listing is None or self._listing[0] != key:
            self._listing = (key, listing(exposed, self.config.listing_tokens, CONTROLLABLE))
        return self._listing[1]

    def request_options(self) -> dict[str, Any]:
        """Model parameters that reach the wire: the recommended set, or only what the user set."""
        config = self.config
        if config.recommended:
            return {
                "model": RECOMMENDED_MODEL,
                "max_completion_tokens": RECOMMENDED_MAX_TOKENS,
                "reasoning_effort": RECOMMENDED_REASONING_EFFORT,
                **{key: getattr(config, key) for key in UNTUNED_KEYS if getattr(config, key) is not None},
            }
        options: dict[str, Any] = {"model": config.chat_model}
        for key, wire in (
            ("max_tokens", "max_completion_tokens"),
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
            ("stop", "stop"),
            ("logit_bias", "logit_bias"),
            ("reasoning_effort", "reasoning_effort"),
            ("verbosity", "verbosity"),
            ("seed", "seed"),
            *((key, key) for key in UNTUNED_KEYS),
        ):
            value = getattr(config, key)
            if value is not None:
                options[wire] = value
        if config.response_format is not None:
            options["response_format"] = {"type": config.response_format}
        return options

    async def respond(
        self,
        text: str,
        conversation_id: str | None = None,
        on_text: Callable[[str], None] | None = None,
        usage: Usage | None = None,
        actions: list[Action] | None = None,
    ) -> Reply:
        """Run one turn; `on_text` receives reply text as it streams in.

        Turns with the same `conversation_id` see the earlier ones (see Memory). Token
        usage is added to `usage` as each request ends and actions to `actions` as they
        are taken, so a caller still has both when a later request fails.
        """
        usage = Usage() if usage is None else usage
        actions = [] if actions is None else actions
        turn: list[dict[str, Any]] = [{"role": "user", "content": text}]
        history = self.memory.history(conversation_id)
        tools = self.tools() if self.config.control_home_assistant else []
        by_name = {tool.name: tool for tool in tools}
        specs = [t.spec() for t in tools]
        system = self.instructions()  # one per turn: every tool round repeats the same, cached, prefix
        for _ in range(self.config.max_tool_iterations):
            messages = [{"role": "system", "content": system}, *history, *turn]
            content, calls, finish = await self._complete(messages, specs, on_text, usage)
            cut = None if finish in COMPLETE_FINISH else CUT_CODES.get(finish)
            if cut is not None or not calls:
                if cut is not None:
                    log.warning("the answer was cut short (finish_reason %s): %s", finish, cut)
                    if calls:
                        log.warning("not running %d tool call(s) of a cut-short answer", len(calls))
                turn.append({"role": "assistant", "content": content})
                self.memory.remember(conversation_id, turn)
                return Reply(content.strip(), actions, usage, cut)
            turn.append(
                {
                    "role": "assistant",
                    "content": content or None,
                    "tool_calls": [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                        for c in calls
                    ],
                }
            )
            for call in calls:
                result = await self.run_tool(by_name, call, actions)
                turn.append({"role": "tool", "tool_call_id": call.id, "content": result})
        log.warning("tool loop reached its cap of %d iterations", self.config.max_tool_iterations)
        if on_text:
            on_text(LOOP_CAP_REPLY)
        return Reply(LOOP_CAP_REPLY, actions, usage)

    async def run_tool(self, by_name: dict[str, Tool], call: ToolCall, actions: list[Action]) -> str:
        """Run one call (also for the Realtime mode): its result for the model; what it did goes to `actions`."""
        name = call.name[:64]
        tool = by_name.get(call.name)
        if tool is None:
            actions.append(Action(name, None, None, None, False, "no such tool"))
            return json.dumps({"error": f"no tool named {name!r}"})
        try:
            args = json.loads(call.arguments or "{}")
        except (ValueError, RecursionError) as error:  # RecursionError: arguments nested thousands deep
            args = f"not JSON ({type(error).__name__}: {str(error)[:100]})"
        if not isinstance(args, dict):
            actions.append(Action(name, None, None, None, False, "invalid arguments"))
            got = args if isinstance(args, str) else f"a JSON {type(args).__name__}"  # no repr: it may be deep
            return json.dumps({"error": f"arguments must be a JSON object, got {got}"})
        outcome = await tool.run(args)
        actions.extend(outcome.actions)
        return outcome.content

    async def _create(
        self, messages: list[dict[str, Any]], extra: dict[str, Any]
    ) -> openai.AsyncStream[ChatCompletionChunk]:
        """Start a streamed completion, asking for usage unless the endpoint refused that once."""
        while True:
            usage: dict[str, Any] = {"stream_options": {"include_usage": True}} if self.ask_usage else {}
            try:
                stream: openai.AsyncStream[ChatCompletionChunk] = await self.client.chat.completions.create(  # type: ignore[assignment]
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                    **self.request_options(),
                    **extra,
                    **usage,
                )
            except openai.BadRequestError as error:
                if not usage or "stream_options" not in str(error):
                    raise
                log.warning("the chat endpoint refuses stream_options: replies will carry no usage (%s)", error)
                self.ask_usage = False
                continue
            return stream

    async def _complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        on_text: Callable[[str], None] | None,
        usage: Usage,
    ) -> tuple[str, list[ToolCall], str | None]:
        """One streamed request: its text, its tool calls and its finish_reason (None if never sent)."""
        usage.requests += 1
        stream = await self._create(messages, {"tools": tools} if tools else {})
        content = ""
        finish: str | None = None
        calls: dict[int, ToolCall] = {}
        async for chunk in stream:
            if chunk.usage is not None:
                usage.add(chunk.usage)
            if not chunk.choices:
                continue
            finish = chunk.choices[0].finish_reason or finish
            delta = chunk.choices[0].delta
            if delta.content:
                content += delta.content
                if on_text:
                    on_text(delta.content)
            for part in delta.tool_calls or []:
                call = calls.setdefault(part.index, ToolCall())
                call.id = part.id or call.id
                if part.function:
                    call.name += part.function.name or ""
                    call.arguments += part.function.arguments or ""
        return content, [calls[i] for i in sorted(calls)], finish
