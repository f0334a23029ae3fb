"""`/assistant` on Discord: each slash command's typed options become the grammar's typed
command directly (nothing is turned back into words to be parsed again), run by the same
`AdminCommands.execute` as on every surface. Answers are seen only by whoever asked.

An interaction that names no user or channel, or whose options discord.py cannot read as the
command's types, is refused with one quiet log line, never a traceback: it is odd input, not
a fault of ours."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from assistant.admin.commands import AdminCommands
from assistant.admin.grammar import (
    Command,
    CommandContext,
    DiffPrompt,
    DropKnowledge,
    ListKnowledge,
    ListPrompts,
    PromptHistory,
    ReportPeriod,
    RollbackPrompt,
    RunEvals,
    SearchKnowledge,
    SetBudget,
    ShowBudgets,
    ShowPrompt,
    ShowReport,
    SplitPrompt,
    UsageError,
    UseKnowledge,
    UsePrompt,
    Where,
    parse_split,
)
from assistant.budgets import BudgetPeriod
from assistant.prompts.bindings import ScopeKind
from assistant.turns import Actor, ConversationRef
from bots.chat_actions import QuietWarnings, run_admin
from bots.discord_reply import MESSAGE_LIMIT
from bots.render import split_message

log = logging.getLogger(__name__)

_MOST_CHOICES = 25  # what Discord shows of an autocomplete list
UNREADABLE_COMMAND = (
    "That command could not be read, so it did nothing. Please pick it again from the / menu."
)


class GuardedTree(app_commands.CommandTree):
    """The command tree, refusing what it cannot read with one quiet line per kind."""

    def __init__(self, client: discord.Client, *, warnings: QuietWarnings) -> None:
        super().__init__(client)
        self._warnings = warnings

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Who asks, and where, are needed to run anything (and to authorize it)."""
        user_known = isinstance(interaction.user, discord.User | discord.Member)
        if user_known and interaction.channel_id is not None:
            return True
        self._warnings.warn("an unreadable Discord command was dropped", "no user or channel")
        return False

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        """Our own code failing is a bug, logged with its traceback; anything else is input
        discord.py could not read (an unknown command, an option of the wrong type)."""
        if isinstance(error, app_commands.CommandInvokeError):
            log.error("an /assistant command failed", exc_info=error.original)
            return
        if not isinstance(error, app_commands.CheckFailure):  # a failed check said why
            self._warnings.warn("an unreadable Discord command was refused", f"{error}")
        await _tell(interaction, UNREADABLE_COMMAND, self._warnings)


_OPTION_TYPES: dict[discord.AppCommandOptionType, type | tuple[type, ...]] = {
    discord.AppCommandOptionType.string: str,
    discord.AppCommandOptionType.integer: int,
    discord.AppCommandOptionType.boolean: bool,
    discord.AppCommandOptionType.number: (int, float),
}


def _has_type(value: object, option_type: discord.AppCommandOptionType) -> bool:
    """Whether `value` is of the option's type (a bool is no integer here)."""
    expected = _OPTION_TYPES.get(option_type)
    if expected is None:
        return True  # users, channels, ...: discord.py resolves those itself
    if isinstance(value, bool) and option_type is not discord.AppCommandOptionType.boolean:
        return False
    return isinstance(value, expected)


async def _tell(interaction: discord.Interaction, text: str, warnings: QuietWarnings) -> None:
    """Answer whoever asked, privately, however far the interaction got."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:  # the interaction expired meanwhile
        warnings.warn("a Discord command could not be answered", f"{exc.status} {exc.text}")


def _command_context(interaction: discord.Interaction) -> CommandContext:
    """Who asks, and where: a thread's commands act on its channel (bindings are per channel);
    a DM has no server, so its workspace is empty."""
    channel = interaction.channel
    channel_id = (
        channel.parent_id
        if isinstance(channel, discord.Thread) and channel.parent_id
        else interaction.channel_id
    )
    return CommandContext(
        actor=Actor(
            platform="discord",
            user_id=str(interaction.user.id),
            display_name=interaction.user.display_name,
        ),
        surface="discord",
        ref=ConversationRef(
            platform="discord",
            workspace=str(interaction.guild_id or ""),
            channel=str(channel_id or ""),
        ),
    )


class AssistantCommands(app_commands.Group, name="assistant", description="The team assistant"):
    """The command group; its subcommands only translate options into commands."""

    prompt = app_commands.Group(name="prompt", description="Prompt versions: list, show, switch")
    evals = app_commands.Group(name="eval", description="Prompt evals")
    knowledge = app_commands.Group(name="knowledge", description="The team's documents")
    budget = app_commands.Group(name="budget", description="Spending limits")

    def __init__(self, admin: AdminCommands, *, warnings: QuietWarnings) -> None:
        super().__init__()
        self._admin = admin
        self._warnings = warnings

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Every option has the type the command declares: discord.py passes a value on as
        Discord sent it, and our commands would read "one" where they expect 1. Refused here,
        the tree's `on_error` tells the user."""
        if interaction.type is discord.InteractionType.autocomplete:
            return True  # what is typed so far is text, whatever the option's type
        command = interaction.command
        if not isinstance(command, app_commands.Command):
            return True
        for parameter in command.parameters:
            name = parameter.display_name
            value = getattr(interaction.namespace, name, None)
            if value is not None and not _has_type(value, parameter.type):
                kind = type(value).__name__
                self._warnings.warn("a Discord option of the wrong type", f"{name} is a {kind}")
                return False
        return True

    @app_commands.command(name="report", description="Cost, latency and quality over a period")
    async def report(self, interaction: discord.Interaction, period: ReportPeriod = "24h") -> None:
        await self._answer(interaction, ShowReport(period=period))

    @evals.command(name="run", description="Run eval suites (admins)")
    async def eval_run(
        self, interaction: discord.Interaction, name: str | None = None, version: int | None = None
    ) -> None:
        await self._answer(interaction, RunEvals(name=name, version=version if name else None))

    @prompt.command(name="list", description="Prompts, versions and where each is bound")
    async def list_(self, interaction: discord.Interaction) -> None:
        await self._answer(interaction, ListPrompts())

    @prompt.command(name="show", description="A version's text and figures")
    async def show(
        self, interaction: discord.Interaction, name: str, version: int | None = None
    ) -> None:
        await self._answer(interaction, ShowPrompt(name=name, version=version))

    @prompt.command(name="diff", description="What changed between two versions")
    async def diff(self, interaction: discord.Interaction, name: str, v1: int, v2: int) -> None:
        await self._answer(interaction, DiffPrompt(name=name, old=v1, new=v2))

    @prompt.command(name="use", description="Answer with this version here (admins)")
    async def use(
        self,
        interaction: discord.Interaction,
        name: str,
        version: int,
        scope: ScopeKind | None = None,
        force: bool = False,
    ) -> None:
        command = UsePrompt(name=name, version=version, where=Where(scope=scope), force=force)
        await self._answer(interaction, command)

    @prompt.command(name="rollback", description="Undo the last change here (admins)")
    async def rollback(
        self, interaction: discord.Interaction, name: str, scope: ScopeKind | None = None
    ) -> None:
        await self._answer(interaction, RollbackPrompt(name=name, where=Where(scope=scope)))

    @prompt.command(name="ab", description="Split conversations between versions (admins)")
    @app_commands.describe(split="versions and weights, e.g. 2=90 3=10")
    async def ab(
        self,
        interaction: discord.Interaction,
        name: str,
        split: str,
        scope: ScopeKind | None = None,
        force: bool = False,
    ) -> None:
        try:
            weights = parse_split(split.split())
        except UsageError as exc:
            await interaction.response.send_message(f"{exc}.", ephemeral=True)
            return
        command = SplitPrompt(name=name, weights=weights, where=Where(scope=scope), force=force)
        await self._answer(interaction, command)

    @prompt.command(name="history", description="Who changed what, when")
    async def history(self, interaction: discord.Interaction, name: str) -> None:
        await self._answer(interaction, PromptHistory(name=name))

    @knowledge.command(name="list", description="Collections, and where each is searched")
    async def knowledge_list(self, interaction: discord.Interaction) -> None:
        await self._answer(interaction, ListKnowledge())

    @knowledge.command(name="search", description="Search what this channel may read")
    async def knowledge_search(self, interaction: discord.Interaction, query: str) -> None:
        await self._answer(interaction, SearchKnowledge(query=query))

    @knowledge.command(name="use", description="Let this place search a collection (admins)")
    async def knowledge_use(
        self, interaction: discord.Interaction, name: str, scope: ScopeKind | None = None
    ) -> None:
        await self._answer(interaction, UseKnowledge(name=name, where=Where(scope=scope)))

    @knowledge.command(name="drop", description="Stop searching a collection here (admins)")
    async def knowledge_drop(
        self, interaction: discord.Interaction, name: str, scope: ScopeKind | None = None
    ) -> None:
        await self._answer(interaction, DropKnowledge(name=name, where=Where(scope=scope)))

    @budget.command(name="show", description="The budgets that apply here, and what is spent")
    async def budget_show(self, interaction: discord.Interaction) -> None:
        await self._answer(interaction, ShowBudgets())

    @budget.command(name="set", description="Set a spending limit here (admins)")
    async def budget_set(
        self,
        interaction: discord.Interaction,
        usd: float,
        scope: ScopeKind | None = None,
        period: BudgetPeriod = "day",
    ) -> None:
        await self._answer(interaction, SetBudget(usd=usd, where=Where(scope=scope), period=period))

    async def _answer(self, interaction: discord.Interaction, command: Command) -> None:
        """Defer first (Discord waits 3 s at most), then answer in as many messages as the
        text needs, its code blocks kept whole."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            result = await run_admin(self._admin, command, _command_context(interaction))
            for piece in split_message(result.text, MESSAGE_LIMIT):
                await interaction.followup.send(piece, ephemeral=True)
        except discord.HTTPException as exc:  # the interaction expired, or was answered
            self._warnings.warn(
                "a Discord command could not be answered", f"{exc.status} {exc.text}"
            )

    @show.autocomplete("name")
    @diff.autocomplete("name")
    @use.autocomplete("name")
    @rollback.autocomplete("name")
    @ab.autocomplete("name")
    @history.autocomplete("name")
    @eval_run.autocomplete("name")
    async def _complete_name(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = await self._admin.released()
        typed = str(current).lower()  # as Discord sent it: text, or not
        return [
            app_commands.Choice(name=name, value=name) for name in names if typed in name.lower()
        ][:_MOST_CHOICES]

    @show.autocomplete("version")
    @use.autocomplete("version")
    @diff.autocomplete("v1")
    @diff.autocomplete("v2")
    @eval_run.autocomplete("version")
    async def _complete_version(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[int]]:
        """The versions of the prompt named so far, newest first."""
        released = await self._admin.released()
        name = getattr(interaction.namespace, "name", None)
        versions = released.get(name, []) if isinstance(name, str) else []
        return [
            app_commands.Choice(name=f"{name} v{v}", value=v)
            for v in reversed(versions)
            if str(v).startswith(str(current))
        ][:_MOST_CHOICES]
