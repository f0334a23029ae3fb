"""`/assistant` on Discord: each slash command's typed options become the grammar's typed
command directly (nothing is turned back into words to be parsed again), run by the same
`AdminCommands.execute` as on every surface. Answers are seen only by whoever asked."""

from __future__ import annotations

import discord
from discord import app_commands

from assistant.admin.commands import AdminCommands
from assistant.admin.grammar import (
    Command,
    CommandContext,
    DiffPrompt,
    ListPrompts,
    PromptHistory,
    ReportPeriod,
    RollbackPrompt,
    RunEvals,
    ShowPrompt,
    ShowReport,
    SplitPrompt,
    UsageError,
    UsePrompt,
    Where,
    parse_split,
)
from assistant.prompts.bindings import ScopeKind
from assistant.turns import Actor, ConversationRef
from bots.chat_actions import run_admin
from bots.discord_reply import MESSAGE_LIMIT
from bots.render import split_message

_MOST_CHOICES = 25  # what Discord shows of an autocomplete list


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

    def __init__(self, admin: AdminCommands) -> None:
        super().__init__()
        self._admin = admin

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
    ) -> None:
        try:
            weights = parse_split(split.split())
        except UsageError as exc:
            await interaction.response.send_message(f"{exc}.", ephemeral=True)
            return
        command = SplitPrompt(name=name, weights=weights, where=Where(scope=scope))
        await self._answer(interaction, command)

    @prompt.command(name="history", description="Who changed what, when")
    async def history(self, interaction: discord.Interaction, name: str) -> None:
        await self._answer(interaction, PromptHistory(name=name))

    async def _answer(self, interaction: discord.Interaction, command: Command) -> None:
        """Defer first (Discord waits 3 s at most), then answer in as many messages as the
        text needs, its code blocks kept whole."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        result = await run_admin(self._admin, command, _command_context(interaction))
        for piece in split_message(result.text, MESSAGE_LIMIT):
            await interaction.followup.send(piece, ephemeral=True)

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
        return [
            app_commands.Choice(name=name, value=name)
            for name in names
            if current.lower() in name.lower()
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
