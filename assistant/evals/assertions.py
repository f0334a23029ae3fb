"""Eval assertion kinds, one class each: how a suite file's value is read, how an observed turn is
checked against it, and how it reads in a report. Adding a kind is one class here, listed in
`KINDS`; negation (`not_KIND`) is handled once, by `Assertion`, for every kind.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from assistant.contracts import check_reply, check_schema
from assistant.turns import Source as Cited

NEGATION = "not_"  # `not_contains: x` is `contains: x` negated
_QUOTE_CHARS = 60
_LOOSELY = "(ignoring case and spacing)"  # how same_as compares, said in its reasons

# (rubric, question, answer) -> (passed, why); passed None: the judge could not tell
Judge = Callable[[str, str, str], Awaitable[tuple[bool | None, str]]]


class Source(Protocol):
    """The suite file an assertion is read from, as far as a kind needs it: its errors point at the
    file and field like every other suite error, and it knows which tools exist."""

    def error(self, field: str, message: str) -> Exception: ...

    def invalid(self, field: str, exc: ValidationError, model: type[BaseModel]) -> Exception: ...

    def unknown(
        self, field: str, what: str, name: str, available: Sequence[str], *, listing: str = ""
    ) -> Exception: ...

    def check_tool(self, field: str, name: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What one turn produced, as far as the assertions care."""

    text: str
    tool_calls: tuple[tuple[str, str], ...]  # (name, JSON arguments)
    cost_usd: float | None  # None: the model has no price
    latency_ms: float
    failed: str | None = None  # the user-facing failure message when the turn failed
    contract_error: str | None = None  # the answer broke the version's schema, even repaired
    sources: tuple[Cited, ...] = ()  # the team's documents the answer cites, as numbered


@dataclass(frozen=True, kw_only=True)
class CheckContext:
    """What a check may need beyond the turn, the same for every kind so that one signature fits
    all: the question asked (a judge grades the answer against it) and the judge, if any."""

    question: str
    judge: Judge | None


@dataclass(frozen=True, kw_only=True)
class Finding:
    """What a check saw: whether its statement held (None: cannot tell, so the assertion fails
    negated or not), worded so it reads right as the reason either way."""

    held: bool | None
    text: str


class Statement(ABC):
    """One kind of assertion: a statement about an answer that a case expects to hold (or, written
    `not_KIND`, not to hold). Subclasses are frozen dataclasses listed in `KINDS`."""

    kind: ClassVar[str]  # the key a suite file writes, and how `describe` begins

    @classmethod
    @abstractmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        """The statement a file's value makes; a bad value raises `source.error(field, …)`, so
        the author is told which file and field to fix."""

    @abstractmethod
    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        """Whether it holds for this turn; async (and given the context) so that a kind may ask
        a model, as the judge does, while the rest simply look."""

    @abstractmethod
    def describe(self) -> str:
        """How the assertion reads in a report: the kind, then its value."""


# --- reading values ------------------------------------------------------------------------------

_Value = TypeVar("_Value")
_TEXT_CONFIG = ConfigDict(coerce_numbers_to_str=True)  # `equals: 42` means the text "42"
_TEXT: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(min_length=1)], config=_TEXT_CONFIG)
_ANY_TEXT: TypeAdapter[str] = TypeAdapter(str, config=_TEXT_CONFIG)
_USD: TypeAdapter[float] = TypeAdapter(Annotated[float, Field(strict=True, ge=0)])
_MS: TypeAdapter[float] = TypeAdapter(Annotated[float, Field(strict=True, gt=0)])


def _read(adapter: TypeAdapter[_Value], source: Source, field: str, value: Any) -> _Value:
    """A plain value, refused with pydantic's own words for what is wrong with it."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise source.error(field, str(exc.errors()[0]["msg"])) from None


# --- the kinds -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Contains(Statement):
    """The answer mentions the text somewhere, in any case."""

    kind: ClassVar[str] = "contains"
    text: str

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        return cls(text=_read(_TEXT, source, field, value))

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        if self.text.casefold() in observed.text.casefold():
            return Finding(held=True, text=f"answer contains {quote(self.text)}")
        return Finding(held=False, text=f"answer does not contain {quote(self.text)}")

    def describe(self) -> str:
        return f"{self.kind} {quote(self.text)}"


@dataclass(frozen=True, kw_only=True)
class Equals(Statement):
    """The answer is exactly the text, but for surrounding whitespace."""

    kind: ClassVar[str] = "equals"
    text: str

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        return cls(text=_read(_ANY_TEXT, source, field, value))

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        want, got = self.text.strip(), observed.text.strip()
        if got == want:
            return Finding(held=True, text=f"answer equals {quote(want)}")
        return Finding(held=False, text=f"answer is {quote(got)}, not {quote(want)}")

    def describe(self) -> str:
        return f"{self.kind} {quote(self.text)}"


@dataclass(frozen=True, kw_only=True)
class SameAs(Statement):
    """The answer is the text as a reader would compare them (see `normalized`): what the few-shot
    self-check expects of each example."""

    kind: ClassVar[str] = "same_as"
    text: str

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        return cls(text=_read(_ANY_TEXT, source, field, value))

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        if normalized(observed.text) == normalized(self.text):
            return Finding(held=True, text=f"answer is {quote(self.text)} {_LOOSELY}")
        text = f"answer is {quote(observed.text)}, not {quote(self.text)} {_LOOSELY}"
        return Finding(held=False, text=text)

    def describe(self) -> str:
        return f"{self.kind} {quote(self.text)}"


@dataclass(frozen=True, kw_only=True)
class Regex(Statement):
    """Some part of the answer matches the pattern (`^` and `$` match at every line)."""

    kind: ClassVar[str] = "regex"
    pattern: str

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        pattern = _read(_TEXT, source, field, value)
        try:
            re.compile(pattern, re.MULTILINE)
        except re.error as exc:
            raise source.error(field, f"not a valid regular expression ({exc})") from None
        return cls(pattern=pattern)

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        match = re.search(self.pattern, observed.text, re.MULTILINE)
        if match:
            return Finding(
                held=True, text=f"answer matches {self.pattern!r} at {quote(match.group(0))}"
            )
        return Finding(held=False, text=f"answer does not match {self.pattern!r}")

    def describe(self) -> str:
        return f"{self.kind} {quote(self.pattern)}"


@dataclass(frozen=True, kw_only=True)
class JsonSchema(Statement):
    """The answer is JSON (a ```json fence allowed) valid against the schema, as a version's
    `response_schema` checks its replies."""

    kind: ClassVar[str] = "json_schema"
    schema: dict[str, Any]

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        if not isinstance(value, dict):
            raise source.error(field, "expected a JSON schema written as a mapping")
        problem = check_schema(value)  # the metaschema, plain JSON, every $ref resolved
        if problem:
            raise source.error(field, problem)
        return cls(schema=value)

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        result = check_reply(observed.text, self.schema)
        if result.ok:
            return Finding(held=True, text="answer is JSON that matches the schema")
        return Finding(held=False, text=f"answer does not match the JSON schema ({result.error})")

    def describe(self) -> str:
        return f"{self.kind} {json.dumps(self.schema)}"


class _ToolCallValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    args: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class ToolCalled(Statement):
    """The turn called the tool, and with `args` given, with arguments that include them (a subset
    match, so incidental arguments do not matter)."""

    kind: ClassVar[str] = "tool_called"
    name: str
    args: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        if isinstance(value, str):
            source.check_tool(field, value)
            return cls(name=value)
        if not isinstance(value, dict):
            raise source.error(field, "expected a tool name or a mapping with name and args")
        try:
            spec = _ToolCallValue.model_validate(value)
        except ValidationError as exc:
            raise source.invalid(field, exc, _ToolCallValue) from None
        source.check_tool(f"{field}.name", spec.name)
        return cls(name=spec.name, args=spec.args)

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        calls = [arguments for name, arguments in observed.tool_calls if name == self.name]
        if not calls:
            made = ", ".join(name for name, _ in observed.tool_calls) or "none"
            return Finding(held=False, text=f"{self.name} was not called (calls: {made})")
        if self.args is None:
            return Finding(held=True, text=f"{self.name} was called")
        wanted = json.dumps(self.args)
        if any(_subset(self.args, _json_or_none(arguments)) for arguments in calls):
            return Finding(held=True, text=f"{self.name} was called with {wanted}")
        got = "; ".join(calls)
        return Finding(held=False, text=f"{self.name} was not called with {wanted} (got {got})")

    def describe(self) -> str:
        with_args = "" if self.args is None else f" with {json.dumps(self.args)}"
        return f"{self.kind} {self.name}{with_args}"


@dataclass(frozen=True, kw_only=True)
class MaxCostUsd(Statement):
    """The turn cost at most this many dollars; an unpriced turn cannot show it did."""

    kind: ClassVar[str] = "max_cost_usd"
    limit: float

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        return cls(limit=_read(_USD, source, field, value))

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        if observed.cost_usd is None:
            return Finding(held=None, text="the turn is unpriced, so its cost is unknown")
        within = observed.cost_usd <= self.limit
        word = "within" if within else "over"
        text = f"cost {_usd(observed.cost_usd)} is {word} the {_usd(self.limit)} limit"
        return Finding(held=within, text=text)

    def describe(self) -> str:
        return f"{self.kind} {self.limit:g}"


@dataclass(frozen=True, kw_only=True)
class MaxLatencyMs(Statement):
    """The whole turn, tools included, took at most this many milliseconds."""

    kind: ClassVar[str] = "max_latency_ms"
    limit: float

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        return cls(limit=_read(_MS, source, field, value))

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        within = observed.latency_ms <= self.limit
        word = "within" if within else "over"
        text = f"latency {observed.latency_ms:.0f} ms is {word} the {self.limit:g} ms limit"
        return Finding(held=within, text=text)

    def describe(self) -> str:
        return f"{self.kind} {self.limit:g}"


@dataclass(frozen=True, kw_only=True)
class LlmJudge(Statement):
    """A model grades the answer against the rubric: for what no pattern can check. A judge that
    cannot tell fails the assertion either way, saying why."""

    kind: ClassVar[str] = "judge"
    rubric: str

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        return cls(rubric=_read(_TEXT, source, field, value))

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        if context.judge is None:
            return Finding(held=None, text="no judge configured")
        passed, why = await context.judge(self.rubric, context.question, observed.text)
        if passed is None:
            return Finding(held=None, text=f"the judge could not grade it: {why}")
        return Finding(held=passed, text=f"judge {'passed' if passed else 'failed'} it: {why}")

    def describe(self) -> str:
        return f"{self.kind} {quote(self.rubric)}"


@dataclass(frozen=True, kw_only=True)
class ExpectedSource:
    """A source written in a suite: a document's path inside its collection, and after `#`,
    words of one of its section headings (`prompts.md#Admin commands`). One rule for what a
    search should find and what an answer should cite, so the two figures agree."""

    document: str
    heading: str = ""

    @classmethod
    def read(cls, text: str) -> ExpectedSource:
        """ValueError in words for the author when `text` names no document or no section."""
        document, hashed, heading = text.partition("#")
        document, heading = document.strip(), heading.strip()
        if not document:
            raise ValueError("name a document, like 'prompts.md' or 'prompts.md#Evals'")
        if hashed and not heading:
            raise ValueError("after '#', give words of a section heading, like 'prompts.md#Evals'")
        return cls(document=document, heading=heading)

    def matches(self, document: str, heading: str) -> bool:
        """The same document and, when a section is named, a heading path (outermost first)
        that holds its words, ignoring case and spacing."""
        if document != self.document:
            return False
        return not self.heading or normalized(self.heading) in normalized(heading)

    def __str__(self) -> str:
        return f"{self.document}#{self.heading}" if self.heading else self.document


@dataclass(frozen=True, kw_only=True)
class Cites(Statement):
    """The answer cites the document (or the section) among its sources: an answer about the
    team's own ways must come from its documents, not from the model's memory; negated, an
    answer must not lean on a retired page."""

    kind: ClassVar[str] = "cites"
    source: ExpectedSource

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        text = _read(_TEXT, source, field, value)
        try:
            return cls(source=ExpectedSource.read(text))
        except ValueError as exc:
            raise source.error(field, str(exc)) from None

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        cited = [s for s in observed.sources if self.source.matches(s.document, s.heading)]
        if cited:
            return Finding(held=True, text=f"answer cites {self.source} as [{cited[0].number}]")
        listing = ", ".join(f"[{s.number}] {_cited(s)}" for s in observed.sources) or "nothing"
        return Finding(held=False, text=f"answer does not cite {self.source} (cites {listing})")

    def describe(self) -> str:
        return f"{self.kind} {quote(str(self.source))}"


def _cited(source: Cited) -> str:
    return f"{source.document}#{source.heading}" if source.heading else source.document


# The registry: a suite file may write exactly these keys (and each with `not_`), in this order in
# the "available:" list of an unknown kind.
KINDS: Mapping[str, type[Statement]] = {
    kind.kind: kind
    for kind in (
        Contains,
        Equals,
        SameAs,
        Regex,
        JsonSchema,
        ToolCalled,
        MaxCostUsd,
        MaxLatencyMs,
        LlmJudge,
        Cites,
    )
}


# --- negation, the same for every kind -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Assertion:
    """One thing an answer must (or, negated, must not) do."""

    statement: Statement
    negated: bool = False

    def describe(self) -> str:
        return ("not " if self.negated else "") + self.statement.describe()

    async def check(self, observed: Observed, context: CheckContext) -> Outcome:
        """The statement's finding, flipped when negated; one that cannot be told fails both ways,
        and its wording stays, since it says what was seen."""
        finding = await self.statement.check(observed, context)
        passed = finding.held is not None and finding.held != self.negated
        return Outcome(assertion=self, passed=passed, reason=finding.text)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How one assertion fared on one turn."""

    assertion: Assertion
    passed: bool
    reason: str  # one line, saying what was seen either way


def read_assertion(source: Source, field: str, item: Mapping[Any, Any]) -> Assertion:
    """One `kind: value` (or `not_kind: value`) entry of a case's `expect`, read by its kind."""
    if len(item) != 1:
        raise source.error(field, f"write one `kind: value` pair per assertion, found {len(item)}")
    key, value = next(iter(item.items()))
    key = str(key)
    name = key.removeprefix(NEGATION)
    kind = KINDS.get(name)
    if kind is None:
        every = [each for known in KINDS for each in (known, f"{NEGATION}{known}")]
        listing = ", ".join(KINDS) + f", each also as {NEGATION}KIND"
        raise source.unknown(f"{field}.{key}", "assertion kind", key, every, listing=listing)
    statement = kind.parse(source, f"{field}.{key}", value)
    return Assertion(statement=statement, negated=key != name)


# --- comparing and wording -----------------------------------------------------------------------


def normalized(text: str) -> str:
    """Text compared the way a reader would: spacing collapsed, case folded."""
    return " ".join(text.split()).casefold()


def quote(text: str) -> str:
    """Text in a reason, cut short so that one reason stays one readable line."""
    short = text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"
    return repr(short)


def _usd(amount: float) -> str:
    return "$" + (f"{amount:.8f}".rstrip("0").rstrip(".") or "0")


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
