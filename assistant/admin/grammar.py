"""The admin grammar, one for every surface: the typed commands, and the text that spells them.

A text surface (Slack, the shell) parses words into a command; Discord builds the same commands
from its typed slash-command options. Either way `commands.AdminCommands.execute` runs them, so
a rule about a command is written here once, on the typed command, never on its words.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from assistant.budgets import BUDGET_PERIODS, MAX_USD, BudgetPeriod, check_usd
from assistant.prompts.bindings import ScopeKind
from assistant.prompts.files import MAX_VERSION
from assistant.turns import Actor, ConversationRef

USAGE = """\
Usage:
  prompt list
  prompt show NAME [VERSION]
  prompt diff NAME V1 V2
  prompt use NAME VERSION [--scope global|workspace|channel] [--target PLACE] [--force]
  prompt rollback NAME [--scope global|workspace|channel] [--target PLACE]
  prompt ab NAME V1=WEIGHT V2=WEIGHT [...] [--scope ...] [--target PLACE] [--force]
  prompt history NAME
  eval run [NAME [VERSION]]
  report [24h|7d|30d]
  knowledge list
  knowledge search WORDS...
  knowledge use NAME [--scope global|workspace|channel] [--target PLACE]
  knowledge drop NAME [--scope global|workspace|channel] [--target PLACE]
  budget show
  budget set USD [--scope global|workspace|channel] [--target PLACE] [--period day|month]
The scope defaults to this channel (global from the shell). PLACE is platform/workspace[/channel],
e.g. slack/T0123/C0456. A VERSION is a whole number from 1; a WEIGHT one from 0 to 100."""

ReportPeriod = Literal["24h", "7d", "30d"]
REPORT_PERIODS: tuple[ReportPeriod, ...] = get_args(ReportPeriod)
SCOPE_KINDS: tuple[ScopeKind, ...] = get_args(ScopeKind)
NO_WORKSPACE_HERE = (
    "A direct message belongs to no workspace or server: use scope channel or global."
)
MAX_WEIGHT = 100  # weights are relative shares; 0..100 reads as a percentage
_SHOWN = 24  # characters of a refused word quoted back (a word may be 5,000 digits long)


class UsageError(ValueError):
    """The command is not in the grammar; the message says which part, USAGE follows."""


class CommandError(Exception):
    """A well-formed command that cannot be done (here, or at all); the message says why."""


@dataclass(frozen=True, kw_only=True)
class CommandContext:
    """Who runs a command, from which surface, and where (None from the shell)."""

    actor: Actor
    surface: str
    ref: ConversationRef | None = None


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
    weights: tuple[tuple[int, int], ...]  # (version, weight), as `parse_split` makes them
    where: Where
    force: bool = False


@dataclass(frozen=True, kw_only=True)
class PromptHistory:
    name: str


@dataclass(frozen=True, kw_only=True)
class RunEvals:
    name: str | None = None
    version: int | None = None


@dataclass(frozen=True, kw_only=True)
class ShowReport:
    period: ReportPeriod = "24h"


@dataclass(frozen=True, kw_only=True)
class ListKnowledge:
    pass


@dataclass(frozen=True, kw_only=True)
class SearchKnowledge:
    query: str


@dataclass(frozen=True, kw_only=True)
class UseKnowledge:
    """Let a scope search a collection (in addition to what it searches already)."""

    name: str
    where: Where


@dataclass(frozen=True, kw_only=True)
class DropKnowledge:
    name: str
    where: Where


@dataclass(frozen=True, kw_only=True)
class ShowBudgets:
    pass


@dataclass(frozen=True, kw_only=True)
class SetBudget:
    usd: float
    where: Where
    period: BudgetPeriod = "day"


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
    | ListKnowledge
    | SearchKnowledge
    | UseKnowledge
    | DropKnowledge
    | ShowBudgets
    | SetBudget
)
# an eval run costs money too
CHANGES = (
    UsePrompt,
    RollbackPrompt,
    SplitPrompt,
    RunEvals,
    UseKnowledge,
    DropKnowledge,
    SetBudget,
)
_PLACED = (UsePrompt, RollbackPrompt, SplitPrompt, UseKnowledge, DropKnowledge, SetBudget)


def check_place(command: Command, context: CommandContext) -> None:
    """Refuse a workspace scope asked for from a place in no workspace (a Discord DM): it would
    bind a workspace nobody is in. A `--target` names its own place, and reading names none."""
    if not isinstance(command, _PLACED):
        return
    where, place = command.where, context.ref
    if where.scope == "workspace" and where.target is None and place and not place.workspace:
        raise CommandError(NO_WORKSPACE_HERE)


def check_numbers(command: Command) -> None:
    """Refuse versions and weights out of bounds however the command was made: a surface that
    builds typed commands (Discord's integer options) is held to what parsing enforces, and a
    version past MAX_VERSION would overflow the database's INTEGER column."""
    if isinstance(command, SetBudget):
        try:
            check_usd(command.usd)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    versions: list[int | None] = []
    if isinstance(command, (ShowPrompt, UsePrompt, RunEvals)):
        versions = [command.version]
    elif isinstance(command, DiffPrompt):
        versions = [command.old, command.new]
    elif isinstance(command, SplitPrompt):
        versions = [version for version, _ in command.weights]
        for _, weight in command.weights:
            if not 0 <= weight <= MAX_WEIGHT:
                raise CommandError(
                    f"A weight is a whole number from 0 to {MAX_WEIGHT}, not {weight}."
                )
    for version in versions:
        if version is not None and not 1 <= version <= MAX_VERSION:
            raise CommandError(
                f"A version is a whole number from 1 to {MAX_VERSION}, not {version}."
            )


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
    if words and words[0] == "knowledge":
        return _parse_knowledge(words[1:])
    if words and words[0] == "budget":
        return _parse_budget(words[1:])
    if len(words) < 2 or words[0] != "prompt":
        raise UsageError(
            "commands start with 'prompt', 'knowledge' or 'budget' and an action, "
            "'eval run' or 'report'"
        )
    action, args = words[1], words[2:]
    positional, options = _split_options(args)
    parser = _PARSERS.get(action)
    if parser is None:
        raise UsageError(f"unknown action {_shown(action)}")
    return parser(positional, options)


def parse_split(pairs: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """VERSION=WEIGHT pairs ("2=90", "3=10") as (version, weight), sorted, without zero weights;
    UsageError unless at least two versions keep a weight above zero."""
    weights: dict[int, int] = {}
    for pair in pairs:
        version, equals, weight = pair.partition("=")
        if not equals or not weight:
            raise UsageError(f"a split is VERSION=WEIGHT, e.g. 2=90, not {_shown(pair)}")
        number = _version(version)
        if number in weights:
            raise UsageError(f"version {number} appears twice in the split")
        weights[number] = _whole_number(weight, what="a weight", low=0, high=MAX_WEIGHT)
    if sum(weights.values()) == 0:
        raise UsageError("the weights add up to zero")
    split = tuple(sorted((v, w) for v, w in weights.items() if w > 0))
    if len(split) < 2:
        raise UsageError("a split needs at least two versions with a weight above zero")
    return split


def _parse_report(args: list[str]) -> ShowReport:
    if len(args) > 1:
        raise UsageError(f"'report' takes one of {', '.join(REPORT_PERIODS)}")
    return ShowReport(period=_period(args[0]) if args else "24h")


def _period(word: str) -> ReportPeriod:
    for period in REPORT_PERIODS:
        if word == period:
            return period
    raise UsageError(f"'report' takes one of {', '.join(REPORT_PERIODS)}")


def _parse_eval(args: list[str]) -> RunEvals:
    if len(args) > 2:
        raise UsageError("'eval run' takes at most a prompt name and a version")
    return RunEvals(
        name=args[0] if args else None, version=_version(args[1]) if len(args) > 1 else None
    )


def _parse_knowledge(args: list[str]) -> Command:
    action, rest = (args[0], args[1:]) if args else ("", [])
    if action == "search":
        if not rest:
            raise UsageError("'knowledge search' needs the words to look for")
        return SearchKnowledge(query=" ".join(rest))
    positional, options = _split_options(rest)
    if action == "list":
        if positional or options:
            raise UsageError("'knowledge list' takes no arguments")
        return ListKnowledge()
    if action in ("use", "drop"):
        if len(positional) != 1 or "force" in options:
            raise UsageError(f"'knowledge {action}' takes a collection's name, and a place")
        kind = UseKnowledge if action == "use" else DropKnowledge
        return kind(name=positional[0], where=_where(options))
    raise UsageError("'knowledge' takes list, search, use or drop")


def _parse_budget(args: list[str]) -> Command:
    action, rest = (args[0], args[1:]) if args else ("show", [])
    if action == "show":
        if rest:
            raise UsageError("'budget show' takes no arguments")
        return ShowBudgets()
    if action != "set":
        raise UsageError("'budget' takes show or set")
    period: BudgetPeriod = "day"
    if "--period" in rest:
        at = rest.index("--period")
        period = _budget_period(rest[at + 1] if at + 1 < len(rest) else None)
        rest = rest[:at] + rest[at + 2 :]
    positional, options = _split_options(rest)
    if len(positional) != 1 or "force" in options:
        raise UsageError("'budget set' takes an amount in USD, a scope, a place and a period")
    return SetBudget(usd=_usd(positional[0]), where=_where(options), period=period)


def _budget_period(word: str | None) -> BudgetPeriod:
    for period in BUDGET_PERIODS:
        if word == period:
            return period
    shown = "nothing" if word is None else _shown(word)
    raise UsageError(f"--period is day or month, not {shown}")


_GROUPED = re.compile(r"[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?")


def _usd(word: str) -> float:
    """An amount like 5, 5.50 or $5.50: digits only (no 1e3, nan or inf), above 0 and at most
    MAX_USD, and never more than four decimals (a budget is money, not a float's noise)."""
    amount = word.removeprefix("$")
    if "," in amount:  # thousands grouped (1,000.50), never a decimal comma (1,50 is not 150)
        if not _GROUPED.fullmatch(amount):
            raise UsageError(
                f"write a budget with a decimal point, like 12.50, not {_shown(word)} "
                "(a comma only groups thousands: 1,000)"
            )
        amount = amount.replace(",", "")
    whole, dot, cents = amount.partition(".")
    readable = (
        amount.isascii()
        and whole.isdigit()
        and len(whole) <= len(str(int(MAX_USD)))
        and (not dot or (cents.isdigit() and len(cents) <= 4))
    )
    if readable and 0 < float(amount) <= MAX_USD:
        return float(amount)
    raise UsageError(
        f"a budget is an amount in USD above 0 and at most {MAX_USD:,.0f}, "
        f"like 5 or 12.50, not {_shown(word)}"
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
            raise UsageError(f"unknown option {_shown(word)}")
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
    return _whole_number(word, what="a version", low=1, high=MAX_VERSION)


def _whole_number(word: str, *, what: str, low: int, high: int) -> int:
    number = ascii_number(word, low=low, high=high)
    if number is None:
        raise UsageError(f"{what} is a whole number from {low} to {high}, not {_shown(word)}")
    return number


def ascii_number(word: str, *, low: int, high: int) -> int | None:
    """`word` as a number from `low` to `high`, or None. Only ASCII digits: `isdigit` alone
    accepts '²' and '٣', which `int` then refuses or reads; and the length is checked before
    `int` reads it, so a 5,000-digit word is refused, not converted."""
    digits = word.lstrip("0") or "0"
    readable = word.isascii() and word.isdigit() and len(digits) <= len(str(high))
    return int(digits) if readable and low <= int(digits) <= high else None


def _shown(word: str) -> str:
    """A refused word quoted back, cut short: the answer must stay readable."""
    return repr(word if len(word) <= _SHOWN else word[:_SHOWN] + "…")


def _where(options: dict[str, str]) -> Where:
    scope = options.get("scope")
    target = options.get("target")
    return Where(
        scope=_scope_kind(scope) if scope is not None else None,
        target=_place(target) if target else None,
    )


def _scope_kind(word: str) -> ScopeKind:
    for kind in SCOPE_KINDS:
        if word == kind:
            return kind
    raise UsageError(f"the scope is global, workspace or channel, not {_shown(word)}")


def _place(text: str) -> ConversationRef:
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise UsageError(f"a place is platform/workspace[/channel], not {_shown(text)}")
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
    return SplitPrompt(
        name=positional[0],
        weights=parse_split(positional[1:]),
        where=_where(options),
        force="force" in options,
    )


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
