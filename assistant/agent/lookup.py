"""The entity a tool call names, checked against `expose`, and a refusal that helps.

No tool schema lists the entities (that grew with the house), so the model may name an
id that does not exist ("light.kitchn") or one it may not use. Such a call is refused,
and the model is told the closest exposed ids that tool can act on, so it can choose
again in the same turn; an unexposed id is never named. `event/action` keeps the short
refusal: the hint is for the model only.
"""

from __future__ import annotations

import difflib

from assistant.home.entities import CommandError, Entity
from assistant.home.registry import Registry

SUGGESTIONS = 5  # exposed ids named when the model asks for one that is not


class NotExposed(CommandError):
    """An id that is not an exposed entity; `hint` tells the model which ids it may use."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def valid_ids_hint(wanted: str, valid: list[str]) -> str:
    """What to say about the ids a tool takes when `wanted` is not one: the closest, else a few."""
    close = difflib.get_close_matches(wanted, valid, n=SUGGESTIONS, cutoff=0.6)
    if close:
        hint = f"the closest exposed: {', '.join(close)}"
    elif valid:
        more = f" and {len(valid) - SUGGESTIONS} more" if len(valid) > SUGGESTIONS else ""
        hint = f"exposed ones include {', '.join(valid[:SUGGESTIONS])}{more}"
    else:
        return "none of the exposed entities can do that"
    return f"{hint} (use an id from the list, or find_entities)"


def exposed_entity(registry: Registry, entity_id: str, domains: set[str] | None = None) -> Entity:
    """The exposed entity `entity_id`, else NotExposed naming exposed ids (in `domains`, if given)."""
    try:
        return registry.get_exposed(entity_id)
    except CommandError as error:
        valid = [e.entity_id for e in registry.exposed() if domains is None or e.domain in domains]
        raise NotExposed(str(error), valid_ids_hint(entity_id, valid)) from None


def for_model(error: CommandError) -> str:
    """A refusal as the model reads it: with the valid ids when the id was the problem."""
    return f"{error}; {error.hint}" if isinstance(error, NotExposed) else str(error)
