"""What a chat user does besides asking (a 👍/👎 on an answer, an admin command), answered the
same way on every surface: one wording, and always an answer, since the platform was acked
before the work began and a silent click or command looks broken."""

from __future__ import annotations

import logging
from typing import Literal

from assistant.admin.commands import COMMAND_FAILED, AdminCommands, CommandResult
from assistant.admin.grammar import Command, CommandContext
from assistant.engine import Assistant
from assistant.turns import Actor

log = logging.getLogger(__name__)

VoteOutcome = Literal["recorded", "unknown answer", "failed"]


def feedback_acknowledgement(vote: int, outcome: VoteOutcome) -> str:
    """What the voter is told, privately."""
    if outcome == "recorded":
        return f"Thanks, your {'👍' if vote > 0 else '👎'} is recorded."
    if outcome == "unknown answer":
        return "That answer is no longer known, so the vote was not recorded."
    return "Sorry, the vote could not be recorded. Please try again."


async def record_vote(assistant: Assistant, message_id: int, actor: Actor, *, vote: int) -> str:
    """Store the vote on answer `message_id`; the acknowledgement for the voter."""
    try:
        recorded = await assistant.record_feedback(message_id, actor, vote=vote)
    except Exception:
        log.exception("a feedback vote could not be stored")
        return feedback_acknowledgement(vote, "failed")
    return feedback_acknowledgement(vote, "recorded" if recorded else "unknown answer")


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
