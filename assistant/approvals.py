"""Consent for tools that act on a user's behalf: before such a call runs, the user who started
the turn is asked, and only their yes lets it run. No answer in time is a no.

The ask and its decision live in the store (`ApprovalStore`), not in this process: the click
may reach another replica than the one running the turn. The turn polls its row, and a click
handled here wakes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from assistant.store.approval_store import (
    APPROVED,
    DECLINED,
    EXPIRED,
    PENDING,
    UNASKED,
    ApprovalStore,
    Ask,
    Verdict,
)
from assistant.store.tables import utcnow
from assistant.turns import Actor, ApprovalAsked, ApprovalDecided

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how soon a click on another replica reaches the waiting turn


@dataclass(frozen=True, kw_only=True)
class Request:
    """A call that needs consent, as the turn knows it."""

    message_id: int
    call_id: str
    tool: str
    arguments: str


def refusal(decided: ApprovalDecided, *, timeout: float) -> str:
    """What the model reads instead of a result when the call did not run: plain enough that
    it tells the user the action was not done, rather than claiming it was."""
    why = {
        DECLINED: "the user declined it",
        EXPIRED: f"nobody approved it within {timeout:g} s",
        UNASKED: "it needs the user's approval and nobody could be asked here",
    }.get(decided.decision, f"it was not approved ({decided.decision})")
    return f"error: this action was not run: {why}. Tell the user it was not done."


class Approvals:
    def __init__(self, store: ApprovalStore, *, timeout: float) -> None:
        self._store = store
        self.timeout = timeout
        self._woken: dict[int, asyncio.Event] = {}
        self._deadlines: dict[int, float] = {}  # when each open ask of this process expires

    async def ask(
        self, request: Request, requester: Actor | None
    ) -> ApprovalAsked | ApprovalDecided:
        """Record the ask. With nobody to ask (`requester` None: an eval), it is decided at
        once as unasked."""
        ask = Ask(
            message_id=request.message_id,
            call_id=request.call_id,
            tool=request.tool,
            arguments=request.arguments,
            requester=requester.qualified_id if requester is not None else "",
            expires_at=utcnow() + timedelta(seconds=self.timeout),
        )
        if requester is None:
            approval_id = await self._store.ask(ask, status=UNASKED)
            return ApprovalDecided(
                approval_id=approval_id,
                call_id=request.call_id,
                tool=request.tool,
                decision=UNASKED,
            )
        approval_id = await self._store.ask(ask)
        self._woken[approval_id] = asyncio.Event()
        self._deadlines[approval_id] = asyncio.get_running_loop().time() + self.timeout
        return ApprovalAsked(
            approval_id=approval_id,
            call_id=request.call_id,
            tool=request.tool,
            arguments=request.arguments,
            requester=requester,
            timeout_s=self.timeout,
        )

    async def wait(self, asked: ApprovalAsked) -> ApprovalDecided:
        """The decision on `asked`, once made, or expired at its time (counted from the ask:
        a surface may take a while to show it)."""
        woken = self._woken.setdefault(asked.approval_id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = self._deadlines.get(asked.approval_id, loop.time() + asked.timeout_s)
        try:
            while True:
                status = await self._store.status(asked.approval_id)
                if status != PENDING:
                    row = await self._store.get(asked.approval_id)
                    decided_by = row.decided_by if row is not None else None
                    return ApprovalDecided(
                        approval_id=asked.approval_id,
                        call_id=asked.call_id,
                        tool=asked.tool,
                        decision=status,
                        decided_by=decided_by,
                    )
                left = deadline - loop.time()
                if left <= 0:
                    row = await self._store.expire(asked.approval_id)
                    return ApprovalDecided(
                        approval_id=asked.approval_id,
                        call_id=asked.call_id,
                        tool=asked.tool,
                        decision=row.status,
                        decided_by=row.decided_by,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(POLL_SECONDS, left))
                woken.clear()
        finally:
            self._woken.pop(asked.approval_id, None)
            self._deadlines.pop(asked.approval_id, None)

    async def close(self, approval_id: int) -> None:
        """The turn stopped before a decision: the ask is expired, so a late click is told it
        came too late (a decision that came first stands)."""
        self._woken.pop(approval_id, None)
        self._deadlines.pop(approval_id, None)
        await self._store.expire(approval_id)

    async def decide(self, approval_id: int, actor: Actor, *, approve: bool) -> Verdict:
        """`actor` pressed Approve or Decline. Only the requester's click on a pending ask
        counts; any other is answered with what the ask is now."""
        verdict = await self._store.decide(approval_id, actor.qualified_id, approve=approve)
        if verdict.applied:
            woken = self._woken.get(approval_id)
            if woken is not None:
                woken.set()
            log.info(
                "approval %s of %s: %s by %s",
                approval_id,
                verdict.tool,
                APPROVED if approve else DECLINED,
                actor.qualified_id,
            )
        elif verdict.status is not None:
            log.info(
                "approval %s of %s: a click by %s did not count (%s, asked of %s)",
                approval_id,
                verdict.tool,
                actor.qualified_id,
                verdict.status,
                verdict.requester,
            )
        return verdict
