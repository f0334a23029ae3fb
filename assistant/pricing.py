"""Cost of a call from a price table; a model we have no price for is "unpriced", never $0."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.file_errors import parse_yaml, read_setting_file

_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


class ModelPrice(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


class PriceTable:
    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = prices

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        """The bundled table, with an operator's file merged over it."""
        bundled = importlib.resources.files("assistant") / "data" / "prices.yaml"
        prices = _parse(bundled.read_text(encoding="utf-8"), Path("assistant/data/prices.yaml"))
        if override is not None:
            prices.update(_parse(read_setting_file(override, "PRICING_FILE"), override))
        return cls(prices)

    def price(self, model: str) -> ModelPrice | None:
        return self._prices.get(model) or self._prices.get(_SNAPSHOT_SUFFIX.sub("", model))

    def cost(
        self, model: str, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> float | None:
        """USD for one call, or None when the model is unpriced."""
        price = self.price(model)
        if price is None:
            return None
        cached_rate = price.input if price.cached_input is None else price.cached_input
        uncached = max(prompt_tokens - cached_tokens, 0)
        micro = uncached * price.input + cached_tokens * cached_rate
        micro += completion_tokens * price.output
        return micro / 1_000_000


def _parse(text: str, source: Path) -> dict[str, ModelPrice]:
    raw = parse_yaml(text, source, error=ValueError) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping of model name to prices")
    prices = {}
    for model, entry in raw.items():
        try:
            prices[str(model)] = ModelPrice.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "prices"
            raise ValueError(
                f"{source}: model {model!r}, field {field!r}: {first['msg']}"
            ) from None
    return prices
