"""Rows built for Core inserts hold what the table models would have held."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlmodel import SQLModel

from assistant.store.rows import table_row
from assistant.store.tables import Conversation, LlmCall, Message, OpenTurn

CASES: list[tuple[type[SQLModel], dict[str, object]]] = [
    (Conversation, {"platform": "slack", "workspace": "T1", "channel": "C1", "thread": "1.2"}),
    (Message, {"conversation_id": 3, "role": "user", "text": "hi", "token_count": 1}),
    (LlmCall, {"purpose": "reply", "model": "m", "total_ms": 12.5, "status": "ok"}),
    (OpenTurn, {"message_id": 7, "surface": "slack", "place": "{}", "owner": "w1"}),
]


@pytest.mark.parametrize(("model", "values"), CASES, ids=lambda case: getattr(case, "__name__", ""))
def test_a_row_has_every_default_the_model_gives(
    model: type[SQLModel], values: dict[str, object]
) -> None:
    built = table_row(model, **values)
    expected = model(**values).model_dump(exclude={"id"} if "id" in model.model_fields else set())
    assert built.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, datetime):  # a factory's value: now, made a moment apart
            assert isinstance(built[name], datetime) and built[name].tzinfo is not None
        else:
            assert built[name] == value, name


def test_given_values_win_over_defaults() -> None:
    row = table_row(
        Message, conversation_id=1, role="assistant", text="x", token_count=2, status="incomplete"
    )
    assert row["status"] == "incomplete" and row["author_name"] == ""
