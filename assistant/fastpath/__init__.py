"""The local fast path: common home commands recognised offline, without the chat model.

hassil matches an utterance against Home Assistant's own sentence templates for the
device's language (the home-assistant-intents package), with the ``{name}``, ``{area}``
and ``{floor}`` slots filled from the registry's exposed entities, their aliases, areas and floors.
A recognised intent becomes the tool calls the chat agent would have made (see
`assistant.agent.tools`), plus a short spoken confirmation. Anything that is not clearly one
supported command on exposed entities gives None, and the daemon asks the chat agent.

Only the intents listed in SUPPORTED_INTENTS are loaded (recognising over all of a
language's intents is several times slower), their templates are parsed once per
language, and the slot lists are rebuilt only when `Registry.version` changes.

Modules: `language` (loading one language's sentences), `index` (slot lists from the
registry), `mapping` (intents to tool calls), `phrases` (spoken confirmations) and
`matcher` (`FastPath`: recognition and ranking).
"""

from assistant.fastpath.language import resolve_language
from assistant.fastpath.matcher import FastMatch, FastPath

__all__ = ["FastMatch", "FastPath", "resolve_language"]
