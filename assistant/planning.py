"""Where a turn belongs and which prompt version answers it: the conversation, the version (a
binding, an A/B split, or one pinned by an eval), the version's stored row and its model's
tokenizer, each cached for the process's life."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from assistant.memory import Speaker
from assistant.prompts.files import PromptFile, PromptVersion
from assistant.prompts.versions import VersionResolver
from assistant.store import Store
from assistant.store.tables import PromptVersionRow
from assistant.tokens import TokenCounter
from assistant.turns import Inbound


class TurnRefused(Exception):
    """A turn we will not answer; the message tells the user what to change."""


@dataclass(frozen=True, kw_only=True)
class TurnSetup:
    """What resolution decided for one turn: where it belongs and which version answers."""

    inbound: Inbound
    prompt: PromptFile
    conversation_id: int
    prompt_version_id: int | None
    speaker: Speaker
    started: float = field(default_factory=time.perf_counter)

    @property
    def version(self) -> PromptVersion:
        return self.prompt.version

    @property
    def model(self) -> str:
        return self.speaker.model

    @property
    def counter(self) -> TokenCounter:
        return self.speaker.counter


class TurnPlanner:
    """Plans turns; remembers the stored ids of versions and one tokenizer per model."""

    def __init__(
        self,
        store: Store,
        versions: VersionResolver,
        *,
        default_model: str,
        only_model: str | None = None,
    ) -> None:
        self._store = store
        self.versions = versions
        self._default_model = default_model
        self._only_model = only_model
        self._prompt_rows: dict[str, int] = {}
        self._counters: dict[str, TokenCounter] = {}

    async def sync_prompts(self) -> None:
        """Store every loaded version (refusing edited released files) and remember their ids."""
        for prompt in self.versions.catalog.files:
            row = await self._store.prompts.save_version(
                PromptVersionRow(
                    name=prompt.version.name,
                    version=prompt.version.version,
                    content_hash=prompt.content_hash,
                    source_file=str(prompt.path),
                    body=prompt.text,
                )
            )
            assert row.id is not None
            self._prompt_rows[prompt.version.label] = row.id
            # load the tokenizer now: loading it takes ~0.5 s, which the first turn must not
            self._counter(self._model_of(prompt))

    async def plan(self, inbound: Inbound) -> TurnSetup:
        """Where `inbound` belongs and which version answers it."""
        conversation_id = await self._store.conversation_id(inbound.ref)
        prompt = await self._prompt_for(inbound, conversation_id)
        model = self._model_of(prompt)
        return TurnSetup(
            inbound=inbound,
            prompt=prompt,
            conversation_id=conversation_id,
            prompt_version_id=await self._prompt_row_id(prompt),
            speaker=Speaker(
                version=prompt.version,
                actor=inbound.actor,
                model=model,
                fallbacks=() if self._only_model else prompt.version.fallback_models,
                counter=self._counter(model),
            ),
        )

    def _model_of(self, prompt: PromptFile) -> str:
        return self._only_model or prompt.version.model or self._default_model

    async def _prompt_for(self, inbound: Inbound, conversation_id: int) -> PromptFile:
        if inbound.pinned_version is None:
            return await self.versions.resolve(inbound.ref, conversation_id)
        name, number = inbound.pinned_version
        pinned = await self.versions.version(name, number)
        if pinned is None:
            raise TurnRefused(f"There is no prompt version {name}@{number}.")
        return pinned

    async def _prompt_row_id(self, prompt: PromptFile) -> int | None:
        label = prompt.version.label
        if label not in self._prompt_rows:  # a version this process learnt from the store
            row = await self._store.prompts.version(prompt.version.name, prompt.version.version)
            if row is None or row.id is None:
                return None
            self._prompt_rows[label] = row.id
        return self._prompt_rows[label]

    def _counter(self, model: str) -> TokenCounter:
        if model not in self._counters:
            self._counters[model] = TokenCounter(model)
        return self._counters[model]
