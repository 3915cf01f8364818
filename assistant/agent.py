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

from assistant.config import AgentConfig, ConfigError, DeviceConfig
from assistant.homeassistant import Registry
from assistant.tools import Action, Tool

log = logging.getLogger(__name__)

LOOP_CAP_REPLY = "Sorry, I could not finish that."


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


def compile_instructions(source: str) -> jinja2.Template:
    """Compile the instructions template; a syntax error is a config error."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise ConfigError([f"agent.instructions: template error on line {error.lineno}: {error.message}"]) from None


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
        self.template = compile_instructions(config.instructions)

    def instructions(self) -> str:
        """Render the instructions with the live registry (rendered every turn)."""

        def states(entity_id: str) -> str:
            entity = self.registry.entities.get(entity_id)
            return entity.state or "unknown" if entity and self.registry.is_exposed(entity_id) else "unknown"

        try:
            text = self.template.render(
                device=self.device,
                now=datetime.now().astimezone,
                states=states,
                is_state=lambda entity_id, value: states(entity_id) == value,
                entities=[e.summary() for e in self.registry.exposed()],
            )
        except jinja2.TemplateError as error:
            log.error("agent.instructions failed to render (%s); using it unrendered", error)  # noqa: TRY400
            text = self.config.instructions
        if self.config.control_home_assistant:
            listing = json.dumps([e.summary() for e in self.registry.exposed()], ensure_ascii=False)
            text += f"\nThe current time is {datetime.now().astimezone():%A %d %B %Y %H:%M}."
            text += f"\nEntities you can see and control (JSON): {listing}"
        else:
            text += "\nYou cannot control or read devices in the home; say so if asked to."
        return text

    def request_options(self) -> dict[str, Any]:
        """Model parameters that reach the wire, only those the user set."""
        options: dict[str, Any] = {"model": self.config.model}
        if self.config.max_tokens is not None:
            options["max_completion_tokens"] = self.config.max_tokens
        if self.config.temperature is not None:
            options["temperature"] = self.config.temperature
        if self.config.top_p is not None:
            options["top_p"] = self.config.top_p
        return options

    async def respond(self, text: str, on_text: Callable[[str], None] | None = None) -> Reply:
        """Run one turn; `on_text` receives reply text as it streams in."""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.instructions()},
            {"role": "user", "content": text},
        ]
        tools = self.tools() if self.config.control_home_assistant else []
        by_name = {tool.name: tool for tool in tools}
        actions: list[Action] = []
        for _ in range(self.config.max_tool_iterations):
            content, calls = await self._complete(messages, [t.spec() for t in tools], on_text)
            if not calls:
                return Reply(content.strip(), actions)
            messages.append(
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
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
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
