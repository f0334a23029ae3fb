"""Which parameters each model takes: the shipped table, an operator's file over it, and the
request a version's parameters become."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from assistant.model_traits import ModelTable

PARAMS = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "seed": 7, "reasoning_effort": "low"}


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        ("gpt-4o-mini", {"temperature", "top_p", "max_tokens", "seed"}),
        ("o3-mini-2025-01-31", {"max_completion_tokens", "seed", "reasoning_effort"}),
        ("openai/o4-mini", {"max_completion_tokens", "seed", "reasoning_effort"}),  # LiteLLM's
        ("azure/GPT-5-mini", {"max_completion_tokens", "seed", "reasoning_effort"}),
        ("gpt-5-chat-latest", {"temperature", "top_p", "max_completion_tokens", "seed"}),
        ("o1-mini", {"max_completion_tokens", "seed"}),  # refuses reasoning_effort too
        ("llama3.1", {"temperature", "top_p", "max_tokens", "seed"}),
    ],
)
def test_each_model_gets_the_parameters_it_takes(model: str, sent: set[str]) -> None:
    adapted = ModelTable.load().traits(model).adapt(PARAMS)
    assert set(adapted) == sent
    assert adapted.get("max_tokens", adapted.get("max_completion_tokens")) == 100


def test_an_operators_entries_come_first(tmp_path: Path) -> None:
    table = tmp_path / "models.yaml"
    table.write_text("- match: 'my-reasoner-*'\n  sampling: false\n  stream_tools: false\n")
    traits = ModelTable.load(table).traits("my-reasoner-7b")
    assert not traits.stream_tools and "temperature" not in traits.adapt(PARAMS)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- match: [a\n  b: c: d\n", "not valid YAML (line 2"),
        ("match: [a]\n", "expected a list of entries"),
        ("- {match: [a], token_limit: max_length}\n", "entry 1, field 'token_limit'"),
        ("- {stream_tools: false}\n", "entry 1, field 'match': Field required"),
        ("- {match: [a], sampling: sometimes}\n", "entry 1, field 'sampling'"),
    ],
)
def test_a_bad_models_file_is_refused_in_one_line_naming_it(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path))) as refused:
        ModelTable.load(path)
    message = str(refused.value)
    assert message.startswith(str(path)) and says in message and "\n" not in message


def test_a_models_file_that_cannot_be_read_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"MODELS_FILE .*nowhere\.yaml: cannot read the file"):
        ModelTable.load(tmp_path / "nowhere.yaml")
