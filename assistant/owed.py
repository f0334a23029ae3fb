"""The answers a serving process owes, and those it takes over from processes that stopped.

Every turn with a place to answer is owed from the moment its message is stored until the user
hears back. A process says it is alive every `beat_seconds`; after three missed beats (a kill, a
crash) or once it retires (a graceful stop), another process adopts its owed turns: one whose
answer is still fresh is answered again, an old one gets a notice that it was lost.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from assistant.records import OrphanedTurn
from assistant.store import Store
from assistant.store.tables import utcnow

MISSED_BEATS = 3


def new_worker_id() -> str:
    """A name for this process, unique across restarts and hosts, readable in the database."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OwedAnswers:
    def __init__(self, store: Store, *, worker_id: str, beat_seconds: float) -> None:
        self._store = store
        self.worker_id = worker_id
        self.beat_seconds = beat_seconds

    async def mark_shown(self, turn_id: int, shown: str) -> None:
        """What the platform now shows of the answer: a restart closes it if it is cut."""
        await self._store.open_turns.mark_shown(turn_id, shown)

    async def settle(self, turn_id: int) -> None:
        """The user has heard back (a notice, if not the answer): nothing is owed."""
        await self._store.open_turns.settle(turn_id)

    async def beat(self) -> None:
        await self._store.open_turns.heartbeat(self.worker_id)

    async def retire(self) -> None:
        """This process stops: its owed turns may be adopted at once."""
        await self._store.open_turns.retire(self.worker_id)

    async def orphans(self, surface: str) -> list[OrphanedTurn]:
        """Owed turns of `surface` whose process stopped or went silent."""
        silent_since = utcnow() - timedelta(seconds=self.beat_seconds * MISSED_BEATS)
        found = await self._store.open_turns.orphaned(surface, silent_since=silent_since)
        return [turn for turn in found if turn.owner != self.worker_id]

    async def adopt(self, orphan: OrphanedTurn) -> bool:
        """Take `orphan` over; False when another process took it first."""
        return await self._store.open_turns.adopt(
            orphan.message_id, previous=orphan.owner, owner=self.worker_id
        )
