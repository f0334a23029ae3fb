"""Which prompt version answers a conversation, decided afresh on every turn.

The most specific binding wins (channel, then workspace, then global); with none, the default
prompt at its highest version. An A/B split draws a version once per conversation and keeps it.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from assistant.prompts.bindings import Binding
from assistant.prompts.files import PromptCatalog, PromptFile, PromptFileError, parse_prompt
from assistant.store import PromptStore
from assistant.turns import ConversationRef

log = logging.getLogger(__name__)


class VersionResolver:
    def __init__(
        self, catalog: PromptCatalog, store: PromptStore, *, rng: random.Random | None = None
    ) -> None:
        self.catalog = catalog
        self._store = store
        self._rng = rng or random.Random()  # noqa: S311 (traffic splitting, not secrets)

    async def resolve(self, ref: ConversationRef, conversation_id: int) -> PromptFile:
        bindings = await self._store.bindings_for(ref)
        if not bindings:
            return self.catalog.latest(self.catalog.default_name)
        _, binding = bindings[0]
        version = await self._version_for(binding, conversation_id)
        found = await self.version(binding.prompt, version)
        if found is None:
            log.error("binding %s names a version that does not exist", binding.describe())
            return self.catalog.latest(self.catalog.default_name)
        return found

    async def _version_for(self, binding: Binding, conversation_id: int) -> int:
        if binding.version is not None:
            return binding.version
        assigned = await self._store.assignment(conversation_id, binding.prompt)
        if assigned in binding.versions:
            return assigned
        return await self._store.assign(conversation_id, binding.prompt, binding.draw(self._rng))

    async def version(self, name: str, version: int) -> PromptFile | None:
        """From memory, else from the store (a version released by another replica, or whose
        file was deleted: history is never lost)."""
        found = self.catalog.find(name, version)
        if found is not None:
            return found
        row = await self._store.version(name, version)
        if row is None:
            return None
        try:
            prompt_file = parse_prompt(row.body, Path(row.source_file))
        except PromptFileError:
            log.exception("stored version %s@%s no longer parses", name, version)
            return None
        self.catalog.add(prompt_file)
        return prompt_file
