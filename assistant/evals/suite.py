"""Eval suites: what a prompt must keep doing, read from `prompts/NAME/evals.yaml`, and the pure
checks that grade one observed turn against a case (the runner that calls the model lives apart).

A bad suite file is refused the way a bad prompt file is: `path: field 'x.y': what is wrong`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from assistant.contracts import check_reply, check_schema
from assistant.file_errors import describe
from assistant.prompts.files import PromptFileError

SUITE_FILE = "evals.yaml"
_CASE_NAME = r"^[a-z0-9_-]+$"
_ROLES = ("user", "assistant")
_QUOTE_CHARS = 60


class EvalFileError(PromptFileError):
    """A suite file that cannot be used; a PromptFileError too, so whoever refuses a bad
    prompts folder at startup refuses a bad suite the same way."""


# --- the values a suite is made of -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExpectedToolCall:
    """The value of a `tool_called` assertion: a tool name, and optionally arguments that the
    call's JSON arguments must include (a subset match, so incidental arguments do not matter)."""

    name: str
    args: Mapping[str, Any] | None = None

    def describe(self) -> str:
        return self.name if self.args is None else f"{self.name} with {json.dumps(self.args)}"


@dataclass(frozen=True, kw_only=True)
class Assertion:
    """One thing an answer must (or, negated, must not) do."""

    kind: str
    value: Any
    negated: bool

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown assertion kind {self.kind!r}")

    def describe(self) -> str:
        prefix = "not " if self.negated else ""
        return f"{prefix}{self.kind} {_show(self.value)}"


@dataclass(frozen=True, kw_only=True)
class EvalCase:
    """A question (or short conversation) put to the prompt, and what its answer must satisfy."""

    name: str
    turns: tuple[tuple[str, str], ...]  # (role, text); the last is ("user", question)
    weight: float
    expect: tuple[Assertion, ...]

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
    weight: float = Field(default=1.0, gt=0)
    expect: tuple[dict[str, Any], ...] = ()


class _Consistency(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    runs: int = Field(ge=2, le=10)


class _ToolCase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    input: dict[str, Any] = {}
    expected: str | None = None
    error: bool = False


class _Suite(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(default=1.0, ge=0, le=1)
    consistency: _Consistency | None = None
    self_check: bool | None = None
    cases: tuple[_Case, ...] = ()
    tools: dict[str, tuple[_ToolCase, ...]] = {}


class _ToolCallValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    args: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Source:
    """Where errors point, and what the file may name."""

    path: Path
    tools: frozenset[str]

    def error(self, field: str, message: str) -> EvalFileError:
        return EvalFileError(f"{self.path}: field '{field}': {message}")

    def check_tool(self, field: str, name: str) -> None:
        if name not in self.tools:
            raise self.error(field, _unknown("tool", name, sorted(self.tools)))


def load_suite(path: Path, *, prompt: str, known_tools: Iterable[str]) -> EvalSuite:
    """Parse and validate one suite file; errors read `path: field 'x.y': what is wrong`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalFileError(f"{path}: cannot read the file ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EvalFileError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise EvalFileError(f"{path}: expected a mapping with threshold, cases, tools, …")
    try:
        spec = _Suite.model_validate(raw)
    except ValidationError as exc:
        raise EvalFileError(describe(path, exc, _Suite)) from None
    source = _Source(path, frozenset(known_tools))
    cases = tuple(_case(source, f"cases.{i}", case) for i, case in enumerate(spec.cases))
    _check_unique(source, spec.cases)
    return EvalSuite(
        prompt=prompt,
        path=path,
        threshold=spec.threshold,
        consistency_runs=spec.consistency.runs if spec.consistency else 1,
        self_check=spec.self_check,
        cases=cases,
        tool_cases=_tool_cases(source, spec.tools),
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
        _assertion(source, f"{field}.expect.{j}", item) for j, item in enumerate(spec.expect)
    )
    return EvalCase(
        name=spec.name, turns=_turns(source, field, spec), weight=spec.weight, expect=expect
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


def _check_unique(source: _Source, cases: Sequence[_Case]) -> None:
    first: dict[str, int] = {}
    for index, case in enumerate(cases):
        if case.name in first:
            raise source.error(
                f"cases.{index}.name",
                f"duplicate case name {case.name!r} (also cases.{first[case.name]})",
            )
        first[case.name] = index


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


# --- assertion kinds: how a file's value is read, and how an observed turn is checked ------------


def _assertion(source: _Source, field: str, item: Mapping[str, Any]) -> Assertion:
    if len(item) != 1:
        raise source.error(field, f"write one `kind: value` pair per assertion, found {len(item)}")
    key, value = next(iter(item.items()))
    key = str(key)
    kind = key.removeprefix("not_")
    parse = _PARSERS.get(kind)
    if parse is None:
        every = [name for known in KINDS for name in (known, f"not_{known}")]
        listing = ", ".join(KINDS) + ", each also as not_KIND"
        raise source.error(
            f"{field}.{key}", _unknown("assertion kind", key, every, listing=listing)
        )
    return Assertion(kind=kind, value=parse(source, f"{field}.{key}", value), negated=key != kind)


_Parser = Callable[[_Source, str, Any], Any]
_TEXT_CONFIG = ConfigDict(coerce_numbers_to_str=True)  # `equals: 42` means the text "42"
_TEXT = TypeAdapter(Annotated[str, Field(min_length=1)], config=_TEXT_CONFIG)
_ANY_TEXT = TypeAdapter(str, config=_TEXT_CONFIG)
_USD = TypeAdapter(Annotated[float, Field(strict=True, ge=0)])
_MS = TypeAdapter(Annotated[float, Field(strict=True, gt=0)])


def _typed(adapter: TypeAdapter[Any]) -> _Parser:
    def parse(source: _Source, field: str, value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            raise source.error(field, str(exc.errors()[0]["msg"])) from None

    return parse


def _parse_regex(source: _Source, field: str, value: Any) -> str:
    pattern: str = _typed(_TEXT)(source, field, value)
    try:
        re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise source.error(field, f"not a valid regular expression ({exc})") from None
    return pattern


def _parse_schema(source: _Source, field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise source.error(field, "expected a JSON schema written as a mapping")
    problem = check_schema(value)
    if problem:
        raise source.error(field, f"not a valid JSON schema ({problem})")
    return value


def _parse_tool_call(source: _Source, field: str, value: Any) -> ExpectedToolCall:
    if isinstance(value, str):
        source.check_tool(field, value)
        return ExpectedToolCall(name=value)
    if not isinstance(value, dict):
        raise source.error(field, "expected a tool name or a mapping with name and args")
    try:
        spec = _ToolCallValue.model_validate(value)
    except ValidationError as exc:
        raise EvalFileError(describe(source.path, exc, _ToolCallValue, under=field)) from None
    source.check_tool(f"{field}.name", spec.name)
    return ExpectedToolCall(name=spec.name, args=spec.args)


_PARSERS: dict[str, _Parser] = {
    "contains": _typed(_TEXT),
    "equals": _typed(_ANY_TEXT),
    "same_as": _typed(_ANY_TEXT),
    "regex": _parse_regex,
    "json_schema": _parse_schema,
    "tool_called": _parse_tool_call,
    "max_cost_usd": _typed(_USD),
    "max_latency_ms": _typed(_MS),
    "judge": _typed(_TEXT),
}
KINDS = tuple(_PARSERS)


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What one turn produced, as far as the assertions care."""

    text: str
    tool_calls: tuple[tuple[str, str], ...]  # (name, JSON arguments)
    cost_usd: float | None  # None: the model has no price
    latency_ms: float
    failed: str | None = None  # the user-facing failure message when the turn failed


@dataclass(frozen=True, kw_only=True)
class Outcome:
    assertion: Assertion
    passed: bool
    reason: str  # one line, saying what was seen either way


@dataclass(frozen=True, kw_only=True)
class ToolOutcome:
    passed: bool
    reason: str


FAILED_TURN = "the turn failed"  # how a failed turn's reasons begin (runs count them)
# (rubric, question, answer) -> (passed, why); passed None: the judge could not tell
Judge = Callable[[str, str, str], Awaitable[tuple[bool | None, str]]]


class _Finding(NamedTuple):
    """What was seen: whether the assertion's statement held (None: cannot tell, so it fails
    negated or not), worded so it reads right as the reason either way."""

    held: bool | None
    text: str


async def check(case: EvalCase, observed: Observed, *, judge: Judge | None) -> list[Outcome]:
    """Grade one turn against every assertion of the case; a judge's own errors propagate, since a
    broken judge is an outage to fix, not a regression of the prompt."""
    if observed.failed is not None:
        reason = f"{FAILED_TURN}: {observed.failed}"
        return [Outcome(assertion=a, passed=False, reason=reason) for a in case.expect]
    outcomes = []
    for assertion in case.expect:
        if assertion.kind == "judge":
            finding = await _judge(assertion.value, case, observed, judge)
        else:
            finding = _CHECKS[assertion.kind](assertion.value, observed)
        passed = finding.held is not None and finding.held != assertion.negated
        outcomes.append(Outcome(assertion=assertion, passed=passed, reason=finding.text))
    return outcomes


def _contains(value: str, seen: Observed) -> _Finding:
    if value.casefold() in seen.text.casefold():
        return _Finding(True, f"answer contains {_quote(value)}")
    return _Finding(False, f"answer does not contain {_quote(value)}")


def _equals(value: str, seen: Observed) -> _Finding:
    if seen.text.strip() == value.strip():
        return _Finding(True, f"answer equals {_quote(value.strip())}")
    return _Finding(False, f"answer is {_quote(seen.text.strip())}, not {_quote(value.strip())}")


def _same_as(value: str, seen: Observed) -> _Finding:
    if normalized(seen.text) == normalized(value):
        return _Finding(True, f"answer is {_quote(value)} (ignoring case and spacing)")
    return _Finding(
        False, f"answer is {_quote(seen.text)}, not {_quote(value)} (ignoring case and spacing)"
    )


def _regex(value: str, seen: Observed) -> _Finding:
    match = re.search(value, seen.text, re.MULTILINE)
    if match:
        return _Finding(True, f"answer matches {value!r} at {_quote(match.group(0))}")
    return _Finding(False, f"answer does not match {value!r}")


def _json_schema(value: dict[str, Any], seen: Observed) -> _Finding:
    result = check_reply(seen.text, value)
    if result.ok:
        return _Finding(True, "answer is JSON that matches the schema")
    return _Finding(False, f"answer does not match the JSON schema ({result.error})")


def _tool_called(value: ExpectedToolCall, seen: Observed) -> _Finding:
    calls = [arguments for name, arguments in seen.tool_calls if name == value.name]
    if not calls:
        made = ", ".join(name for name, _ in seen.tool_calls) or "none"
        return _Finding(False, f"{value.name} was not called (calls: {made})")
    if value.args is None:
        return _Finding(True, f"{value.name} was called")
    if any(_subset(value.args, _json_or_none(arguments)) for arguments in calls):
        return _Finding(True, f"{value.name} was called with {json.dumps(value.args)}")
    return _Finding(
        False,
        f"{value.name} was not called with {json.dumps(value.args)} (got {'; '.join(calls)})",
    )


def _max_cost(value: float, seen: Observed) -> _Finding:
    if seen.cost_usd is None:
        return _Finding(None, "the turn is unpriced, so its cost is unknown")
    within = seen.cost_usd <= value
    word = "within" if within else "over"
    return _Finding(within, f"cost {_usd(seen.cost_usd)} is {word} the {_usd(value)} limit")


def _max_latency(value: float, seen: Observed) -> _Finding:
    within = seen.latency_ms <= value
    word = "within" if within else "over"
    return _Finding(within, f"latency {seen.latency_ms:.0f} ms is {word} the {value:g} ms limit")


async def _judge(rubric: str, case: EvalCase, seen: Observed, judge: Judge | None) -> _Finding:
    if judge is None:
        return _Finding(None, "no judge configured")
    passed, why = await judge(rubric, case.question, seen.text)
    if passed is None:  # the judge could not tell: a failure, negated or not
        return _Finding(None, f"the judge could not grade it: {why}")
    return _Finding(passed, f"judge {'passed' if passed else 'failed'} it: {why}")


_CHECKS: dict[str, Callable[[Any, Observed], _Finding]] = {
    "contains": _contains,
    "equals": _equals,
    "same_as": _same_as,
    "regex": _regex,
    "json_schema": _json_schema,
    "tool_called": _tool_called,
    "max_cost_usd": _max_cost,
    "max_latency_ms": _max_latency,
}


def _subset(expected: Any, actual: Any) -> bool:
    """Whether `actual` has everything `expected` has: mappings may carry more keys (at any
    depth), lists match item by item, and a bool is never equal to a number."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and _subset(item, actual[key]) for key, item in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    return bool(expected == actual)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return None


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


def normalized(text: str) -> str:
    """Text compared the way a reader would: spacing collapsed, case folded."""
    return " ".join(text.split()).casefold()


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
            passed=False, reason=f"{case.tool} should raise but returned {_quote(result or '')}"
        )
    if error is not None:
        return ToolOutcome(passed=False, reason=f"{case.tool} raised: {error}")
    got = (result or "").strip()
    if case.expected is None or got == case.expected.strip():
        return ToolOutcome(passed=True, reason=f"{case.tool} returned {_quote(got)}")
    return ToolOutcome(
        passed=False,
        reason=f"{case.tool} returned {_quote(got)}, not {_quote(case.expected.strip())}",
    )


def self_check_cases(examples: Sequence[tuple[str, str]]) -> list[EvalCase]:
    """A version's own few-shot examples as cases: a prompt that cannot reproduce the answers it
    shows the model is broken before any authored case runs."""
    return [
        EvalCase(
            name=f"self-check-{number}",
            turns=(("user", user),),
            weight=1.0,
            expect=(Assertion(kind="same_as", value=assistant, negated=False),),
        )
        for number, (user, assistant) in enumerate(examples, start=1)
    ]


# --- wording -----------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, ExpectedToolCall):
        return value.describe()
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{value:g}"
    return json.dumps(value)


def _quote(text: str) -> str:
    short = text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"
    return repr(short)


def _usd(amount: float) -> str:
    return "$" + (f"{amount:.8f}".rstrip("0").rstrip(".") or "0")
