"""The admin grammar, one for every surface (Slack, Discord, the shell).

Parsing turns text into a typed command or a usage message; running it checks who may do it,
changes the binding and writes the audit log in one transaction. Reading is open to everyone;
changing is for ADMIN_USERS (and the shell, whose user already holds the database). The model
can never reach this module: it is not a tool.
"""

from __future__ import annotations

import difflib
import logging
import shlex
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import get_args

from assistant.prompts.bindings import Binding, Scope, ScopeKind
from assistant.prompts.versions import VersionResolver
from assistant.store import PromptStore
from assistant.store.eval_store import EvalStore
from assistant.store.prompt_store import BindingChange
from assistant.store.tables import EvalRun, PromptAudit
from assistant.turns import Actor, ConversationRef

log = logging.getLogger(__name__)

USAGE = """\
Usage:
  prompt list
  prompt show NAME [VERSION]
  prompt diff NAME V1 V2
  prompt use NAME VERSION [--scope global|workspace|channel] [--target PLACE] [--force]
  prompt rollback NAME [--scope global|workspace|channel] [--target PLACE]
  prompt ab NAME V1=WEIGHT V2=WEIGHT [...] [--scope ...] [--target PLACE]
  prompt history NAME
  eval run [NAME [VERSION]]
  report [24h|7d|30d]
The scope defaults to this channel (global from the shell). PLACE is platform/workspace[/channel],
e.g. slack/T0123/C0456."""


class UsageError(ValueError):
    """The command is not in the grammar; the message says which part, USAGE follows."""


@dataclass(frozen=True, kw_only=True)
class Where:
    scope: ScopeKind | None = None  # None: the surface's default
    target: ConversationRef | None = None


@dataclass(frozen=True, kw_only=True)
class ListPrompts:
    pass


@dataclass(frozen=True, kw_only=True)
class ShowPrompt:
    name: str
    version: int | None = None


@dataclass(frozen=True, kw_only=True)
class DiffPrompt:
    name: str
    old: int
    new: int


@dataclass(frozen=True, kw_only=True)
class UsePrompt:
    name: str
    version: int
    where: Where
    force: bool = False


@dataclass(frozen=True, kw_only=True)
class RollbackPrompt:
    name: str
    where: Where


@dataclass(frozen=True, kw_only=True)
class SplitPrompt:
    name: str
    weights: tuple[tuple[int, int], ...]
    where: Where


@dataclass(frozen=True, kw_only=True)
class PromptHistory:
    name: str


@dataclass(frozen=True, kw_only=True)
class RunEvals:
    name: str | None = None
    version: int | None = None


@dataclass(frozen=True, kw_only=True)
class ShowReport:
    period: str = "24h"


Command = (
    ListPrompts
    | ShowPrompt
    | DiffPrompt
    | UsePrompt
    | RollbackPrompt
    | SplitPrompt
    | PromptHistory
    | RunEvals
    | ShowReport
)
CHANGES = (UsePrompt, RollbackPrompt, SplitPrompt, RunEvals)  # an eval run costs money too
_PERIODS = ("24h", "7d", "30d")


def parse(text: str) -> Command:
    """The command in `text`, or UsageError saying what is wrong."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read the command ({exc})") from None
    if words and words[0].lstrip("/") == "assistant":
        words = words[1:]
    if words and words[0] == "report":
        return _parse_report(words[1:])
    if words[:2] == ["eval", "run"]:
        return _parse_eval(words[2:])
    if len(words) < 2 or words[0] != "prompt":
        raise UsageError("commands start with 'prompt' and an action, 'eval run' or 'report'")
    action, args = words[1], words[2:]
    positional, options = _split_options(args)
    parser = _PARSERS.get(action)
    if parser is None:
        raise UsageError(f"unknown action {action!r}")
    return parser(positional, options)


def _parse_report(args: list[str]) -> ShowReport:
    if len(args) > 1 or (args and args[0] not in _PERIODS):
        raise UsageError(f"'report' takes one of {', '.join(_PERIODS)}")
    return ShowReport(period=args[0] if args else "24h")


def _parse_eval(args: list[str]) -> RunEvals:
    if len(args) > 2:
        raise UsageError("'eval run' takes at most a prompt name and a version")
    return RunEvals(
        name=args[0] if args else None, version=_version(args[1]) if len(args) > 1 else None
    )


def _split_options(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    positional: list[str] = []
    options: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if word == "--force":
            options["force"] = "yes"
        elif word in ("--scope", "--target"):
            value = next(words, None)
            if value is None:
                raise UsageError(f"{word} needs a value")
            options[word[2:]] = value
        elif word.startswith("--"):
            raise UsageError(f"unknown option {word}")
        else:
            positional.append(word)
    return positional, options


def _count(positional: list[str], low: int, high: int, action: str) -> None:
    if not low <= len(positional) <= high:
        raise UsageError(f"wrong number of arguments for 'prompt {action}'")


def _no_options(options: dict[str, str], action: str) -> None:
    if options:
        raise UsageError(f"'prompt {action}' takes no options")


def _version(word: str) -> int:
    if not word.isdigit() or int(word) < 1:
        raise UsageError(f"a version is a whole number from 1, not {word!r}")
    return int(word)


def _where(options: dict[str, str]) -> Where:
    scope = options.get("scope")
    if scope is not None and scope not in get_args(ScopeKind):
        raise UsageError(f"the scope is global, workspace or channel, not {scope!r}")
    target = options.get("target")
    return Where(scope=scope, target=_place(target) if target else None)  # type: ignore[arg-type]


def _place(text: str) -> ConversationRef:
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise UsageError(f"a place is platform/workspace[/channel], not {text!r}")
    return ConversationRef(
        platform=parts[0], workspace=parts[1], channel=parts[2] if len(parts) == 3 else ""
    )


def _parse_list(positional: list[str], options: dict[str, str]) -> Command:
    _count(positional, 0, 0, "list")
    _no_options(options, "list")
    return ListPrompts()


def _parse_show(positional: list[str], options: dict[str, str]) -> Command:
    _count(positional, 1, 2, "show")
    _no_options(options, "show")
    version = _version(positional[1]) if len(positional) == 2 else None
    return ShowPrompt(name=positional[0], version=version)


def _parse_diff(positional: list[str], options: dict[str, str]) -> Command:
    _count(positional, 3, 3, "diff")
    _no_options(options, "diff")
    return DiffPrompt(name=positional[0], old=_version(positional[1]), new=_version(positional[2]))


def _parse_use(positional: list[str], options: dict[str, str]) -> Command:
    _count(positional, 2, 2, "use")
    return UsePrompt(
        name=positional[0],
        version=_version(positional[1]),
        where=_where(options),
        force="force" in options,
    )


def _parse_rollback(positional: list[str], options: dict[str, str]) -> Command:
    _count(positional, 1, 1, "rollback")
    if "force" in options:
        raise UsageError("'prompt rollback' takes no --force")
    return RollbackPrompt(name=positional[0], where=_where(options))


def _parse_ab(positional: list[str], options: dict[str, str]) -> Command:
    if len(positional) < 3:
        raise UsageError("'prompt ab' needs a name and at least two VERSION=WEIGHT pairs")
    if "force" in options:
        raise UsageError("'prompt ab' takes no --force")
    weights: dict[int, int] = {}
    for pair in positional[1:]:
        version, _, weight = pair.partition("=")
        if not weight.isdigit():
            raise UsageError(f"a split is VERSION=WEIGHT, e.g. 2=90, not {pair!r}")
        if _version(version) in weights:
            raise UsageError(f"version {version} appears twice in the split")
        weights[_version(version)] = int(weight)
    if sum(weights.values()) == 0:
        raise UsageError("the weights add up to zero")
    split = tuple(sorted((v, w) for v, w in weights.items() if w > 0))
    if len(split) < 2:
        raise UsageError("a split needs at least two versions with a weight above zero")
    return SplitPrompt(name=positional[0], weights=split, where=_where(options))


def _parse_history(positional: list[str], options: dict[str, str]) -> Command:
    _count(positional, 1, 1, "history")
    _no_options(options, "history")
    return PromptHistory(name=positional[0])


_PARSERS = {
    "list": _parse_list,
    "show": _parse_show,
    "diff": _parse_diff,
    "use": _parse_use,
    "rollback": _parse_rollback,
    "ab": _parse_ab,
    "history": _parse_history,
}


@dataclass(frozen=True, kw_only=True)
class CommandContext:
    """Who runs a command, from which surface, and where (None from the shell)."""

    actor: Actor
    surface: str
    ref: ConversationRef | None = None


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    ok: bool
    text: str


class CommandError(Exception):
    """A well-formed command that cannot be done; the message says why."""


class AdminCommands:
    """Runs parsed commands against the prompt store; every change is audited."""

    def __init__(
        self,
        *,
        prompts: PromptStore,
        versions: VersionResolver,
        admins: Sequence[str],
        evals: EvalStore | None = None,
        suites: Collection[str] = (),
        reporter: Callable[[str], Awaitable[str]] | None = None,
        evaluator: Callable[[str | None, int | None], Awaitable[str]] | None = None,
    ) -> None:
        self._prompts = prompts
        self._versions = versions
        self._admins = frozenset(admins)
        self._evals = evals
        self._suites = frozenset(suites)  # prompts with an eval suite: their switches are gated
        self._reporter = reporter  # period ("24h") -> the report as text
        self._evaluator = evaluator  # (name, version) -> the runs' summary

    async def run(self, text: str, context: CommandContext) -> CommandResult:
        try:
            command = parse(text)
        except UsageError as exc:
            return CommandResult(ok=False, text=f"{exc}.\n{USAGE}")
        if isinstance(command, CHANGES) and not self._may_change(context):
            return CommandResult(
                ok=False,
                text=f"Only admins may change prompts or run evals ({context.actor.qualified_id} "
                "is not in ADMIN_USERS). Reading commands (list, show, diff, history, report) are "
                "open to everyone.",
            )
        try:
            return CommandResult(ok=True, text=await self._execute(command, context))
        except CommandError as exc:
            return CommandResult(ok=False, text=str(exc))
        except Exception:  # the surface has acked already: the user must still hear back
            log.exception("admin command %r failed", text)
            return CommandResult(ok=False, text="⚠️ The command failed; see the logs.")

    def _may_change(self, context: CommandContext) -> bool:
        return context.surface == "cli" or context.actor.qualified_id in self._admins

    async def _execute(self, command: Command, context: CommandContext) -> str:
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
        return await self._history(command)

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
        return (
            f"{row.name}@{row.version} from {row.source_file} (sha256 {row.content_hash[:12]})\n"
            f"model calls for replies: {usage.calls}; output-contract violations: "
            f"{usage.contract_violations}; answered from cache: {usage.cache_hits}\n"
            f"```\n{row.body.rstrip()}\n```"
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
        figures = await self._gate(command, scope)
        after = Binding(prompt=command.name, version=command.version)
        change = await self._change(scope, after, context, action="use", forced=command.force)
        done = f"{after.describe()} now answers in {scope.describe()} (was {self._was(change)})."
        return f"{done}\n{figures}" if figures else done

    async def _gate(self, command: UsePrompt, scope: Scope) -> str:
        """Refuse a version whose latest eval pass rate is below the one it replaces, or that
        was never evaluated; `--force` overrides (and is audited). Returns the figures."""
        if self._evals is None or command.name not in self._suites:
            return f"(Not eval-gated: {command.name} has no eval suite.)"
        current = await self._current_version(command.name, scope)
        target = await self._evals.latest_run(command.name, command.version)
        before = None
        if current is not None and current != command.version:
            before = await self._evals.latest_run(command.name, current)
        figures = f"Evals: {_run_figure(command.name, command.version, target)}"
        if before is not None and current is not None:
            figures += f"; now {_run_figure(command.name, current, before)}"
        if command.force:
            return figures + " (forced)"
        if target is None:
            raise CommandError(
                f"{command.name}@{command.version} has no eval run. Run `eval run "
                f"{command.name} {command.version}` first, or add --force. {figures}."
            )
        if before is not None and target.pass_rate < before.pass_rate:
            raise CommandError(
                f"{command.name}@{command.version} passes fewer evals than the version it "
                f"would replace. {figures}. Add --force to switch anyway."
            )
        return figures

    async def _current_version(self, name: str, scope: Scope) -> int | None:
        """The version of `name` answering in `scope` now, as a turn there would resolve it
        (the most specific binding; for a split, the version most conversations get); None
        when another prompt answers there."""
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
            return max(binding.split, key=lambda pair: pair[1])[0]
        if name != self._versions.catalog.default_name:
            return None
        versions = await self._known_versions(name)
        return versions[-1] if versions else None

    async def _split(self, command: SplitPrompt, context: CommandContext) -> str:
        for version, _ in command.weights:
            await self._require(command.name, version)
        scope = self._scope(command.where, context)
        after = Binding(prompt=command.name, split=command.weights)
        change = await self._change(scope, after, context, action="ab")
        total = sum(w for _, w in command.weights)
        shares = ", ".join(f"version {v}: {100 * w / total:.0f}%" for v, w in command.weights)
        return (
            f"{scope.describe()} now splits {command.name} ({shares}); each conversation keeps "
            f"the version it gets (was {self._was(change)})."
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


def _run_figure(name: str, version: int, run: EvalRun | None) -> str:
    if run is None:
        return f"{name}@{version} never evaluated"
    return f"{name}@{version} passed {run.pass_rate:.0%} (run #{run.id}, {run.model})"


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
