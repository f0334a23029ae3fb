"""Hostile input, generated (issue 11): whatever text a user types, the grammar gives a typed
command or a usage error, and a real `AdminCommands` always answers; whatever a prompt or suite
file holds, the loader gives versions or one refusal that starts with the file's path."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.admin.commands import AdminCommands, CommandResult
from assistant.admin.grammar import (
    Command,
    CommandContext,
    UsageError,
    check_numbers,
    parse,
)
from assistant.evals.suite import SUITE_FILE, EvalFileError, load_suites
from assistant.prompts.files import PromptFileError, load_prompts_dir
from assistant.turns import Actor, ConversationRef

KNOWN_TOOLS = ["current_time", "calculator"]

# --- the command grammar -------------------------------------------------------------------------

ODD_WORDS = [
    "²",
    "٣",
    "\uff11",  # FULLWIDTH DIGIT ONE
    "0",
    "00",
    "1",
    "2147483647",
    "2147483648",
    "9" * 5000,
    "99999999999999999999",
    "2=²",
    "٣=10",
    "2=90",
    "3=10",
    "3=101",
    "2=" + "9" * 400,
    "=",
    "'",
    '"',
    "\\",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "--scope",
    "--target",
    "--force",
    "slack/T1/C1",
    "global",
    "workspace",
]
COMMAND_WORDS = [
    "/assistant",
    "prompt",
    "list",
    "show",
    "diff",
    "use",
    "rollback",
    "ab",
    "history",
    "eval",
    "run",
    "report",
    "7d",
    "assistant",
]
WORD = st.one_of(
    st.sampled_from(ODD_WORDS + COMMAND_WORDS),
    st.text(st.characters(categories=["Nd", "No", "Cc", "Zs"]), min_size=1, max_size=6),
    st.text(max_size=12),
)
COMMAND_TEXT = st.one_of(
    st.text(max_size=120),
    st.lists(WORD, max_size=8).map(" ".join),
    st.tuples(st.sampled_from(COMMAND_WORDS[:11]), st.lists(WORD, max_size=6)).map(
        lambda parts: " ".join(["prompt", parts[0], *parts[1]])
    ),
)


def outcome(text: str) -> Command | UsageError:
    try:
        return parse(text)
    except UsageError as exc:  # anything else escapes and fails the test
        return exc


@settings(max_examples=600, deadline=None)
@given(COMMAND_TEXT)
def test_parse_gives_a_typed_command_within_bounds_or_a_usage_error(text: str) -> None:
    result = outcome(text)
    if isinstance(result, UsageError):
        assert str(result)
    else:
        check_numbers(result)  # what parsing gives is never refused for its numbers


SHELL = CommandContext(actor=Actor(platform="cli", user_id="ops"), surface="cli")
STRANGER = CommandContext(
    actor=Actor(platform="slack", user_id="U9"),
    surface="slack",
    ref=ConversationRef(platform="slack", workspace="T1", channel="C1"),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=COMMAND_TEXT, context=st.sampled_from([SHELL, STRANGER]))
async def test_admin_commands_always_answer_on_a_real_store(
    make_assistant: Any, store: Any, text: str, context: CommandContext
) -> None:
    assistant = await make_assistant()
    commands = AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=())

    result = await commands.run(text, context)

    assert isinstance(result, CommandResult)
    assert result.text
    assert "The command failed" not in result.text  # on a healthy store, nothing fails inside


# --- prompt files --------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(["assistant", "1", "gpt-4o-mini", "calculator", "$ref", "#/$defs/x"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
TEMPLATES = st.lists(
    st.sampled_from(
        [
            "You help {{ user_name }}.",
            "{{ today }}",
            "{{ now | upper }}",
            "{{ platform.nope() }}",
            "{{ 1/0 }}",
            "{{ today | nosuchfilter }}",
            "{% if platform == 'slack' %}Slack{% endif %}",
            "{% for i in range(3) %}{{ i }}{% endfor %}",
            "{% include 'x' %}",
            "{{ 'ab' * 10**9 }}",
            "{{ 2 ** 10 }}",
            "{{ customer }}",
            "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
            "{{",
            "{% endfor %}",
            "word " * 50,
        ]
    ),
    min_size=1,
    max_size=4,
).map("".join)


def nested(levels: int, leaf: Any) -> Any:
    for level in range(levels):
        leaf = [leaf] if level % 2 else {"properties": {"a": leaf}}
    return leaf


DEEP = st.builds(nested, st.integers(min_value=0, max_value=120), VALUES)
SCHEMAS = st.one_of(
    VALUES,
    DEEP,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["object", "string", "objekt"])},
        optional={
            "$ref": st.sampled_from(["#", "#/$defs/a", "#/$defs/missing", "https://x.test/s"]),
            "$defs": st.fixed_dictionaries({"a": st.sampled_from([{}, {"$ref": "#"}, True])}),
            "properties": st.dictionaries(st.text(max_size=5), st.just({"$ref": "#"})),
        },
    ),
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(st.just("assistant"), VALUES),
    "version": st.one_of(st.just(1), st.integers(), VALUES),
    "description": VALUES,
    "model": st.one_of(st.sampled_from(["gpt-4o-mini", "no-such-model"]), VALUES),
    "params": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                key: st.one_of(st.integers(), st.floats(), VALUES)
                for key in ("temperature", "top_p", "seed", "max_tokens", "presence_penalty")
            },
        ),
        VALUES,
    ),
    "system": st.one_of(TEMPLATES, VALUES),
    "examples": st.one_of(
        st.lists(st.fixed_dictionaries({"user": st.text(), "assistant": st.text()}), max_size=3),
        VALUES,
    ),
    "tools": st.one_of(st.lists(st.sampled_from([*KNOWN_TOOLS, "web_search"])), VALUES),
    "response_schema": SCHEMAS,
    "memory": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "context_tokens": st.one_of(st.integers(), VALUES),
                "summarize_over_tokens": st.integers(),
            },
        ),
        VALUES,
    ),
    "cache": VALUES,
}
VALID = {"name": "assistant", "version": 1, "system": "You help {{ user_name }}."}
ONE_FIELD_CHANGED = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda key: FIELDS[key].map(lambda value: {**VALID, key: value})
)
PROMPT_DOCUMENTS = st.one_of(
    ONE_FIELD_CHANGED,  # so that the checks after the first refusal are reached too
    st.fixed_dictionaries({}, optional=FIELDS).map(lambda fields: {**VALID, **fields}),
    st.fixed_dictionaries({}, optional={**FIELDS, "sytem": VALUES, "extra": DEEP}),
    VALUES,
    DEEP,
)
YAML_PIECES = st.sampled_from(
    [
        "name: assistant\n",
        "version: 1\n",
        "system: hi\n",
        "system: &s [*s]\n",
        "examples: &e [*e, *e]\n",
        "response_schema: {$ref: '#'}\n",
        "response_schema: !!set {a, b}\n",
        "response_schema: {const: 2025-01-31}\n",
        "memory: {context_tokens: 1e400}\n",
        "!!python/object/apply:os.system ['true']\n",
        "!!binary aGk=\n",
        "[" * 300,
        "{a: " * 60,
        "? [a, b]\n: c\n",
        "---\n",
        "\t",
        "\x00",
        "\ufeff",
        "version: 99999999999999999999999\n",
        "version: " + "9" * 5000 + "\n",
        "description: 2025-13-45\n",
        "description: !!timestamp 2001-12-14t21:59:43.10-99:99\n",
    ]
)
PROMPT_TEXTS = st.one_of(
    PROMPT_DOCUMENTS.map(lambda document: yaml.safe_dump(document, allow_unicode=True)),
    st.lists(YAML_PIECES, max_size=6).map("".join),
)


def refusal_or_none(load: Any, path: Path, error: type[Exception]) -> str | None:
    """Load; None when it loads, else the refusal, which must be `error` (anything else
    escapes and fails the test) and start with the file's path."""
    try:
        load()
    except error as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        return message
    return None


@settings(max_examples=250, deadline=None)
@given(PROMPT_TEXTS)
def test_a_prompt_file_loads_or_is_refused_by_its_path(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "assistant" / "1.yaml"
        path.parent.mkdir()
        path.write_text(text, encoding="utf-8")

        def load() -> None:
            load_prompts_dir(Path(folder), known_tools=KNOWN_TOOLS)

        refusal_or_none(load, path, PromptFileError)


ASSERTIONS = st.dictionaries(
    st.sampled_from(["contains", "not_json_schema", "json_schema", "max_cost_usd", "x"]),
    SCHEMAS,
    min_size=1,
    max_size=1,
)
PATTERNS = st.fixed_dictionaries(
    {"regex": st.one_of(st.text(max_size=10), st.sampled_from(["(" * 1000 + ")" * 1000, "(x"]))}
)
SUITE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "threshold": VALUES,
    "consistency": st.one_of(st.fixed_dictionaries({"runs": st.integers()}), VALUES),
    "self_check": VALUES,
    "cases": st.one_of(
        st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["one", "two", "Bad name"])},
                optional={
                    "input": VALUES,
                    "weight": st.one_of(st.floats(), VALUES),
                    "expect": st.lists(st.one_of(ASSERTIONS, PATTERNS), max_size=2),
                },
            ),
            max_size=3,
        ),
        DEEP,
    ),
    "tools": st.one_of(st.dictionaries(st.sampled_from(KNOWN_TOOLS), VALUES), VALUES),
}


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional=SUITE_FIELDS))
def test_a_suite_file_loads_or_is_refused_by_its_path(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "assistant" / SUITE_FILE
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")

        def load() -> None:
            load_suites(Path(folder), known_tools=KNOWN_TOOLS)

        refusal_or_none(load, path, EvalFileError)
