"""The conversation agent: a streamed chat completion with a capped tool loop.

Text deltas are handed out as they arrive (so speech can start early); tool calls are
run once their arguments are complete and their results go back to the model, errors
included, until it answers in words or the loop cap is reached.
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

from assistant.config import (
    RECOMMENDED_MAX_TOKENS,
    RECOMMENDED_MODEL,
    RECOMMENDED_REASONING_EFFORT,
    AgentConfig,
    DeviceConfig,
)
from assistant.homeassistant import Registry
from assistant.memory import Memory
from assistant.prompt import Instructions
from assistant.tools import Action, Tool

log = logging.getLogger(__name__)

LOOP_CAP_REPLY = "Sorry, I could not finish that."
UNTUNED_KEYS = ("user", "safety_identifier", "service_tier")  # sent whether or not `recommended` is on


@dataclass
class Reply:
    """The agent's answer to one turn."""

    text: str
    actions: list[Action] = field(default_factory=list)


@dataclass
class _ToolCall:
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

    def instructions(self) -> str:
        """Render the instructions with the live registry (rendered every turn)."""
        try:
            text = self.instructions_template.render()
        except jinja2.TemplateError as error:
            log.error("agent.instructions failed to render (%s); using it unrendered", error)  # noqa: TRY400
            text = self.config.instructions
        text += f"\nThe current time is {datetime.now().astimezone():%A %d %B %Y %H:%M}."
        if self.config.control_home_assistant:
            listing = json.dumps([e.summary() for e in self.registry.exposed()], ensure_ascii=False)
            text += f"\nEntities you can see and control (JSON): {listing}"
        else:
            text += "\nYou cannot control or read devices in the home; if asked to, say that you can't."
        return text

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
        self, text: str, conversation_id: str | None = None, on_text: Callable[[str], None] | None = None
    ) -> Reply:
        """Run one turn; `on_text` receives reply text as it streams in.

        Turns with the same `conversation_id` see the earlier ones (see Memory).
        """
        turn: list[dict[str, Any]] = [{"role": "user", "content": text}]
        history = self.memory.history(conversation_id)
        tools = self.tools() if self.config.control_home_assistant else []
        by_name = {tool.name: tool for tool in tools}
        actions: list[Action] = []
        for _ in range(self.config.max_tool_iterations):
            messages = [{"role": "system", "content": self.instructions()}, *history, *turn]
            content, calls = await self._complete(messages, [t.spec() for t in tools], on_text)
            if not calls:
                turn.append({"role": "assistant", "content": content})
                self.memory.remember(conversation_id, turn)
                return Reply(content.strip(), actions)
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
                result = await self._run_tool(by_name, call, actions)
                turn.append({"role": "tool", "tool_call_id": call.id, "content": result})
        log.warning("tool loop reached its cap of %d iterations", self.config.max_tool_iterations)
        if on_text:
            on_text(LOOP_CAP_REPLY)
        return Reply(LOOP_CAP_REPLY, actions)

    async def _run_tool(self, by_name: dict[str, Tool], call: _ToolCall, actions: list[Action]) -> str:
        tool = by_name.get(call.name)
        if tool is None:
            actions.append(Action(call.name, None, None, None, False, "no such tool"))
            return json.dumps({"error": f"no tool named {call.name!r}"})
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError as error:
            args = f"not JSON ({error})"
        if not isinstance(args, dict):
            actions.append(Action(call.name, None, None, None, False, "invalid arguments"))
            return json.dumps({"error": f"arguments must be a JSON object, got {args!r}"})
        outcome = await tool.call(args)
        actions.extend(outcome.actions)
        return outcome.content

    async def _complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], on_text: Callable[[str], None] | None
    ) -> tuple[str, list[_ToolCall]]:
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        stream: openai.AsyncStream[ChatCompletionChunk] = await self.client.chat.completions.create(  # type: ignore[assignment]
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            **self.request_options(),
            **extra,
        )
        content = ""
        calls: dict[int, _ToolCall] = {}
        async for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if delta.content:
                content += delta.content
                if on_text:
                    on_text(delta.content)
            for part in delta.tool_calls or []:
                call = calls.setdefault(part.index, _ToolCall())
                call.id = part.id or call.id
                if part.function:
                    call.name += part.function.name or ""
                    call.arguments += part.function.arguments or ""
        return content, [calls[i] for i in sorted(calls)]
