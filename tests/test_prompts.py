"""Prompt files: the shipped one loads; a bad file is refused naming the file and the field."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from assistant.prompts.files import (
    PromptCatalog,
    PromptFileError,
    load_prompt_file,
    load_prompts_dir,
)
from tests.conftest import BASE_PROMPT, write_prompt

KNOWN_TOOLS = ["current_time", "calculator"]
NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


def refusal(path: Path) -> str:
    with pytest.raises(PromptFileError) as excinfo:
        load_prompt_file(path, known_tools=KNOWN_TOOLS)
    message = str(excinfo.value)
    assert str(path) in message
    return message


def test_missing_system(tmp_path: Path) -> None:
    path = write_prompt(tmp_path)
    spec = {key: value for key, value in BASE_PROMPT.items() if key != "system"}
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert "field 'system'" in refusal(path)


def test_bad_temperature(tmp_path: Path) -> None:
    path = write_prompt(tmp_path, params={"temperature": "hot"})
    assert "field 'params.temperature'" in refusal(path)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write_prompt(tmp_path, sytem="You are helpful.")
    assert "field 'sytem'" in refusal(path)


def test_unknown_template_variable(tmp_path: Path) -> None:
    path = write_prompt(tmp_path, system="Hello {{ customer }}.")
    message = refusal(path)
    assert "field 'system'" in message
    assert "customer" in message


def test_file_name_must_match_version(tmp_path: Path) -> None:
    path = write_prompt(tmp_path)
    renamed = path.rename(path.with_name("2.yaml"))
    message = refusal(renamed)
    assert "field 'version'" in message
    assert "1.yaml" in message


def test_folder_must_match_name(tmp_path: Path) -> None:
    path = write_prompt(tmp_path)
    moved = tmp_path / "helper" / "1.yaml"
    moved.parent.mkdir()
    path.rename(moved)
    assert "field 'name'" in refusal(moved)


def test_unknown_tool_lists_available_ones(tmp_path: Path) -> None:
    path = write_prompt(tmp_path, tools=["calculator", "web_search"])
    message = refusal(path)
    assert "field 'tools'" in message
    assert "web_search" in message
    assert "calculator, current_time" in message


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write_prompt(tmp_path)
    path.write_text("name: assistant\nsystem: [unclosed\n", encoding="utf-8")
    assert "not valid YAML" in refusal(path)


def test_yaml_list_instead_of_mapping(tmp_path: Path) -> None:
    path = write_prompt(tmp_path)
    path.write_text("- name: assistant\n- version: 1\n", encoding="utf-8")
    assert "expected a mapping" in refusal(path)


def test_default_prompt_chosen_by_name(tmp_path: Path) -> None:
    write_prompt(tmp_path)
    write_prompt(tmp_path, name="support")
    files = load_prompts_dir(tmp_path, known_tools=KNOWN_TOOLS)
    catalog = PromptCatalog(files, default_prompt="support")
    assert catalog.default_name == "support"


def test_single_prompt_is_the_default_whatever_the_setting(tmp_path: Path) -> None:
    write_prompt(tmp_path, name="support")
    catalog = PromptCatalog(
        load_prompts_dir(tmp_path, known_tools=KNOWN_TOOLS), default_prompt="assistant"
    )
    assert catalog.default_name == "support"


def test_ambiguous_default_names_the_setting(tmp_path: Path) -> None:
    write_prompt(tmp_path, name="support")
    write_prompt(tmp_path, name="sales")
    files = load_prompts_dir(tmp_path, known_tools=KNOWN_TOOLS)
    with pytest.raises(PromptFileError, match=r"DEFAULT_PROMPT.*'assistant'.*sales, support"):
        PromptCatalog(files, default_prompt="assistant")


def test_latest_picks_the_highest_version(tmp_path: Path) -> None:
    for version in (1, 3, 2):
        write_prompt(
            tmp_path, version=version, system=f"Version {version} for {{{{ user_name }}}}."
        )
    catalog = PromptCatalog(
        load_prompts_dir(tmp_path, known_tools=KNOWN_TOOLS), default_prompt="assistant"
    )
    latest = catalog.latest("assistant").version
    assert latest.version == 3
    assert latest.render_system(now=NOW, platform="cli", user_name="Bo") == "Version 3 for Bo."
    assert catalog.names() == {"assistant": [1, 2, 3]}


def test_content_hash_follows_the_file_text(tmp_path: Path) -> None:
    path = write_prompt(tmp_path)
    first = load_prompt_file(path, known_tools=KNOWN_TOOLS).content_hash
    assert load_prompt_file(path, known_tools=KNOWN_TOOLS).content_hash == first
    path.write_text("# reworded\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_prompt_file(path, known_tools=KNOWN_TOOLS).content_hash != first


def test_a_misspelt_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    spec = {k: v for k, v in BASE_PROMPT.items() if k != "system"}
    path = tmp_path / "assistant" / "1.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({**spec, "sytem": "You are helpful."}))
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file(path, known_tools=["current_time", "calculator"])
    assert str(path) in str(caught.value)
    assert "field 'sytem': unknown field (did you mean 'system'?)" in str(caught.value)


# --- hostile files (issue 11): each is refused at load, naming the file and the field ------------


@pytest.mark.parametrize(
    ("system", "says"),
    [
        ("{{ today | nosuchfilter }}", "template error on line 1: No filter named 'nosuchfilter'"),
        ("{{ today.nope() }}", "fails when rendered (UndefinedError: 'str object' has no attrib"),
        ("{{ 1/0 }}", "fails when rendered (ZeroDivisionError: division by zero)"),
        ("{{ user_name.first.last }}", "fails when rendered (UndefinedError"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "it calls itself without end"),
        ("{% include 'other.txt' %}", "{% include %} is not available; a prompt is one file"),
        ("{% extends 'base.txt' %}", "{% extends %} is not available"),
        ("{{ 'ab' * 10**9 }}", "'*' would make more than 1,000,000 characters or items"),
        ("{{ 9 ** (9 ** 9) }}", "'**' would make a number of more than 100,000 bits"),
    ],
)
def test_a_template_that_would_fail_on_every_turn_is_refused(
    tmp_path: Path, system: str, says: str
) -> None:
    message = refusal(write_prompt(tmp_path, system=system))
    assert "field 'system': " in message
    assert says in message


def test_a_template_that_renders_loads_with_arithmetic_within_bounds(tmp_path: Path) -> None:
    path = write_prompt(tmp_path, system="{{ '-' * 3 }} {{ 2 ** 10 }} for {{ user_name }}")
    prompt = load_prompt_file(path, known_tools=KNOWN_TOOLS).version
    assert prompt.render_system(now=NOW, platform="cli", user_name="Bo") == "--- 1024 for Bo"


@pytest.mark.parametrize("version", [2**31, 2**63 + 1, 10**30])
def test_a_version_beyond_a_database_integer_is_refused(tmp_path: Path, version: int) -> None:
    message = refusal(write_prompt(tmp_path, version=version))
    assert "field 'version': Input should be less than or equal to 2147483647" in message


def test_the_largest_version_loads(tmp_path: Path) -> None:
    path = write_prompt(tmp_path, version=2**31 - 1)
    assert load_prompt_file(path, known_tools=KNOWN_TOOLS).version.version == 2**31 - 1


def test_a_seed_the_api_cannot_take_is_refused(tmp_path: Path) -> None:
    message = refusal(write_prompt(tmp_path, params={"seed": 2**64}))
    assert "field 'params.seed': Input should be less than or equal to" in message


def test_deep_nesting_is_refused_by_field(tmp_path: Path) -> None:
    schema: dict[str, object] = {"type": "object"}
    for _ in range(60):
        schema = {"type": "object", "properties": {"a": schema}}
    message = refusal(write_prompt(tmp_path, response_schema=schema))
    assert "field 'response_schema': nested more than 50 levels deep" in message


@pytest.mark.parametrize(
    "text",
    [
        "system: " + "[" * 5000 + "]" * 5000 + "\n",  # the YAML parser itself would recurse
        "name: assistant\nversion: 1\nsystem: hi\nexamples: &a [*a]\n",  # contains itself
    ],
)
def test_nesting_that_would_recurse_without_end_is_refused(tmp_path: Path, text: str) -> None:
    path = write_prompt(tmp_path)
    path.write_text(text, encoding="utf-8")
    assert "nested more than 50 levels deep; flatten it" in refusal(path)


def test_aliases_that_multiply_values_are_refused(tmp_path: Path) -> None:
    path = write_prompt(tmp_path)
    lines = ["name: assistant", "version: 1", "system: hi", "a0: &a0 [x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 9)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert "more than 100,000 values" in refusal(path)


def test_a_fifo_named_like_a_version_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "assistant" / "1.yaml"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with pytest.raises(PromptFileError) as caught:
        load_prompts_dir(tmp_path, known_tools=KNOWN_TOOLS)
    assert str(caught.value) == (
        f"{fifo}: is a named pipe (FIFO), not a regular file; put a plain YAML file here"
    )


def test_a_folder_or_a_device_named_like_a_version_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "assistant" / "1.yaml"
    folder.mkdir(parents=True)
    assert "is a folder, not a regular file" in refusal(folder)
    device = tmp_path / "assistant" / "2.yaml"
    device.symlink_to("/dev/zero")
    assert "is a character device, not a regular file" in refusal(device)


def test_a_file_over_a_megabyte_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write_prompt(tmp_path, system="x " * 600_000)
    assert "larger than 1,000,000 bytes, the most a file here may hold" in refusal(path)


def test_a_system_prompt_that_leaves_no_room_for_a_message_is_refused(tmp_path: Path) -> None:
    path = write_prompt(tmp_path, system="word " * 7000)
    message = refusal(path)
    assert "field 'memory.context_tokens': is 6000, but the system prompt and examples" in message
    assert "leaving no room for a message" in message


def test_examples_count_toward_the_fixed_part(tmp_path: Path) -> None:
    examples = [{"user": "word " * 100, "assistant": "word " * 100}] * 2
    path = write_prompt(tmp_path, examples=examples, memory={"context_tokens": 300})
    assert "field 'memory.context_tokens': is 300" in refusal(path)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("9" * 5000, "Exceeds the limit (4300 digits) for integer string conversion"),
        ("2025-13-45", "month must be in 1..12"),
    ],
)
def test_a_value_yaml_cannot_read_is_refused(tmp_path: Path, value: str, says: str) -> None:
    path = write_prompt(tmp_path)
    path.write_text(f"name: assistant\nversion: 1\nsystem: hi\ndescription: {value}\n")
    message = refusal(path)
    assert "not valid YAML (a value cannot be read: " in message
    assert says in message


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (
            {"tool_choice": "sometimes"},
            "field 'tool_choice': 'sometimes' is not one of auto, required",
        ),
        (
            {"tool_choice": "required", "tools": []},
            "field 'tool_choice': is 'required', but the version",
        ),
        (
            {"fallback_models": ["gpt-4o-mini"]},
            "field 'fallback_models': 'gpt-4o-mini' is the version's own model",
        ),
        ({"fallback_models": ["a", "a"]}, "field 'fallback_models': 'a' is listed twice"),
        ({"fallback_models": [" "]}, "field 'fallback_models': a model name is empty"),
        (
            {"params": {"reasoning_effort": "max"}},
            "field 'params.reasoning_effort': Input should be",
        ),
    ],
)
def test_model_choices_that_cannot_work_are_refused_by_field(
    tmp_path: Path, fields: dict[str, object], says: str
) -> None:
    assert says in refusal(write_prompt(tmp_path, model="gpt-4o-mini", **fields))


def test_a_named_tool_choice_and_fallbacks_load(tmp_path: Path) -> None:
    path = write_prompt(
        tmp_path, tools=["calculator"], tool_choice="calculator", fallback_models=["gpt-4.1-mini"]
    )
    version = load_prompt_file(path, known_tools=KNOWN_TOOLS).version
    assert version.tool_choice == "calculator" and version.fallback_models == ("gpt-4.1-mini",)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("1.yml", "name it 1.yaml"),
        ("draft.yaml", "name it VERSION.yaml"),
        ("evals.yml", "evals.yaml"),
    ],
)
def test_a_yaml_file_the_folder_would_skip_is_named_not_ignored(
    tmp_path: Path, name: str, says: str
) -> None:
    write_prompt(tmp_path)
    (tmp_path / "assistant" / name).write_text("name: assistant\n", encoding="utf-8")
    with pytest.raises(PromptFileError) as refused:
        load_prompts_dir(tmp_path, known_tools=KNOWN_TOOLS)
    assert str(refused.value).startswith(str(tmp_path / "assistant" / name))
    assert says in str(refused.value)


def test_evals_and_other_files_beside_versions_are_left_alone(tmp_path: Path) -> None:
    write_prompt(tmp_path)
    (tmp_path / "assistant" / "evals.yaml").write_text("cases: []\n", encoding="utf-8")
    (tmp_path / "assistant" / "README.md").write_text("notes\n", encoding="utf-8")
    assert [f.version.label for f in load_prompts_dir(tmp_path, known_tools=KNOWN_TOOLS)] == [
        "assistant@1"
    ]


def test_every_problem_in_a_file_is_named_not_only_the_first(tmp_path: Path) -> None:
    message = refusal(
        write_prompt(tmp_path, params={"temperature": 9}, memory={"context_tokens": 1}, cache=3)
    )
    for field in ("params.temperature", "memory.context_tokens", "cache"):
        assert f"field '{field}'" in message, message
    assert "more)" not in message
