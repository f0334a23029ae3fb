"""Which prompt version answers where: scopes, bindings, A/B splits.

Values only; the store keeps them and `versions.VersionResolver` applies them on every turn.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Literal

from assistant.turns import ConversationRef

ScopeKind = Literal["global", "workspace", "channel"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("channel", "workspace", "global")  # most specific first


@dataclass(frozen=True, kw_only=True)
class Scope:
    """Where a binding applies: everywhere, one workspace (Slack team, Discord guild) or one
    channel."""

    kind: ScopeKind
    platform: str = ""
    workspace: str = ""
    channel: str = ""

    @classmethod
    def of(cls, kind: ScopeKind, ref: ConversationRef) -> Scope:
        if kind == "global":
            return cls(kind="global")
        if kind == "workspace":
            return cls(kind="workspace", platform=ref.platform, workspace=ref.workspace)
        return cls(kind=kind, platform=ref.platform, workspace=ref.workspace, channel=ref.channel)

    def describe(self) -> str:
        if self.kind == "global":
            return "global"
        place = "/".join(p for p in (self.platform, self.workspace, self.channel) if p)
        return f"{self.kind} {place}"


def scopes_for(ref: ConversationRef) -> list[Scope]:
    """The scopes that may bind a conversation, most specific first."""
    return [Scope.of(kind, ref) for kind in SCOPE_KINDS]


@dataclass(frozen=True, kw_only=True)
class Binding:
    """One prompt at one version, or at several versions split by weight."""

    prompt: str
    version: int | None = None
    split: tuple[tuple[int, int], ...] = ()  # (version, weight)

    def __post_init__(self) -> None:
        if (self.version is None) == (not self.split):
            raise ValueError("a binding has either a version or a split")

    @property
    def versions(self) -> list[int]:
        return [self.version] if self.version is not None else [v for v, _ in self.split]

    def describe(self) -> str:
        if self.version is not None:
            return f"{self.prompt}@{self.version}"
        weights = " ".join(f"{v}={w}" for v, w in self.split)
        return f"{self.prompt} split {weights}"

    def draw(self, rng: random.Random) -> int:
        """A version for a new conversation, chosen with the split's weights."""
        if self.version is not None:
            return self.version
        versions = [v for v, _ in self.split]
        chosen: int = rng.choices(versions, weights=[w for _, w in self.split])[0]
        return chosen

    def to_json(self) -> str:
        return json.dumps({"prompt": self.prompt, "version": self.version, "split": self.split})

    @classmethod
    def from_json(cls, text: str | None) -> Binding | None:
        if text is None:
            return None
        data = json.loads(text)
        split = tuple((int(v), int(w)) for v, w in data.get("split") or ())
        return cls(prompt=data["prompt"], version=data.get("version"), split=split)
