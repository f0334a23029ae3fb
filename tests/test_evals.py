"""Eval suites: a good file loads, a bad one is refused naming the file and the field, and every
assertion grades an observed turn the way its author would."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from assistant.evals.assertions import (
    KINDS,
    Assertion,
    CheckContext,
    Contains,
    Equals,
    Finding,
    JsonSchema,
    LlmJudge,
    MaxCostUsd,
    MaxLatencyMs,
    Observed,
    Regex,
    SameAs,
    Source,
    Statement,
    ToolCalled,
    normalized,
)
from assistant.evals.suite import (
    EvalCase,
    EvalFileError,
    ToolCase,
    agreement,
    case_passed,
    check,
    check_tool_case,
    load_suite,
    load_suites,
    self_check_cases,
    weighted_pass_rate,
)
from assistant.prompts.files import PromptFileError

KNOWN_TOOLS = ["current_time", "calculator"]
DOCS = Path(__file__).parents[1] / "docs" / "prompts.md"

FULL_SUITE: dict[str, Any] = {
    "threshold": 0.8,
    "consistency": {"runs": 3},
    "self_check": False,
    "cases": [
        {
            "name": "vpn-category",
            "input": "VPN drops every hour",
            "weight": 2,
            "expect": [
                {"contains": "network"},
                {"not_contains": "sorry"},
                {"equals": "category: network"},
                {"regex": "^category: \\w+$"},
                {"json_schema": {"type": "object", "required": ["category"]}},
                {"tool_called": "calculator"},
                {"tool_called": {"name": "calculator", "args": {"expression": "2+2"}}},
                {"max_cost_usd": 0.01},
                {"max_latency_ms": 5000},
                {"judge": "Names exactly one category and nothing else."},
                {"same_as": "Category:  NETWORK"},
            ],
        },
        {
            "name": "follow_up",
            "conversation": [{"user": "hi"}, {"assistant": "hello"}, {"user": "VPN drops"}],
            "expect": [{"not_tool_called": "current_time"}],
        },
    ],
    "tools": {
        "calculator": [
            {"input": {"expression": "2+3"}, "expected": "5"},
            {"input": {"expression": "1/0"}, "error": True},
            {"input": {"expression": "6*7"}, "expected": 42},
        ]
    },
}

ONE_CASE: dict[str, Any] = {
    "cases": [{"name": "one", "input": "hi", "expect": [{"contains": "x"}]}]
}


def write_suite(directory: Path, spec: Any, *, prompt: str = "assistant") -> Path:
    path = directory / prompt / "evals.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def with_case(**fields: Any) -> dict[str, Any]:
    """A one-case suite whose case has `fields` replaced (a None value removes the field)."""
    case = {**ONE_CASE["cases"][0], **fields}
    return {"cases": [{key: value for key, value in case.items() if value is not None}]}


def refusal(tmp_path: Path, spec: Any) -> str:
    path = write_suite(tmp_path, spec)
    with pytest.raises(EvalFileError) as excinfo:
        load_suite(path, prompt="assistant", known_tools=KNOWN_TOOLS)
    message = str(excinfo.value)
    assert str(path) in message
    return message


def observed(text: str = "", **fields: Any) -> Observed:
    values: dict[str, Any] = {"tool_calls": (), "cost_usd": 0.001, "latency_ms": 900.0}
    return Observed(text=text, **{**values, **fields})


def case_of(*assertions: Assertion, question: str = "VPN drops every hour") -> EvalCase:
    return EvalCase(name="case", turns=(("user", question),), weight=1, expect=assertions)


def expecting(statement: Statement, *, negated: bool = False) -> Assertion:
    return Assertion(statement=statement, negated=negated)


async def grade(assertion: Assertion, seen: Observed) -> tuple[bool, str]:
    [outcome] = await check(case_of(assertion), seen, judge=None)
    return outcome.passed, outcome.reason


# --- loading -----------------------------------------------------------------------------------


def test_a_full_suite_loads_with_every_kind(tmp_path: Path) -> None:
    path = write_suite(tmp_path, FULL_SUITE)
    suite = load_suite(path, prompt="assistant", known_tools=KNOWN_TOOLS)

    assert (suite.prompt, suite.path, suite.threshold) == ("assistant", path, 0.8)
    assert (suite.consistency_runs, suite.self_check) == (3, False)
    first, second = suite.cases
    assert (first.name, first.question, first.weight) == ("vpn-category", "VPN drops every hour", 2)
    assert [a.describe() for a in first.expect] == [
        "contains 'network'",
        "not contains 'sorry'",
        "equals 'category: network'",
        "regex '^category: \\\\w+$'",
        'json_schema {"type": "object", "required": ["category"]}',
        "tool_called calculator",
        'tool_called calculator with {"expression": "2+2"}',
        "max_cost_usd 0.01",
        "max_latency_ms 5000",
        "judge 'Names exactly one category and nothing else.'",
        "same_as 'Category:  NETWORK'",
    ]
    assert first.expect[6].statement == ToolCalled(name="calculator", args={"expression": "2+2"})
    assert second.turns == (("user", "hi"), ("assistant", "hello"), ("user", "VPN drops"))
    assert second.question == "VPN drops"
    assert second.expect[0].describe() == "not tool_called current_time"
    assert suite.tool_cases == (
        ToolCase(tool="calculator", arguments={"expression": "2+3"}, expected="5", error=False),
        ToolCase(tool="calculator", arguments={"expression": "1/0"}, expected=None, error=True),
        ToolCase(tool="calculator", arguments={"expression": "6*7"}, expected="42", error=False),
    )


def test_defaults_when_left_out(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, ONE_CASE), prompt="assistant", known_tools=[])
    assert (suite.threshold, suite.consistency_runs, suite.self_check) == (1.0, 1, None)
    assert suite.cases[0].weight == 1.0
    assert suite.tool_cases == ()


def test_load_suites_keys_by_folder_and_skips_prompts_without_one(tmp_path: Path) -> None:
    write_suite(tmp_path, ONE_CASE, prompt="assistant")
    write_suite(tmp_path, FULL_SUITE, prompt="triage")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "1.yaml").write_text("name: bare\n", encoding="utf-8")

    suites = load_suites(tmp_path, known_tools=KNOWN_TOOLS)

    assert list(suites) == ["assistant", "triage"]
    assert suites["triage"].prompt == "triage"
    assert suites["triage"].threshold == 0.8


def test_load_suites_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(EvalFileError, match="no such folder"):
        load_suites(tmp_path / "nowhere", known_tools=KNOWN_TOOLS)


def test_a_suite_error_is_a_prompt_file_error(tmp_path: Path) -> None:
    path = write_suite(tmp_path, ["not", "a", "mapping"])
    with pytest.raises(PromptFileError, match="expected a mapping"):
        load_suite(path, prompt="assistant", known_tools=KNOWN_TOOLS)


def test_a_fifo_named_evals_yaml_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "assistant" / "evals.yaml"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with pytest.raises(EvalFileError) as caught:
        load_suites(tmp_path, known_tools=KNOWN_TOOLS)
    assert str(caught.value) == (
        f"{fifo}: is a named pipe (FIFO), not a regular file; put a plain YAML file here"
    )


def test_a_suite_over_four_megabytes_is_refused(tmp_path: Path) -> None:
    path = write_suite(tmp_path, with_case(input="x " * 2_100_000))
    with pytest.raises(EvalFileError, match="larger than 4,000,000 bytes"):
        load_suite(path, prompt="assistant", known_tools=KNOWN_TOOLS)


def test_yaml_nested_past_the_parser_is_refused(tmp_path: Path) -> None:
    path = write_suite(tmp_path, {})
    path.write_text("cases: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(EvalFileError, match="nested more than 50 levels deep"):
        load_suite(path, prompt="assistant", known_tools=KNOWN_TOOLS)


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = write_suite(tmp_path, {})
    path.write_text("cases: [unclosed", encoding="utf-8")
    with pytest.raises(EvalFileError, match="not valid YAML"):
        load_suite(path, prompt="assistant", known_tools=KNOWN_TOOLS)


def deep(levels: int) -> dict[str, Any]:
    """A JSON schema nested `levels` deep."""
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


BAD_SUITES: list[tuple[str, Any, str, str]] = [
    (
        "unknown kind",
        with_case(expect=[{"contans": "x"}]),
        "cases.0.expect.0.contans",
        "did you mean 'contains'?",
    ),
    (
        "unknown negated kind",
        with_case(expect=[{"not_contans": "x"}]),
        "cases.0.expect.0.not_contans",
        "did you mean 'not_contains'?",
    ),
    (
        "two pairs in one assertion",
        with_case(expect=[{"contains": "x", "equals": "y"}]),
        "cases.0.expect.0",
        "one `kind: value` pair",
    ),
    (
        "input and conversation",
        with_case(conversation=[{"user": "hi"}]),
        "cases.0.input",
        "not both",
    ),
    ("neither input nor conversation", with_case(input=None), "cases.0.input", "is required"),
    (
        "conversation ending with the assistant",
        with_case(input=None, conversation=[{"user": "hi"}, {"assistant": "hello"}]),
        "cases.0.conversation",
        "must end with a user turn",
    ),
    (
        "a turn with two roles",
        with_case(input=None, conversation=[{"user": "hi", "assistant": "hello"}]),
        "cases.0.conversation.0",
        "exactly one of user or assistant",
    ),
    (
        "a misspelt role",
        with_case(input=None, conversation=[{"usr": "hi"}]),
        "cases.0.conversation.0.usr",
        "did you mean 'user'?",
    ),
    (
        "duplicate case names",
        {"cases": [ONE_CASE["cases"][0], ONE_CASE["cases"][0]]},
        "cases.1.name",
        "duplicate case name 'one' (also cases.0)",
    ),
    ("a bad case name", with_case(name="VPN case"), "cases.0.name", "pattern"),
    ("a zero weight", with_case(weight=0), "cases.0.weight", "greater than 0"),
    ("empty expect", with_case(expect=[]), "cases.0.expect", "at least one assertion"),
    ("a misspelt case field", with_case(expcet=[]), "cases.0.expcet", "did you mean 'expect'?"),
    (
        "unknown tool in tool_called",
        with_case(expect=[{"tool_called": "calculater"}]),
        "cases.0.expect.0.tool_called",
        "unknown tool 'calculater' (did you mean 'calculator'? "
        "available: calculator, current_time)",
    ),
    (
        "unknown tool in a tool_called mapping",
        with_case(expect=[{"not_tool_called": {"name": "web_search"}}]),
        "cases.0.expect.0.not_tool_called.name",
        "unknown tool 'web_search'",
    ),
    (
        "a misspelt key in a tool_called mapping",
        with_case(expect=[{"tool_called": {"name": "calculator", "arg": {}}}]),
        "cases.0.expect.0.tool_called.arg",
        "did you mean 'args'?",
    ),
    (
        "unknown tool under tools",
        {"tools": {"calculater": [{"input": {}, "expected": "1"}]}},
        "tools.calculater",
        "did you mean 'calculator'?",
    ),
    (
        "a tool case both expecting a result and an error",
        {"tools": {"calculator": [{"input": {}, "expected": "1", "error": True}]}},
        "tools.calculator.0",
        "not both",
    ),
    (
        "an invalid JSON schema",
        with_case(expect=[{"json_schema": {"type": "objekt"}}]),
        "cases.0.expect.0.json_schema",
        "not a valid JSON schema",
    ),
    (
        "a JSON schema that is not a mapping",
        with_case(expect=[{"json_schema": "object"}]),
        "cases.0.expect.0.json_schema",
        "mapping",
    ),
    (
        "an invalid regex",
        with_case(expect=[{"regex": "(unclosed"}]),
        "cases.0.expect.0.regex",
        "not a valid regular expression",
    ),
    (
        "a cost limit that is not a number",
        with_case(expect=[{"max_cost_usd": "cheap"}]),
        "cases.0.expect.0.max_cost_usd",
        "valid number",
    ),
    (
        "a negative cost limit",
        with_case(expect=[{"max_cost_usd": -1}]),
        "cases.0.expect.0.max_cost_usd",
        "greater than or equal to 0",
    ),
    (
        "an empty contains",
        with_case(expect=[{"contains": ""}]),
        "cases.0.expect.0.contains",
        "at least 1 character",
    ),
    ("threshold above 1", {**ONE_CASE, "threshold": 1.5}, "threshold", "less than or equal to 1"),
    ("threshold below 0", {**ONE_CASE, "threshold": -0.1}, "threshold", "greater than or equal"),
    ("one consistency run", {**ONE_CASE, "consistency": {"runs": 1}}, "consistency.runs", "2"),
    ("11 consistency runs", {**ONE_CASE, "consistency": {"runs": 11}}, "consistency.runs", "10"),
    ("a misspelt top-level field", {"treshold": 0.5}, "treshold", "did you mean 'threshold'?"),
    (
        "a JSON schema with a $ref to nowhere",
        with_case(expect=[{"json_schema": {"$ref": "#/$defs/missing"}}]),
        "cases.0.expect.0.json_schema",
        "$ref '#/$defs/missing' cannot be resolved; only references to a part of this schema",
    ),
    (
        "a JSON schema with a remote $ref",
        with_case(expect=[{"not_json_schema": {"$ref": "https://example.com/s.json"}}]),
        "cases.0.expect.0.not_json_schema",
        "$ref 'https://example.com/s.json' cannot be resolved",
    ),
    (
        "a JSON schema whose $refs loop",
        with_case(expect=[{"json_schema": {"$ref": "#"}}]),
        "cases.0.expect.0.json_schema",
        "its $refs lead back to themselves without end",
    ),
    ("an infinite weight", with_case(weight=float("inf")), "cases.0.weight", "finite number"),
    (
        "a consistent case in a suite that asks each case once",
        with_case(consistent=True),
        "cases.0.consistent",
        "add `consistency: {runs: 3}`",
    ),
    (
        "nesting deeper than 50 levels",
        with_case(expect=[{"json_schema": deep(60)}]),
        "cases",
        "nested more than 50 levels deep; flatten it",
    ),
]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [pytest.param(spec, field, words, id=name) for name, spec, field, words in BAD_SUITES],
)
def test_a_bad_suite_is_refused_naming_the_field(
    tmp_path: Path, spec: Any, field: str, words: str
) -> None:
    message = refusal(tmp_path, spec)
    assert f"field '{field}':" in message
    assert words in message


# --- grading one turn --------------------------------------------------------------------------

CALCULATOR_CALL = ("calculator", json.dumps({"expression": "2+2", "precision": 2}))

# (assertion, an observation it passes on, one it fails on, the failure's reason)
GRADING: list[tuple[Assertion, Observed, Observed, str]] = [
    (
        expecting(Contains(text="network")),
        observed("Category: NETWORK"),
        observed("category: hardware"),
        "answer does not contain 'network'",
    ),
    (
        expecting(Equals(text="category: network")),
        observed("  category: network\n"),
        observed("Category: network"),
        "answer is 'Category: network', not 'category: network'",
    ),
    (
        expecting(SameAs(text="Category: network")),
        observed("category:   NETWORK "),
        observed("category: hardware"),
        "answer is 'category: hardware', not 'Category: network' (ignoring case and spacing)",
    ),
    (
        expecting(Regex(pattern=r"^category: \w+$")),
        observed("Sure.\ncategory: network"),
        observed("category: two words"),
        "answer does not match '^category: \\\\w+$'",
    ),
    (
        expecting(JsonSchema(schema={"type": "object", "required": ["category"]})),
        observed('```json\n{"category": "network"}\n```'),
        observed('{"kind": "network"}'),
        "answer does not match the JSON schema (at the top level: 'category' is a required",
    ),
    (
        expecting(ToolCalled(name="calculator")),
        observed(tool_calls=(CALCULATOR_CALL,)),
        observed(tool_calls=(("current_time", "{}"),)),
        "calculator was not called (calls: current_time)",
    ),
    (
        expecting(MaxCostUsd(limit=0.01)),
        observed(cost_usd=0.01),
        observed(cost_usd=0.02),
        "cost $0.02 is over the $0.01 limit",
    ),
    (
        expecting(MaxLatencyMs(limit=5000)),
        observed(latency_ms=5000.0),
        observed(latency_ms=6200.4),
        "latency 6200 ms is over the 5000 ms limit",
    ),
]


@pytest.mark.parametrize(
    ("assertion", "passing", "failing", "reason"),
    [pytest.param(*row, id=row[0].statement.kind) for row in GRADING],
)
async def test_each_kind_passes_and_fails_on_the_right_turns(
    assertion: Assertion, passing: Observed, failing: Observed, reason: str
) -> None:
    assert (await grade(assertion, passing))[0] is True
    passed, why = await grade(assertion, failing)
    assert passed is False
    assert why.startswith(reason)


@pytest.mark.parametrize(
    ("assertion", "passing", "failing", "reason"),
    [pytest.param(*row, id=row[0].statement.kind) for row in GRADING],
)
async def test_negation_flips_each_kind_and_says_what_was_seen(
    assertion: Assertion, passing: Observed, failing: Observed, reason: str
) -> None:
    negated = expecting(assertion.statement, negated=True)
    assert negated.describe() == "not " + assertion.describe()
    assert (await grade(negated, failing)) == (True, (await grade(assertion, failing))[1])
    passed, why = await grade(negated, passing)
    assert passed is False
    assert why == (await grade(assertion, passing))[1]


async def test_a_negated_contains_reads_plainly() -> None:
    assert await grade(expecting(Contains(text="sorry"), negated=True), observed("Sorry, no.")) == (
        False,
        "answer contains 'sorry'",
    )


@pytest.mark.parametrize(
    ("args", "called", "passed"),
    [
        pytest.param({"expression": "2+2"}, CALCULATOR_CALL, True, id="subset"),
        pytest.param({}, CALCULATOR_CALL, True, id="empty-args"),
        pytest.param({"expression": "2+3"}, CALCULATOR_CALL, False, id="other-value"),
        pytest.param({"missing": 1}, CALCULATOR_CALL, False, id="missing-key"),
        pytest.param({"a": {"b": 1}}, ("calculator", '{"a": {"b": 1, "c": 2}}'), True, id="deep"),
        pytest.param({"a": [1, 2]}, ("calculator", '{"a": [1, 2, 3]}'), False, id="list-length"),
        pytest.param({"a": 1}, ("calculator", '{"a": true}'), False, id="bool-is-not-int"),
        pytest.param({"a": 1}, ("calculator", '{"a": 1.0}'), True, id="int-equals-float"),
        pytest.param({"a": 1}, ("calculator", "{not json"), False, id="bad-json"),
    ],
)
async def test_tool_called_matches_a_subset_of_the_arguments(
    args: dict[str, Any], called: tuple[str, str], passed: bool
) -> None:
    assertion = expecting(ToolCalled(name="calculator", args=args))
    result, reason = await grade(assertion, observed(tool_calls=(called,)))
    assert result is passed
    if not passed:
        assert reason.startswith(f"calculator was not called with {json.dumps(args)} (got ")


async def test_tool_called_with_args_passes_when_any_call_matches() -> None:
    assertion = expecting(ToolCalled(name="calculator", args={"x": 2}))
    calls = (("calculator", '{"x": 1}'), ("calculator", '{"x": 2}'))
    assert await grade(assertion, observed(tool_calls=calls)) == (
        True,
        'calculator was called with {"x": 2}',
    )


@pytest.mark.parametrize("negated", [False, True])
async def test_an_unpriced_turn_fails_max_cost_either_way(negated: bool) -> None:
    assertion = expecting(MaxCostUsd(limit=1.0), negated=negated)
    passed, reason = await grade(assertion, observed(cost_usd=None))
    assert passed is False
    assert "unpriced" in reason


async def test_a_failed_turn_fails_every_assertion_with_the_failure() -> None:
    case = case_of(
        expecting(Contains(text="network")),
        expecting(Contains(text="sorry"), negated=True),
        expecting(LlmJudge(rubric="Is polite.")),
    )
    failure = "The model did not answer in time. Please try again."
    outcomes = await check(case, observed(failed=failure), judge=None)
    assert [(o.passed, o.reason) for o in outcomes] == [(False, f"the turn failed: {failure}")] * 3
    assert not case_passed(outcomes)


@pytest.mark.parametrize("negated", [False, True])
async def test_a_judge_assertion_without_a_judge_fails(negated: bool) -> None:
    passed, reason = await grade(
        expecting(LlmJudge(rubric="Is polite."), negated=negated), observed("ok")
    )
    assert (passed, reason) == (False, "no judge configured")


async def test_the_judge_sees_rubric_question_and_answer() -> None:
    seen: list[tuple[str, str, str]] = []

    async def judge(rubric: str, question: str, answer: str) -> tuple[bool, str]:
        seen.append((rubric, question, answer))
        return "one" in answer, "names one category" if "one" in answer else "names two"

    case = EvalCase(
        name="talk",
        turns=(("user", "hi"), ("assistant", "hello"), ("user", "VPN drops")),
        weight=1,
        expect=(expecting(LlmJudge(rubric="Names one category.")),),
    )
    [good] = await check(case, observed("one: network"), judge=judge)
    [bad] = await check(case, observed("two: network, vpn"), judge=judge)
    assert (good.passed, good.reason) == (True, "judge passed it: names one category")
    assert (bad.passed, bad.reason) == (False, "judge failed it: names two")
    assert seen[0] == ("Names one category.", "VPN drops", "one: network")


async def test_a_case_passes_only_when_every_assertion_holds() -> None:
    case = case_of(expecting(Contains(text="network")), expecting(MaxLatencyMs(limit=1000.0)))
    assert case_passed(await check(case, observed("network", latency_ms=10.0), judge=None))
    assert not case_passed(await check(case, observed("network", latency_ms=2000.0), judge=None))
    assert not case_passed([])


@given(text=st.text(max_size=40), needle=st.text(min_size=1, max_size=5))
def test_not_contains_is_always_the_opposite_of_contains(text: str, needle: str) -> None:
    plain = asyncio.run(grade(expecting(Contains(text=needle)), observed(text)))
    negated = asyncio.run(grade(expecting(Contains(text=needle), negated=True), observed(text)))
    assert plain[0] is not negated[0]
    assert plain[1] == negated[1]


def test_constructing_a_case_wrongly_is_refused() -> None:
    with pytest.raises(ValueError, match="last turn must be the user's"):
        EvalCase(name="x", turns=(("user", "hi"), ("assistant", "hello")), weight=1, expect=())


# --- a kind is one class -----------------------------------------------------------------------

# For every kind in the registry: a value it reads and a value it refuses. A kind added to KINDS
# without a row here fails `test_every_registered_kind_has_samples`.
SAMPLES: dict[str, tuple[Any, Any]] = {
    "contains": ("network", ""),
    "equals": ("category: network", ["a", "list"]),
    "same_as": ("Category: network", {"a": "mapping"}),
    "regex": ("^category", "(unclosed"),
    "json_schema": ({"type": "object"}, {"type": "objekt"}),
    "tool_called": ({"name": "calculator", "args": {"expression": "2+2"}}, "calculater"),
    "max_cost_usd": (0.01, "cheap"),
    "max_latency_ms": (5000, 0),
    "judge": ("Names one category.", ""),
    "cites": ("network.md#VPN", "network.md#"),
}


async def polite_judge(rubric: str, question: str, answer: str) -> tuple[bool, str]:
    return True, "fine"


def test_every_registered_kind_has_samples() -> None:
    assert SAMPLES.keys() == KINDS.keys()


@pytest.mark.parametrize("kind", list(KINDS))
async def test_every_kind_reads_refuses_describes_and_negates(tmp_path: Path, kind: str) -> None:
    good, bad = SAMPLES[kind]
    spec = with_case(expect=[{kind: good}, {f"not_{kind}": good}])
    suite = load_suite(write_suite(tmp_path, spec), prompt="assistant", known_tools=KNOWN_TOOLS)
    plain, negated = suite.cases[0].expect
    assert type(plain.statement) is KINDS[kind] and plain.statement == negated.statement
    assert plain.describe().startswith(f"{kind} ")
    assert negated.describe() == f"not {plain.describe()}"

    seen = observed("category: network", tool_calls=(CALCULATOR_CALL,))
    held, flipped = await check(suite.cases[0], seen, judge=polite_judge)
    assert held.reason and held.reason == flipped.reason
    assert held.passed != flipped.passed or not (held.passed or flipped.passed)

    message = refusal(tmp_path, with_case(expect=[{kind: bad}]))
    assert f"field 'cases.0.expect.0.{kind}" in message


@dataclass(frozen=True, kw_only=True)
class StartsWith(Statement):
    """A kind written here exactly as a new one is written in assertions.py."""

    kind: ClassVar[str] = "starts_with"
    prefix: str

    @classmethod
    def parse(cls, source: Source, field: str, value: Any) -> Self:
        if not isinstance(value, str) or not value:
            raise source.error(field, "expected some text")
        return cls(prefix=value)

    async def check(self, observed: Observed, context: CheckContext) -> Finding:
        held = observed.text.startswith(self.prefix)
        verb = "starts" if held else "does not start"
        return Finding(held=held, text=f"answer {verb} with {self.prefix!r}")

    def describe(self) -> str:
        return f"{self.kind} {self.prefix!r}"


async def test_a_new_kind_needs_only_its_class_in_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(KINDS, StartsWith.kind, StartsWith)  # as if listed in KINDS
    spec = with_case(expect=[{"starts_with": "category"}, {"not_starts_with": "sorry"}])
    suite = load_suite(write_suite(tmp_path, spec), prompt="assistant", known_tools=KNOWN_TOOLS)
    [case] = suite.cases
    assert [a.describe() for a in case.expect] == [
        "starts_with 'category'",
        "not starts_with 'sorry'",
    ]

    outcomes = await check(case, observed("category: network"), judge=None)
    assert [(o.passed, o.reason) for o in outcomes] == [
        (True, "answer starts with 'category'"),
        (True, "answer does not start with 'sorry'"),
    ]
    [failed] = await check(case_of(case.expect[0]), observed("Sorry."), judge=None)
    assert (failed.passed, failed.reason) == (False, "answer does not start with 'category'")

    misspelt = refusal(tmp_path, with_case(expect=[{"start_with": "x"}]))
    assert "did you mean 'starts_with'?" in misspelt
    assert "starts_with, each also as not_KIND" in misspelt
    empty = refusal(tmp_path, with_case(expect=[{"not_starts_with": ""}]))
    assert "field 'cases.0.expect.0.not_starts_with': expected some text" in empty


def test_the_documented_suite_loads_and_shows_every_kind(tmp_path: Path) -> None:
    evals_section = DOCS.read_text(encoding="utf-8").split("\n## Evals\n", 1)[1]
    example = evals_section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = write_suite(tmp_path, {})
    path.write_text(example, encoding="utf-8")
    suite = load_suite(path, prompt="assistant", known_tools=KNOWN_TOOLS)
    shown = {a.statement.kind for case in suite.cases for a in case.expect}
    assert shown == set(KINDS)


# --- scoring -----------------------------------------------------------------------------------


def test_weighted_pass_rate_counts_weight_not_cases() -> None:
    heavy = EvalCase(name="heavy", turns=(("user", "q"),), weight=3, expect=())
    light = EvalCase(name="light", turns=(("user", "q"),), weight=1, expect=())
    assert weighted_pass_rate([(heavy, True), (light, False)]) == 0.75
    assert weighted_pass_rate([(heavy, False), (light, True)]) == 0.25
    assert weighted_pass_rate([(heavy, True), (light, True)]) == 1.0
    assert weighted_pass_rate([]) == 0.0


def test_a_suite_passes_at_its_threshold(tmp_path: Path) -> None:
    suite = load_suite(
        write_suite(tmp_path, FULL_SUITE), prompt="assistant", known_tools=KNOWN_TOOLS
    )
    assert suite.passes(0.8)
    assert not suite.passes(0.79)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["Category: network"], 1.0),
        (["Category: network", "category:  NETWORK", " category: network\n"], 1.0),
        (["network", "Network", "hardware"], 2 / 3),
        (["a", "b", "c", "a"], 0.5),
        (["a", "b", "c"], 1 / 3),
        ([], 0.0),
    ],
)
def test_agreement_is_the_share_of_the_most_common_answer(
    answers: list[str], expected: float
) -> None:
    assert agreement(answers) == pytest.approx(expected)


@given(st.lists(st.text(max_size=10), min_size=1, max_size=10))
def test_agreement_is_between_one_over_k_and_one(answers: list[str]) -> None:
    assert 1 / len(answers) <= agreement(answers) <= 1.0


@given(st.text())
def test_normalized_is_idempotent(text: str) -> None:
    assert normalized(normalized(text)) == normalized(text)


def test_normalized_ignores_case_and_spacing() -> None:
    assert normalized("  Hello\n\tWORLD  ") == "hello world"


# --- tool cases and the self-check -------------------------------------------------------------

ADD = ToolCase(tool="calculator", arguments={"expression": "2+3"}, expected="5", error=False)
DIVIDE = ToolCase(tool="calculator", arguments={"expression": "1/0"}, expected=None, error=True)
RUNS = ToolCase(tool="calculator", arguments={"expression": "1"}, expected=None, error=False)


@pytest.mark.parametrize(
    ("case", "result", "error", "passed", "reason"),
    [
        (ADD, " 5\n", None, True, "calculator returned '5'"),
        (ADD, "6", None, False, "calculator returned '6', not '5'"),
        (ADD, None, "ZeroDivisionError: x", False, "calculator raised: ZeroDivisionError: x"),
        (
            DIVIDE,
            None,
            "ZeroDivisionError",
            True,
            "calculator raised as expected: ZeroDivisionError",
        ),
        (DIVIDE, "inf", None, False, "calculator should raise but returned 'inf'"),
        (RUNS, "1", None, True, "calculator returned '1'"),
        (RUNS, None, "boom", False, "calculator raised: boom"),
    ],
)
def test_check_tool_case(
    case: ToolCase, result: str | None, error: str | None, passed: bool, reason: str
) -> None:
    outcome = check_tool_case(case, result, error)
    assert (outcome.passed, outcome.reason) == (passed, reason)


async def test_self_check_cases_expect_each_example_answer() -> None:
    cases = self_check_cases([("What's 15% of 240?", "36"), ("Hi", "Hello there.")])
    assert [c.name for c in cases] == ["self-check-1", "self-check-2"]
    assert [c.question for c in cases] == ["What's 15% of 240?", "Hi"]
    assert [c.expect[0].describe() for c in cases] == ["same_as '36'", "same_as 'Hello there.'"]

    assert case_passed(await check(cases[1], observed("  hello THERE. "), judge=None))
    [outcome] = await check(cases[0], observed("It is 36."), judge=None)
    assert (outcome.passed, outcome.reason) == (
        False,
        "answer is 'It is 36.', not '36' (ignoring case and spacing)",
    )
    assert self_check_cases([]) == []


def test_a_regex_nested_past_the_regex_parser_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, with_case(expect=[{"regex": "(" * 1000 + ")" * 1000}]))
    assert message.endswith(
        ": too deeply nested to check (a pattern, template or schema in it); simplify it"
    )
