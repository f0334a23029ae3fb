"""What a chat user does besides asking (a 👍/👎 on an answer, an admin command), answered the
same way on every surface: one wording, and always an answer, since the platform was acked
before the work began and a silent click or command looks broken. Also how every surface
logs client input it refuses: one quiet line per kind, never a traceback."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from assistant.admin.commands import COMMAND_FAILED, AdminCommands, CommandResult
from assistant.admin.grammar import Command, CommandContext, ascii_number
from assistant.store.tables import LARGEST_ID
from assistant.turns import Actor, ApprovalAsked, ApprovalDecided, ConversationRef

if TYPE_CHECKING:  # the engine (and the model client it imports) load when the chat needs it
    from assistant.engine import Assistant

log = logging.getLogger(__name__)

VoteOutcome = Literal["recorded", "unknown answer", "elsewhere", "failed"]


class QuietWarnings:
    """At most one warning line per kind of refused input every `every` seconds, counting the
    ones left out. Input from outside is not our fault: it must neither flood the logs nor look
    like a bug (no traceback), and a flood of it must still be visible."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._every = every
        self._clock = clock
        self._last: dict[str, float] = {}  # kinds are our own fixed words: a bounded dict
        self._left_out: dict[str, int] = {}

    def warn(self, kind: str, detail: str) -> None:
        """Log `kind: detail` unless this kind was logged less than `every` seconds ago."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._every:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        more = f" ({left_out} more since the last such warning)" if left_out else ""
        self._log.warning("%s: %s%s", kind, detail, more)


def answer_id(text: str) -> int | None:
    """The answer id a button carries, or None when it is not one (a forged or odd value; an
    id past the store's, which Postgres would refuse rather than find nothing)."""
    return ascii_number(text, low=1, high=LARGEST_ID)


def feedback_acknowledgement(vote: int, outcome: VoteOutcome) -> str:
    """What the voter is told, privately."""
    if outcome == "recorded":
        return f"Thanks, your {'👍' if vote > 0 else '👎'} is recorded."
    if outcome == "unknown answer":
        return "That answer is no longer known, so the vote was not recorded."
    if outcome == "elsewhere":
        return "Votes are taken only where the answer was given, so this one was not recorded."
    return "Sorry, the vote could not be recorded. Please try again."


async def record_vote(
    assistant: Assistant, answer: str, actor: Actor, *, vote: int, clicked_in: str | None
) -> str:
    """Store the vote on the answer whose id is `answer`; the acknowledgement for the voter.

    The vote counts only when the button was clicked in the answer's own conversation
    (`clicked_in`: the channel, or Discord thread, of the message the button is on). Answer ids
    are small numbers anyone can guess, so without this anyone who can click a button anywhere
    could vote on every answer."""
    message_id = answer_id(answer)
    if message_id is None:
        return feedback_acknowledgement(vote, "unknown answer")
    try:
        place = await assistant.answer_conversation(message_id)
        if place is None:
            return feedback_acknowledgement(vote, "unknown answer")
        if not _same_place(place, actor, clicked_in):
            return feedback_acknowledgement(vote, "elsewhere")
        recorded = await assistant.record_feedback(message_id, actor, vote=vote)
    except Exception:
        log.exception("a feedback vote could not be stored")
        return feedback_acknowledgement(vote, "failed")
    return feedback_acknowledgement(vote, "recorded" if recorded else "unknown answer")


def _same_place(place: ConversationRef, actor: Actor, clicked_in: str | None) -> bool:
    """Whether a button clicked in `clicked_in` is in the conversation at `place`."""
    if not clicked_in or place.platform != actor.platform:
        return False
    return clicked_in in (place.channel, place.thread)


async def run_admin(
    commands: AdminCommands, command: Command | str, context: CommandContext
) -> CommandResult:
    """Run an admin command, typed (Discord's options) or as text (Slack, the shell)."""
    try:
        if isinstance(command, str):
            return await commands.run(command, context)
        return await commands.execute(command, context)
    except Exception:  # execute answers its own failures; this is the last safety net
        log.exception("an admin command failed")
        return CommandResult(ok=False, text=COMMAND_FAILED)


APPROVE = "approve"
DECLINE = "decline"
_CUT = "\n… (cut)"


def approval_request(
    asked: ApprovalAsked, requester: str, *, limit: int, escape: Callable[[str], str] = str
) -> str:
    """The ask, within `limit` characters: what would run, with what, and who may say yes
    (`requester`, as the platform mentions them). The arguments are the model's words: their
    backticks become look-alikes, so nothing in them can close the code block and speak in
    the ask's own voice, and `escape` makes them inert in the platform's markup (a Slack
    `<!channel>` in them must not ping anyone)."""
    try:
        shown = json.dumps(json.loads(asked.arguments or "{}"), indent=2, ensure_ascii=False)
    except ValueError:
        shown = asked.arguments
    shown = escape(shown.replace("`", "\u02cb"))  # a modifier letter: never a fence
    head = f"🔐 The assistant wants to run {_code(asked.tool)} for {requester}, with:\n```\n"
    tail = (
        f"\n```\nOnly {requester} can approve it. "
        f"No answer within {_duration(asked.timeout_s)} means no."
    )
    room = limit - len(head) - len(tail)
    if len(shown) > room:
        kept = shown[: max(room - len(_CUT), 0)]
        entity = kept.rfind("&")  # an escape cut in half would show as garbage
        if entity != -1 and ";" not in kept[entity:]:
            kept = kept[:entity]
        shown = kept + _CUT
    return head + shown + tail


def approval_outcome(decided: ApprovalDecided, decider: str | None) -> str:
    """How an ask ended, in place of its buttons (`decider`: who decided, as mentioned)."""
    by = f" by {decider}" if decider else ""
    tool = _code(decided.tool)
    if decided.decision == "approved":
        return f"✅ Approved{by}: running {tool}."
    if decided.decision == "declined":
        return f"❌ Declined{by}: {tool} was not run."
    return f"⌛ No answer in time: {tool} was not run."


def _code(name: str) -> str:
    return "`" + name.replace("`", "") + "`"


def _duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} seconds"


async def record_approval(assistant: Assistant, value: str, actor: Actor, *, approve: bool) -> str:
    """`actor` pressed Approve or Decline on the ask whose id is `value`; what they are told,
    privately. The ask's own message is updated by the turn waiting on it, on whichever
    replica it runs."""
    approval_id = answer_id(value)
    if approval_id is None:
        return "That request is no longer known."
    try:
        verdict = await assistant.decide(approval_id, actor, approve=approve)
    except Exception:
        log.exception("could not record a decision on a tool's request")
        return "Sorry, your answer could not be recorded. Please try again."
    if verdict.applied:
        return "Approved: it runs now." if approve else "Declined: it will not run."
    if verdict.status is None:
        return "That request is no longer known."
    if verdict.requester != actor.qualified_id:
        return "Only the person who asked the assistant can answer this request."
    if verdict.status == "expired":
        return "Too late: the request timed out, and the action was not run."
    return f"This request was already {verdict.status}."
