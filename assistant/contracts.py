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
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

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


# Keywords that apply their subschemas to the instance itself, not to a part of it: a loop of
# references through these alone never reaches the end of the reply, however small.
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")


def check_schema(schema: dict[str, Any]) -> str | None:
    """What makes a schema unusable, as a phrase ("not a valid JSON schema (…)"), or None.
    Prompt files and eval suites are checked with this when they load, so that a schema that
    would fail on every reply is refused by its author's file instead."""
    if not _plain_json(schema):
        return (
            "not plain JSON (a date, a set, binary data or a key that is not text); "
            "quote such values"
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON schema ({exc.message})"
    return _reference_problem(schema)


def _plain_json(value: Any) -> bool:
    """Whether `value` survives a JSON round trip unchanged (YAML can also write dates, sets,
    binary data and number keys, which the repair prompt and the validator cannot take)."""
    try:
        return bool(json.loads(json.dumps(value, allow_nan=False)) == value)
    except (TypeError, ValueError, RecursionError):
        return False


def _reference_problem(schema: dict[str, Any]) -> str | None:
    """The first `$ref` (or `$dynamicRef`) that does not resolve inside the schema, or a loop of
    references that would recurse on every reply. Nothing is fetched: a remote reference would
    make every reply wait on another server, so it is refused like a reference to nowhere."""
    root: Resource[Any] = DRAFT202012.create_resource(schema)
    stack = [(Registry().resolver_with_root(root), root)]
    in_place: dict[int, list[int]] = {}  # subschema -> those applied to the same instance
    while stack:
        resolver, resource = stack.pop()
        contents = resource.contents
        if isinstance(contents, dict):
            targets = _in_place_subschemas(contents)
            for keyword in ("$ref", "$dynamicRef"):
                ref = contents.get(keyword)
                if not isinstance(ref, str):
                    continue
                try:
                    targets.append(resolver.lookup(ref).contents)
                except Exception:  # referencing raises several kinds; any means unusable
                    return (
                        f"{keyword} {ref!r} cannot be resolved; only references to a part of "
                        "this schema (like '#/$defs/name') are allowed"
                    )
            in_place[id(contents)] = [id(target) for target in targets]
        stack.extend((resolver.in_subresource(sub), sub) for sub in resource.subresources())
    if _has_cycle(in_place):
        return "its $refs lead back to themselves without end; every reply would fail"
    return None


def _in_place_subschemas(contents: dict[str, Any]) -> list[Any]:
    found: list[Any] = [contents.get(keyword) for keyword in _IN_PLACE_ONE]
    for keyword in _IN_PLACE_LISTS:
        value = contents.get(keyword)
        found += value if isinstance(value, list) else []
    dependent = contents.get("dependentSchemas")
    found += list(dependent.values()) if isinstance(dependent, dict) else []
    return [subschema for subschema in found if isinstance(subschema, dict)]


def _has_cycle(edges: dict[int, list[int]]) -> bool:
    """Whether following `edges` can come back to where it started (depth-first, no recursion:
    a schema may chain thousands of references)."""
    done: set[int] = set()
    for start in edges:
        if start in done:
            continue
        path = {start}
        stack = [(start, iter(edges[start]))]
        while stack:
            node, successors = stack[-1]
            successor = next(successors, None)
            if successor is None:
                stack.pop()
                path.discard(node)
                done.add(node)
            elif successor in path:
                return True
            elif successor not in done:
                path.add(successor)
                stack.append((successor, iter(edges.get(successor, []))))
    return False


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator that never fetches: an empty registry, so only the schema itself is used."""
    return Draft202012Validator(schema, registry=Registry())


def check_reply(text: str, schema: dict[str, Any]) -> ContractCheck:
    fenced = _FENCE.match(text)
    body = fenced.group("body") if fenced else text.strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        if exc.pos == 0:  # not JSON at all: what it is says more than the parser can
            opening = body[:32] + ("…" if len(body) > 32 else "")
            return ContractCheck(ok=False, text=body, error=f"not JSON: {opening!r}")
        why = f"not valid JSON ({exc.msg} at character {exc.pos})"
        return ContractCheck(ok=False, text=body, error=why)
    except RecursionError:
        return ContractCheck(ok=False, text=body, error="JSON nested too deeply to read")
    try:
        error = next(iter(_validator(schema).iter_errors(value)), None)
    except RecursionError:
        return ContractCheck(ok=False, text=body, error="JSON nested too deeply to check")
    if error is None:
        return ContractCheck(ok=True, text=body)
    where = "/".join(str(part) for part in error.absolute_path) or "the top level"
    return ContractCheck(ok=False, text=body, error=f"at {where}: {error.message}")


def repair_instruction(error: str, schema: dict[str, Any]) -> str:
    return (
        f"Your reply did not match the required JSON schema ({error}). Reply again with only "
        f"the corrected JSON, nothing else. The schema:\n{json.dumps(schema)}"
    )
