"""Prompt files: the shipped one loads; a bad file is refused naming the file and the field."""

from __future__ import annotations

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

SHIPPED = Path(__file__).resolve().parent.parent / "prompts"
KNOWN_TOOLS = ["current_time", "calculator"]
NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


def refusal(path: Path) -> str:
    with pytest.raises(PromptFileError) as excinfo:
        load_prompt_file(path, known_tools=KNOWN_TOOLS)
    message = str(excinfo.value)
    assert str(path) in message
    return message


def test_shipped_prompt_loads_and_renders() -> None:
    files = load_prompts_dir(SHIPPED, known_tools=KNOWN_TOOLS)
    prompt = PromptCatalog(files, default_prompt="assistant").latest("assistant").version
    assert prompt.label == "assistant@1"
    assert prompt.tools == ("current_time", "calculator")
    system = prompt.render_system(now=NOW, platform="slack", user_name="Alice")
    assert "talking with Alice on slack" in system
    assert "Today is 2025-03-14" in system
    assert "{{" not in system


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
