"""Cost of a call: exact for priced models, None (never $0) for the rest, operator overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.pricing import PriceTable


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def test_gpt_4o_mini_cost_with_cached_tokens(prices: PriceTable) -> None:
    # $0.15/M input, $0.075/M cached input, $0.60/M output
    cost = prices.cost("gpt-4o-mini", prompt_tokens=1000, completion_tokens=500, cached_tokens=400)
    assert cost == pytest.approx((600 * 0.15 + 400 * 0.075 + 500 * 0.60) / 1e6, rel=1e-12)
    assert cost == pytest.approx(0.00042, rel=1e-12)
    one_million_each = prices.cost(
        "gpt-4o-mini", prompt_tokens=1_000_000, completion_tokens=1_000_000
    )
    assert one_million_each == pytest.approx(0.75, rel=1e-12)


def test_dated_snapshot_priced_like_its_base(prices: PriceTable) -> None:
    usage = {"prompt_tokens": 1234, "completion_tokens": 567, "cached_tokens": 89}
    assert prices.cost("gpt-4o-mini-2024-07-18", **usage) == prices.cost("gpt-4o-mini", **usage)


def test_unknown_model_is_unpriced_not_free(prices: PriceTable) -> None:
    assert prices.price("llama-3-70b") is None
    assert prices.cost("llama-3-70b", prompt_tokens=1000, completion_tokens=10) is None
    assert prices.cost("llama-3-70b", prompt_tokens=0, completion_tokens=0) is None


def test_override_file_adds_and_overrides(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        "in-house-model: {input: 1.0, output: 2.0}\ngpt-4o-mini: {input: 3.0, output: 4.0}\n",
        encoding="utf-8",
    )
    table = PriceTable.load(override)
    assert table.cost("in-house-model", prompt_tokens=1_000_000, completion_tokens=0) == 1.0
    assert table.cost("gpt-4o-mini", prompt_tokens=0, completion_tokens=1_000_000) == 4.0
    # without a cached rate, cached tokens are charged at the input rate
    assert table.cost(
        "gpt-4o-mini", prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=1_000_000
    ) == pytest.approx(3.0)
    assert table.cost("gpt-4o", prompt_tokens=1_000_000, completion_tokens=0) == 2.5


def test_malformed_override_names_file_model_and_field(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text("in-house-model: {input: cheap, output: 2.0}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="in-house-model") as excinfo:
        PriceTable.load(override)
    message = str(excinfo.value)
    assert str(override) in message
    assert "'input'" in message


def test_unreadable_override_names_pricing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ValueError, match="PRICING_FILE") as excinfo:
        PriceTable.load(missing)
    assert str(missing) in str(excinfo.value)


def test_non_utf8_override_names_pricing_file(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_bytes("# tarifs en \u20ac\ngpt-4o: {input: 1, output: 2}\n".encode("cp1252"))
    with pytest.raises(ValueError, match="PRICING_FILE") as excinfo:
        PriceTable.load(override)
    assert str(override) in str(excinfo.value)
