"""Output contracts: a version's `response_schema`, checked on every reply it produces.

A reply that breaks the schema gets one repair turn that quotes the error to the model; a
second break fails the turn with a clear message. Never a silent, malformed answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)
FAILED_MESSAGE = (
    "The assistant's answer did not have the required format, even after one correction. "
    "Please try again or rephrase."
)


@dataclass(frozen=True, kw_only=True)
class ContractCheck:
    ok: bool
    text: str  # the JSON text, unwrapped from a code fence if the model added one
    error: str = ""


class ContractViolation(Exception):
    """The reply broke the version's schema twice."""

    user_message = FAILED_MESSAGE


def check_schema(schema: dict[str, Any]) -> str | None:
    """Why a schema is unusable, or None; prompt files are checked with this when they load."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return exc.message
    return None


def check_reply(text: str, schema: dict[str, Any]) -> ContractCheck:
    fenced = _FENCE.match(text)
    body = fenced.group("body") if fenced else text.strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return ContractCheck(ok=False, text=body, error=f"not valid JSON: {exc.msg} at {exc.pos}")
    error = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
    if error is None:
        return ContractCheck(ok=True, text=body)
    where = "/".join(str(part) for part in error.absolute_path) or "the top level"
    return ContractCheck(ok=False, text=body, error=f"at {where}: {error.message}")


def repair_instruction(error: str, schema: dict[str, Any]) -> str:
    return (
        f"Your reply did not match the required JSON schema ({error}). Reply again with only "
        f"the corrected JSON, nothing else. The schema:\n{json.dumps(schema)}"
    )
