"""Running admin commands: who may, doing it, and the audit log.

Reading is open to everyone; changing is for ADMIN_USERS (and the shell, whose user already
holds the database). A change and its audit row are written in one transaction. Every surface
comes through `execute` with a typed command (text surfaces through `run`, which parses first),
so a rule holds on every surface alike. The model can never reach this module: it is not a tool.
"""

from __future__ import annotations

import difflib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from assistant.admin.gate import EvalGate
from assistant.admin.grammar import (
    CHANGES,
    USAGE,
    Command,
    CommandContext,
    CommandError,
    DiffPrompt,
    DropKnowledge,
    ListKnowledge,
    ListPrompts,
    PromptHistory,
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
    check_numbers,
    check_place,
    parse,
)
from assistant.budgets import Budgets
from assistant.evals.retrieval import describe, latest
from assistant.evals.suite import EvalSuite
from assistant.knowledge.service import Knowledge, source_of
from assistant.prompts.bindings import Binding, Scope, ScopeKind
from assistant.prompts.versions import VersionResolver
from assistant.records import CallRecord
from assistant.store import PromptStore
from assistant.store.eval_store import EvalStore
from assistant.store.prompt_store import BindingChange
from assistant.store.tables import PromptAudit
from assistant.turns import ConversationRef

# CommandContext is the grammar's: re-exported, as whoever runs commands needs it too
__all__ = [
    "COMMAND_FAILED",
    "AdminCommands",
    "CommandContext",
    "CommandResult",
    "command_failed",
]

log = logging.getLogger(__name__)

# Said when a command fails for a reason the user cannot fix. Without an error id (a caller that
# caught the failure itself); `command_failed` adds the id that the log line carries too.
COMMAND_FAILED = "⚠️ The command failed; see the logs."
_BINDING_CHANGES = (UsePrompt, RollbackPrompt, SplitPrompt)


def command_failed(error_id: str, command: Command | None) -> str:
    """What the user is told when a command failed inside: a plain sentence with the id to
    quote, and what may have changed (a binding change commits its change and audit row as its
    last step, so it may have taken effect; an eval run keeps the runs it finished; reading
    commands and words that did not parse change nothing)."""
    if isinstance(command, _BINDING_CHANGES):
        after = "check `prompt list` before trying again, in case it took effect"
    elif isinstance(command, (UseKnowledge, DropKnowledge)):
        after = "check `knowledge list` before trying again, in case it took effect"
    elif isinstance(command, SetBudget):
        after = "check `budget show` before trying again, in case it took effect"
    elif isinstance(command, RunEvals):
        after = "eval runs that finished before it are kept"
    else:
        after = "nothing was changed"
    return f"⚠️ The command failed (error {error_id}); {after}."


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    ok: bool
    text: str


class AdminCommands:
    """Runs typed commands against the prompt store; every change is audited."""

    def __init__(
        self,
        *,
        prompts: PromptStore,
        versions: VersionResolver,
        admins: Sequence[str],
        evals: EvalStore | None = None,
        suites: Mapping[str, EvalSuite] | None = None,
        reporter: Callable[[str], Awaitable[str]] | None = None,
        evaluator: Callable[[str | None, int | None], Awaitable[str]] | None = None,
        knowledge: Knowledge | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self._prompts = prompts
        self._versions = versions
        self._admins = frozenset(admins)
        self._gate = EvalGate(evals=evals, suites=suites or {})
        self._evals = evals
        self._reporter = reporter  # period ("24h") -> the report as text
        self._evaluator = evaluator  # (name, version) -> the runs' summary
        self._knowledge = knowledge
        self._budgets = budgets

    async def run(self, text: str, context: CommandContext) -> CommandResult:
        """A command typed as text: parsed, then run as `execute` runs it; never raises."""
        try:
            command = parse(text)
        except UsageError as exc:
            return CommandResult(ok=False, text=f"{exc}.\n{USAGE}")
        except Exception:  # a parser bug must still get an answer
            return _failed(f"parsing {text[:200]!r}", None)
        return await self.execute(command, context)

    async def execute(self, command: Command, context: CommandContext) -> CommandResult:
        """Authorize, check the command fits the place, do it; never raises, since the
        surface has acked already and the user must still hear back."""
        try:
            return await self._authorized(command, context)
        except CommandError as exc:
            return CommandResult(ok=False, text=str(exc))
        except Exception:
            return _failed(repr(command)[:500], command)

    async def _authorized(self, command: Command, context: CommandContext) -> CommandResult:
        if isinstance(command, CHANGES) and not self._may_change(context):
            return CommandResult(
                ok=False,
                text="Only admins may change prompts, knowledge or budgets, or run evals "
                f"({context.actor.qualified_id} is not in ADMIN_USERS). Reading commands (list, "
                "show, diff, history, report, knowledge search, budget show) are open to "
                "everyone.",
            )
        check_numbers(command)
        check_place(command, context)
        return CommandResult(ok=True, text=await self._perform(command, context))

    def _may_change(self, context: CommandContext) -> bool:
        return context.surface == "cli" or context.actor.qualified_id in self._admins

    async def _perform(self, command: Command, context: CommandContext) -> str:
        if isinstance(command, ListPrompts):
            return await self._list()
        if isinstance(command, ShowPrompt):
            return await self._show(command)
        if isinstance(command, DiffPrompt):
            return await self._diff(command)
        if isinstance(command, UsePrompt):
            return await self._use(command, context)
        if isinstance(command, RollbackPrompt):
            return await self._rollback(command, context)
        if isinstance(command, SplitPrompt):
            return await self._split(command, context)
        if isinstance(command, ShowReport):
            if self._reporter is None:
                raise CommandError("Reports are not available here.")
            return await self._reporter(command.period)
        if isinstance(command, RunEvals):
            if self._evaluator is None:
                raise CommandError("Evals cannot be run from here.")
            return await self._evaluator(command.name, command.version)
        if isinstance(command, (ListKnowledge, SearchKnowledge, UseKnowledge, DropKnowledge)):
            return await self._on_knowledge(command, context)
        if isinstance(command, (ShowBudgets, SetBudget)):
            return await self._on_budget(command, context)
        return await self._history(command)

    async def _on_budget(self, command: ShowBudgets | SetBudget, context: CommandContext) -> str:
        """`budget show`: what applies here (from the shell, every budget); `budget set`:
        audited, in this channel unless a scope or target says otherwise."""
        if self._budgets is None:
            raise CommandError("Budgets are not available here.")
        if isinstance(command, ShowBudgets):
            return await self._budgets.show(context.ref)
        scope = self._scope(command.where, context)
        return await self._budgets.set(
            scope,
            command.period,
            command.usd,
            actor=context.actor.qualified_id,
            surface=context.surface,
        )

    async def _on_knowledge(
        self,
        command: ListKnowledge | SearchKnowledge | UseKnowledge | DropKnowledge,
        context: CommandContext,
    ) -> str:
        if self._knowledge is None:
            raise CommandError("Knowledge collections are not available here.")
        if isinstance(command, ListKnowledge):
            return await self._knowledge_list(context)
        if isinstance(command, SearchKnowledge):
            return await self._knowledge_search(command.query, context)
        return await self._knowledge_bind(command, context)

    async def _knowledge_list(self, context: CommandContext) -> str:
        assert self._knowledge is not None
        store = self._knowledge.store
        collections = await store.collections()
        if not collections:
            return (
                "No knowledge collections yet: an operator adds one with "
                "`assistant knowledge add NAME PATH`."
            )
        here = {c.name for c in await store.bound_to(context.ref)} if context.ref else set()
        places: dict[str, list[str]] = {}
        for name, scope in await store.bindings():
            places.setdefault(name, []).append(scope.describe())
        lines = []
        for c in collections:
            where = ", ".join(places.get(c.name, [])) or "bound nowhere"
            mark = " (searched here)" if c.name in here else ""
            lines.append(f"- {c.name}: {c.documents} documents, {c.chunks} passages; {where}{mark}")
        return "\n".join(lines)

    async def _knowledge_search(self, query: str, context: CommandContext) -> str:
        """What this place may see, as the tool would find it; from the shell, everything."""
        assert self._knowledge is not None
        store = self._knowledge.store
        collections = (
            await store.bound_to(context.ref) if context.ref else await store.collections()
        )
        if not collections:
            return (
                "No knowledge collection is searched here: an admin binds one with "
                "`knowledge use NAME`."
            )
        calls: list[CallRecord] = []
        outcome = await self._knowledge.search(query, collections=collections, account=calls.append)
        await self._knowledge.record(calls)
        if not outcome.hits:
            return f"Nothing matches {query!r} in {', '.join(c.name for c in collections)}."
        lines = [
            f"{n}. {source_of(hit).label()} ({hit.collection}: {hit.document})"
            + (f" {hit.link}" if hit.link else "")
            for n, hit in enumerate(outcome.hits, 1)
        ]
        if outcome.note:
            lines.append(f"({outcome.note})")
        return "\n".join(lines)

    async def _knowledge_bind(
        self, command: UseKnowledge | DropKnowledge, context: CommandContext
    ) -> str:
        assert self._knowledge is not None
        store = self._knowledge.store
        if await store.collection(command.name) is None:
            known = [c.name for c in await store.collections()]
            close = difflib.get_close_matches(command.name, known, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise CommandError(f"No knowledge collection named {command.name!r}.{hint}")
        scope = self._scope(command.where, context)
        actor = context.actor.qualified_id
        if isinstance(command, UseKnowledge):
            changed = await store.bind(command.name, scope, actor=actor, surface=context.surface)
            if not changed:
                return f"{command.name} is already searched in {scope.describe()}."
            return f"{command.name} is now searched in {scope.describe()}."
        changed = await store.drop(command.name, scope, actor=actor, surface=context.surface)
        if not changed:
            return f"{command.name} was not bound to {scope.describe()}: nothing changed."
        return f"{command.name} is no longer searched in {scope.describe()}."

    async def _known_versions(self, name: str) -> list[int]:
        versions = sorted({row.version for row in await self._prompts.versions(name)})
        if not versions:
            names = sorted({row.name for row in await self._prompts.versions()})
            raise CommandError(f"No prompt named {name!r}. Prompts: {', '.join(names) or 'none'}.")
        return versions

    async def _require(self, name: str, version: int) -> None:
        versions = await self._known_versions(name)
        if version not in versions:
            listed = ", ".join(str(v) for v in versions)
            raise CommandError(f"{name} has no version {version}. Versions: {listed}.")

    async def released(self) -> dict[str, list[int]]:
        """Every released prompt and its versions (what autocomplete offers)."""
        by_name: dict[str, list[int]] = {}
        for row in await self._prompts.versions():
            by_name.setdefault(row.name, []).append(row.version)
        return {name: sorted(versions) for name, versions in sorted(by_name.items())}

    async def _list(self) -> str:
        by_name = await self.released()
        default = self._versions.catalog.default_name
        lines = [
            f"{name}: versions {', '.join(map(str, versions))}"
            + (" (default prompt)" if name == default else "")
            for name, versions in sorted(by_name.items())
        ]
        bindings = await self._prompts.bindings()
        lines += [f"  {scope.describe()} -> {binding.describe()}" for scope, binding in bindings]
        if not bindings:
            lines.append(f"  no bindings: every conversation uses {default} at its latest version")
        return "\n".join(lines)

    async def _show(self, command: ShowPrompt) -> str:
        versions = await self._known_versions(command.name)
        version = command.version or versions[-1]
        await self._require(command.name, version)
        row = await self._prompts.version(command.name, version)
        assert row is not None and row.id is not None
        usage = await self._prompts.usage(row.id)
        searched = await latest(self._evals, row.name, row.version) if self._evals else None
        retrieval = (
            f"knowledge search (eval run #{searched.run_id} on {searched.model}): "
            f"{describe(searched)}\n"
            if searched
            else ""
        )
        return (
            f"{row.name}@{row.version} from {row.source_file} (sha256 {row.content_hash[:12]})\n"
            f"model calls for replies: {usage.calls}; output-contract violations: "
            f"{usage.contract_violations}; answered from cache: {usage.cache_hits}\n"
            f"{retrieval}```\n{row.body.rstrip()}\n```"
        )

    async def _diff(self, command: DiffPrompt) -> str:
        for version in (command.old, command.new):
            await self._require(command.name, version)
        old = await self._prompts.version(command.name, command.old)
        new = await self._prompts.version(command.name, command.new)
        assert old is not None and new is not None
        lines = difflib.unified_diff(
            old.body.splitlines(),
            new.body.splitlines(),
            fromfile=f"{command.name}@{command.old}",
            tofile=f"{command.name}@{command.new}",
            lineterm="",
        )
        return "```diff\n" + ("\n".join(lines) or "(no difference)") + "\n```"

    def _scope(self, where: Where, context: CommandContext) -> Scope:
        place = where.target or context.ref
        kind: ScopeKind = where.scope or ("channel" if place is not None else "global")
        if kind != "global" and place is None:
            raise CommandError(
                f"From the shell, name the {kind}: --target platform/workspace[/channel]."
            )
        if kind == "channel" and place is not None and not place.channel:
            raise CommandError(
                "A channel scope needs a channel: --target platform/workspace/channel."
            )
        return Scope.of(kind, place) if place is not None else Scope(kind="global")

    async def _use(self, command: UsePrompt, context: CommandContext) -> str:
        await self._require(command.name, command.version)
        scope = self._scope(command.where, context)
        current = await self._current_version(command.name, scope)
        verdict = await self._gate.check(
            command.name, [command.version], current, force=command.force
        )
        after = Binding(prompt=command.name, version=command.version)
        change = await self._change(scope, after, context, action="use", forced=verdict.overridden)
        done = f"{after.describe()} now answers in {scope.describe()} (was {self._was(change)})."
        return f"{done}\n{verdict.figures}" if verdict.figures else done

    async def _current_version(self, name: str, scope: Scope) -> int | None:
        """The version of `name` answering in `scope` now, as a turn there would resolve it
        (the most specific binding; for a split, the version most conversations get, the newest
        of equals); None when another prompt answers there."""
        place = ConversationRef(
            platform=scope.platform, workspace=scope.workspace, channel=scope.channel
        )
        bindings = await self._prompts.bindings_for(place)
        if bindings:
            _, binding = bindings[0]
            if binding.prompt != name:
                return None
            if binding.version is not None:
                return binding.version
            return max(binding.split, key=lambda pair: (pair[1], pair[0]))[0]
        if name != self._versions.catalog.default_name:
            return None
        versions = await self._known_versions(name)
        return versions[-1] if versions else None

    async def _split(self, command: SplitPrompt, context: CommandContext) -> str:
        for version, _ in command.weights:
            await self._require(command.name, version)
        scope = self._scope(command.where, context)
        current = await self._current_version(command.name, scope)
        incoming = [v for v, weight in command.weights if weight > 0 and v != current]
        verdict = await self._gate.check(command.name, incoming, current, force=command.force)
        after = Binding(prompt=command.name, split=command.weights)
        change = await self._change(scope, after, context, action="ab", forced=verdict.overridden)
        total = sum(w for _, w in command.weights)
        shares = ", ".join(f"version {v}: {100 * w / total:.0f}%" for v, w in command.weights)
        return (
            f"{scope.describe()} now splits {command.name} ({shares}); each conversation keeps "
            f"the version it gets (was {self._was(change)}).\n{verdict.figures}"
        )

    async def _rollback(self, command: RollbackPrompt, context: CommandContext) -> str:
        scope = self._scope(command.where, context)
        last = await self._prompts.last_change(scope)
        current = await self._prompts.binding(scope)
        if last is None or current is None or current.prompt != command.name:
            bound = current.describe() if current else "nothing"
            raise CommandError(
                f"Nothing to roll back for {command.name} in {scope.describe()} "
                f"(it is bound to {bound})."
            )
        restored = Binding.from_json(last.before)
        change = await self._prompts.change_binding(
            scope,
            restored,
            actor=context.actor.qualified_id,
            surface=context.surface,
            action="rollback",
            undoes=last.id,
        )
        now = restored.describe() if restored else self._default_label()
        return f"Rolled back {scope.describe()}: {now} answers again (was {self._was(change)})."

    async def _change(
        self,
        scope: Scope,
        after: Binding,
        context: CommandContext,
        *,
        action: str,
        forced: bool = False,
    ) -> BindingChange:
        return await self._prompts.change_binding(
            scope,
            after,
            actor=context.actor.qualified_id,
            surface=context.surface,
            action=action,
            forced=forced,
        )

    def _was(self, change: BindingChange) -> str:
        return change.before.describe() if change.before else self._default_label()

    def _default_label(self) -> str:
        return f"the default, {self._versions.catalog.default_name} at its latest version"

    async def _history(self, command: PromptHistory) -> str:
        await self._known_versions(command.name)
        rows = await self._prompts.history(command.name)
        if not rows:
            return f"No changes recorded for {command.name}."
        return "\n".join(_audit_line(row) for row in rows)


def _failed(what: str, command: Command | None) -> CommandResult:
    """Log the failure with a fresh short id and answer with the same id, so that what a user
    quotes leads to the log line."""
    error_id = secrets.token_hex(3)
    log.exception("admin command failed (error %s): %s", error_id, what)
    return CommandResult(ok=False, text=command_failed(error_id, command))


def _audit_line(row: PromptAudit) -> str:
    before = Binding.from_json(row.before)
    after = Binding.from_json(row.after)
    scope = Scope(
        kind=row.scope,  # type: ignore[arg-type]
        platform=row.platform,
        workspace=row.workspace,
        channel=row.channel,
    )
    flags = (" forced" if row.forced else "") + (" (rolled back)" if row.undone_by else "")
    return (
        f"{row.at:%Y-%m-%d %H:%M} UTC  {row.actor} via {row.surface}: {row.action} in "
        f"{scope.describe()}: {before.describe() if before else 'default'} -> "
        f"{after.describe() if after else 'default'}{flags}"
    )
