"""Eval suites: what a prompt must keep doing, read from `prompts/NAME/evals.yaml`, and the pure
checks that grade one observed turn against a case (the runner that calls the model lives apart;
each assertion kind is a class in `assertions`; retrieval cases are scored in `retrieval`).

A bad suite file is refused the way a bad prompt file is: `path: field 'x.y': what is wrong`.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.evals.assertions import (
    Assertion,
    CheckContext,
    ExpectedSource,
    Judge,
    Observed,
    Outcome,
    SameAs,
    normalized,
    quote,
    read_assertion,
)
from assistant.evals.retrieval import DEFAULT_DROP, DEFAULT_K, MAX_K, RetrievalCase
from assistant.file_errors import TOO_INTRICATE, describe, parse_yaml, read_text
from assistant.knowledge.catalog import check_name
from assistant.prompts.files import PromptFileError, is_known_tool

SUITE_FILE = "evals.yaml"
MAX_SUITE_BYTES = 4_000_000  # thousands of cases; a suite is read whole at every start
_CASE_NAME = r"^[a-z0-9_-]+$"
_Read = TypeVar("_Read")


class EvalFileError(PromptFileError):
    """A suite file that cannot be used; a PromptFileError too, so whoever refuses a bad
    prompts folder at startup refuses a bad suite the same way."""


# --- the values a suite is made of -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EvalCase:
    """A question (or short conversation) put to the prompt, and what its answer must satisfy."""

    name: str
    turns: tuple[tuple[str, str], ...]  # (role, text); the last is ("user", question)
    weight: float
    expect: tuple[Assertion, ...]
    consistent: bool = False  # every run must give the same answer, as a quote must

    def __post_init__(self) -> None:
        if not self.turns or self.turns[-1][0] != "user":
            raise ValueError(f"case {self.name!r}: the last turn must be the user's")

    @property
    def question(self) -> str:
        return self.turns[-1][1]


@dataclass(frozen=True, kw_only=True)
class ToolCase:
    """A tool checked on its own, without the model: these arguments give this result (or raise)."""

    tool: str
    arguments: dict[str, Any]
    expected: str | None  # None: any result, as long as the tool does not raise
    error: bool


@dataclass(frozen=True, kw_only=True)
class EvalSuite:
    """Everything one prompt's `evals.yaml` asks for."""

    prompt: str
    path: Path
    threshold: float
    consistency_runs: int  # 1: each case runs once
    self_check: bool | None  # None: on when the version has examples
    cases: tuple[EvalCase, ...]
    tool_cases: tuple[ToolCase, ...]
    retrieval: tuple[RetrievalCase, ...] = ()
    retrieval_drop: float = DEFAULT_DROP  # recall@k or MRR falling this much is drift

    def passes(self, rate: float) -> bool:
        return rate >= self.threshold


# --- the file's shape, checked by pydantic; the meaning is checked after -------------------------


class _Turn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str | None = None
    assistant: str | None = None


class _Case(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_CASE_NAME, max_length=64)
    input: str | None = Field(default=None, min_length=1)
    conversation: tuple[_Turn, ...] | None = None
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)  # .inf would make rates NaN
    expect: tuple[dict[str, Any], ...] = ()
    consistent: bool = False


class _Consistency(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    runs: int = Field(ge=2, le=10)


class _ToolCase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    input: dict[str, Any] = {}
    expected: str | None = None
    error: bool = False


class _Retrieval(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_CASE_NAME, max_length=64)
    query: str = Field(min_length=1)
    expect: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()
    k: int | None = Field(default=None, ge=1, le=MAX_K)


class _Suite(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(default=1.0, ge=0, le=1)
    consistency: _Consistency | None = None
    self_check: bool | None = None
    cases: tuple[_Case, ...] = ()
    tools: dict[str, tuple[_ToolCase, ...]] = {}
    retrieval_k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K)
    retrieval_drop: float = Field(default=DEFAULT_DROP, gt=0, le=1)
    retrieval: tuple[_Retrieval, ...] = ()


@dataclass(frozen=True)
class _Source:
    """Where errors point, and what the file may name (an `assertions.Source`)."""

    path: Path
    tools: frozenset[str]

    def error(self, field: str, message: str) -> EvalFileError:
        return EvalFileError(f"{self.path}: field '{field}': {message}")

    def invalid(self, field: str, exc: ValidationError, model: type[BaseModel]) -> EvalFileError:
        return EvalFileError(describe(self.path, exc, model, under=field))

    def unknown(
        self, field: str, what: str, name: str, available: Sequence[str], *, listing: str = ""
    ) -> EvalFileError:
        return self.error(field, _unknown(what, name, available, listing=listing))

    def check_tool(self, field: str, name: str) -> None:
        if not is_known_tool(name, self.tools):
            raise self.unknown(field, "tool", name, sorted(self.tools))


def load_suite(path: Path, *, prompt: str, known_tools: Iterable[str]) -> EvalSuite:
    """Parse and validate one suite file; errors read `path: field 'x.y': what is wrong`."""
    text = read_text(path, max_bytes=MAX_SUITE_BYTES, error=EvalFileError)
    raw = parse_yaml(text, path, error=EvalFileError)
    if not isinstance(raw, dict):
        raise EvalFileError(f"{path}: expected a mapping with threshold, cases, tools, …")
    try:
        return _suite(raw, _Source(path, frozenset(known_tools)), prompt=prompt)
    except RecursionError:  # a regex of a thousand nested groups, say
        raise EvalFileError(f"{path}: {TOO_INTRICATE}") from None


def _suite(raw: dict[str, Any], source: _Source, *, prompt: str) -> EvalSuite:
    path = source.path
    try:
        spec = _Suite.model_validate(raw)
    except ValidationError as exc:
        raise EvalFileError(describe(path, exc, _Suite)) from None
    cases = tuple(_case(source, f"cases.{i}", case) for i, case in enumerate(spec.cases))
    _check_unique(source, "cases", spec.cases)
    for i, case in enumerate(spec.cases):
        if case.consistent and spec.consistency is None:
            raise source.error(
                f"cases.{i}.consistent",
                "needs answers to compare: add `consistency: {runs: 3}` at the top of the suite",
            )
    return EvalSuite(
        prompt=prompt,
        path=path,
        threshold=spec.threshold,
        consistency_runs=spec.consistency.runs if spec.consistency else 1,
        self_check=spec.self_check,
        cases=cases,
        tool_cases=_tool_cases(source, spec.tools),
        retrieval=_retrieval_cases(source, spec),
        retrieval_drop=spec.retrieval_drop,
    )


def load_suites(prompts_dir: Path, *, known_tools: Iterable[str]) -> dict[str, EvalSuite]:
    """Every `NAME/evals.yaml` under `prompts_dir`, keyed by the prompt's folder name."""
    if not prompts_dir.is_dir():
        raise EvalFileError(f"PROMPTS_DIR {prompts_dir}: no such folder")
    tools = list(known_tools)
    return {
        path.parent.name: load_suite(path, prompt=path.parent.name, known_tools=tools)
        for path in sorted(prompts_dir.glob(f"*/{SUITE_FILE}"))
    }


def _unknown(what: str, name: str, available: Sequence[str], *, listing: str = "") -> str:
    close = difflib.get_close_matches(name, available, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {name!r} ({hint}available: {listing or ', '.join(available) or 'none'})"


def _case(source: _Source, field: str, spec: _Case) -> EvalCase:
    if not spec.expect:
        raise source.error(f"{field}.expect", "at least one assertion is required")
    expect = tuple(
        read_assertion(source, f"{field}.expect.{j}", item) for j, item in enumerate(spec.expect)
    )
    return EvalCase(
        name=spec.name,
        turns=_turns(source, field, spec),
        weight=spec.weight,
        expect=expect,
        consistent=spec.consistent,
    )


def _turns(source: _Source, field: str, spec: _Case) -> tuple[tuple[str, str], ...]:
    if (spec.input is None) == (spec.conversation is None):
        which = "not both" if spec.input is not None else "one is required"
        raise source.error(f"{field}.input", f"give either input or conversation, {which}")
    if spec.input is not None:
        return (("user", spec.input),)
    assert spec.conversation is not None
    turns = tuple(
        _turn(source, f"{field}.conversation.{k}", turn) for k, turn in enumerate(spec.conversation)
    )
    if not turns or turns[-1][0] != "user":
        raise source.error(f"{field}.conversation", "must end with a user turn")
    return turns


def _turn(source: _Source, field: str, turn: _Turn) -> tuple[str, str]:
    given = (("user", turn.user), ("assistant", turn.assistant))
    present = [(role, text) for role, text in given if text is not None]
    if len(present) != 1:
        raise source.error(field, "give exactly one of user or assistant")
    role, text = present[0]
    if not text:
        raise source.error(f"{field}.{role}", "is empty")
    return role, text


def _check_unique(source: _Source, section: str, cases: Sequence[_Case | _Retrieval]) -> None:
    first: dict[str, int] = {}
    for index, case in enumerate(cases):
        if case.name in first:
            raise source.error(
                f"{section}.{index}.name",
                f"duplicate case name {case.name!r} (also {section}.{first[case.name]})",
            )
        first[case.name] = index


def _retrieval_cases(source: _Source, spec: _Suite) -> tuple[RetrievalCase, ...]:
    _check_unique(source, "retrieval", spec.retrieval)
    return tuple(
        _retrieval_case(source, f"retrieval.{i}", case, k=spec.retrieval_k)
        for i, case in enumerate(spec.retrieval)
    )


def _retrieval_case(source: _Source, field: str, spec: _Retrieval, *, k: int) -> RetrievalCase:
    if not spec.expect:
        raise source.error(f"{field}.expect", "at least one source is required")
    return RetrievalCase(
        name=spec.name,
        query=spec.query,
        expect=tuple(
            _read_checked(source, f"{field}.expect.{j}", ExpectedSource.read, text)
            for j, text in enumerate(spec.expect)
        ),
        collections=tuple(
            dict.fromkeys(
                _read_checked(source, f"{field}.collections.{j}", check_name, name)
                for j, name in enumerate(spec.collections)
            )
        ),
        k=spec.k if spec.k is not None else k,
    )


def _read_checked(source: _Source, field: str, read: Callable[[str], _Read], text: str) -> _Read:
    """`read(text)`, its ValueError told as the file's and field's."""
    try:
        return read(text)
    except ValueError as exc:
        raise source.error(field, str(exc)) from None


def _tool_cases(source: _Source, spec: Mapping[str, Sequence[_ToolCase]]) -> tuple[ToolCase, ...]:
    found: list[ToolCase] = []
    for tool, cases in spec.items():
        source.check_tool(f"tools.{tool}", tool)
        for index, case in enumerate(cases):
            if case.error and case.expected is not None:
                raise source.error(
                    f"tools.{tool}.{index}", "give expected or error: true, not both"
                )
            found.append(
                ToolCase(tool=tool, arguments=case.input, expected=case.expected, error=case.error)
            )
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class ToolOutcome:
    passed: bool
    reason: str


FAILED_TURN = "the turn failed"  # how a failed turn's reasons begin (runs count them)


async def check(case: EvalCase, observed: Observed, *, judge: Judge | None) -> list[Outcome]:
    """Grade one turn against every assertion of the case; a judge's own errors propagate, since a
    broken judge is an outage to fix, not a regression of the prompt."""
    if observed.failed is not None:
        reason = f"{FAILED_TURN}: {observed.failed}"
        return [Outcome(assertion=a, passed=False, reason=reason) for a in case.expect]
    if observed.contract_error is not None:  # the prompt's failure, not an outage: it counts
        reason = f"broke the output contract, even repaired: {observed.contract_error}"
        return [Outcome(assertion=a, passed=False, reason=reason) for a in case.expect]
    context = CheckContext(question=case.question, judge=judge)
    return [await assertion.check(observed, context) for assertion in case.expect]


# --- scoring -----------------------------------------------------------------------------------


def case_passed(outcomes: Sequence[Outcome]) -> bool:
    """Every assertion held; nothing checked is not a pass."""
    return bool(outcomes) and all(outcome.passed for outcome in outcomes)


def weighted_pass_rate(results: Sequence[tuple[EvalCase, bool]]) -> float:
    """The share of weight that passed, so an important case counts for more; no cases, 0.0."""
    total = sum(case.weight for case, _ in results)
    if total == 0:
        return 0.0
    return sum(case.weight for case, passed in results if passed) / total


def disagreement(case: EvalCase, answers: Sequence[str]) -> str | None:
    """Why a case that must answer the same every time fails: None when it did (or need not)."""
    distinct = {normalized(answer) for answer in answers}
    if not case.consistent or len(distinct) <= 1:
        return None
    return f"asked {len(answers)} times, it gave {len(distinct)} different answers"


def agreement(answers: Sequence[str]) -> float:
    """How consistently one case is answered: the share of answers equal to the most common one
    (after `normalized`); one answer agrees with itself, no answers agree with nothing (0.0)."""
    if not answers:
        return 0.0
    _, count = Counter(normalized(answer) for answer in answers).most_common(1)[0]
    return count / len(answers)


def check_tool_case(case: ToolCase, result: str | None, error: str | None) -> ToolOutcome:
    """Grade what a tool did with the case's arguments: `error` is set when it raised."""
    if case.error:
        if error is not None:
            return ToolOutcome(passed=True, reason=f"{case.tool} raised as expected: {error}")
        return ToolOutcome(
            passed=False, reason=f"{case.tool} should raise but returned {quote(result or '')}"
        )
    if error is not None:
        return ToolOutcome(passed=False, reason=f"{case.tool} raised: {error}")
    got = (result or "").strip()
    if case.expected is None or got == case.expected.strip():
        return ToolOutcome(passed=True, reason=f"{case.tool} returned {quote(got)}")
    return ToolOutcome(
        passed=False,
        reason=f"{case.tool} returned {quote(got)}, not {quote(case.expected.strip())}",
    )


def self_check_cases(examples: Sequence[tuple[str, str]]) -> list[EvalCase]:
    """A version's own few-shot examples as cases: a prompt that cannot reproduce the answers it
    shows the model is broken before any authored case runs."""
    return [
        EvalCase(
            name=f"self-check-{number}",
            turns=(("user", user),),
            weight=1.0,
            expect=(Assertion(statement=SameAs(text=assistant)),),
        )
        for number, (user, assistant) in enumerate(examples, start=1)
    ]
