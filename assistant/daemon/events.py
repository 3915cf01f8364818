"""Every outbound event, built and published in one place.

The daemon's parts never assemble `event/*` payloads themselves: they call one typed
method here, so what an event carries is written down once (see design.md for the
contract) and a new producer cannot drift from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from assistant.agent.conversation import Reply
from assistant.agent.tools import Action
from assistant.link.client import MqttLink

log = logging.getLogger(__name__)


class Events:
    """Publishes `<root>/event/*` and the wake word claims on `link`."""

    def __init__(self, link: MqttLink, claims_topic: str) -> None:
        self.link = link
        self.claims_topic = claims_topic

    def error(self, request_id: str | None, code: str, message: str, **extra: Any) -> None:
        """`event/error` (and a warning in the log): a request, or the device, ran into trouble.

        `extra`: fields of one code, e.g. `age_s` and `age_exact` of a `stale_request`.
        """
        log.warning("%s: %s", code, message)
        self.link.event("error", {"id": request_id, "code": code, "message": message, **extra})

    def wake(self, data: dict[str, Any]) -> None:
        """`event/wake`: listening started, and why."""
        self.link.event("wake", data)

    def transcript(self, request_id: str, text: str, conversation_id: str | None) -> None:
        """`event/transcript`: what a spoken request said (empty when nothing was heard)."""
        self.link.event("transcript", {"id": request_id, "text": text, "conversation_id": conversation_id})

    def reply(self, request_id: str, reply: Reply, conversation_id: str | None, request: str, **extra: str) -> None:
        """`event/action` for each action taken, then `event/reply` listing them all.

        `request` is what was asked, spoken or typed ("" when the words could not be made
        out): the "Last request" entity shows it, so a typed ask shows there too.

        An unconfirmed action is published again, with the same id and `"late": true`,
        once its fate is known (see assistant/link/delivery.py). `usage` is the tokens the API
        reported for the turn (zeros when no model was asked, null when the API reported
        none); `partial` is true for a cut-short answer.
        """
        for action in reply.actions:
            self.link.event("action", {"id": request_id, **action.as_dict()})
            if action.settled is not None:
                action.settled.add_done_callback(lambda fate: self.settled(request_id, fate))
        actions = [a.as_dict() for a in reply.actions]
        self.link.event(
            "reply",
            {
                "id": request_id,
                "request": request,
                "text": reply.text,
                "conversation_id": conversation_id,
                "actions": actions,
                "usage": reply.usage.as_dict(),
                "partial": reply.cut is not None,
                **extra,
            },
        )

    def settled(self, request_id: str, fate: asyncio.Future[Action]) -> None:
        """The final outcome of an action reported as unconfirmed."""
        if fate.cancelled():
            return
        final = fate.result()
        log.info("%s %s settled late: %s", final.tool, final.entity_id, final.outcome)
        self.link.event("action", {"id": request_id, **final.as_dict(), "late": True})

    def claim(self, claim: dict[str, Any]) -> None:
        """Tell the other devices on the broker how well we heard the wake word."""
        self.link.publish(self.claims_topic, json.dumps(claim), qos=0)
