"""The offline demo model behind `--fake`: small, deterministic, and just capable enough that
the shipped prompts and eval suites show what they are for.

It behaves like a very small few-shot learner, so that what makes real models hard shows here
too, for reasons anyone can read:

- It calls the calculator for arithmetic and the clock for the time, when they are offered.
- Asked a question no example answers, it searches the team's documents when
  `search_knowledge` is offered, and answers with the sentence of the passages that shares
  most words with the question, citing that passage's number.
- It answers a question like one of the conversation's earlier user turns (a few-shot example,
  most often) with that turn's answer: good examples make good answers, missing ones make
  failures an eval catches, and a structured prompt's examples teach it the JSON to write.
- Otherwise it echoes, which breaks any output contract (the repair turn and the eval show it).
- Sampled without a seed at a temperature above zero, a question asked again may get another
  near answer: the same input giving different answers, which pinning `seed` (or temperature
  0) cures, as on real servers that honour a seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import Counter
from typing import Any

from assistant.testing.scripts import CallTools, Reply, Script

ARITHMETIC = re.compile(r"[-+(]*\d[\d.\s]*(?:[-+*/^%][-+(\s]*\d[\d.\s)]*)+")
NEAR_ENOUGH = 0.5  # the share of the question's words an earlier question must hold
_WORD = re.compile(r"[a-z0-9]+")
_STEM = 4  # words compared by their first letters: "drops" and "dropping" meet
_STOP = frozenset(
    """the a an and or but is are was were be to of in on at for with my our your it its this
    that what whats how can could would should will do does did i we you me us please there
    here just some any all""".split()  # noqa: SIM905 (a list of words reads best as text)
)
ECHO_MARK = "(fake model)"
KNOWLEDGE_TOOL = "search_knowledge"
NOT_FOUND = "I could not find that in the team's documents."
_QUESTION_WORDS = frozenset(
    ["how", "what", "where", "why", "when", "who", "which", "can", "does", "is", "are", "do"]
)
_PASSAGE = re.compile(r"^\[(\d+)\] [^\n]*\n(.*?)(?=\n\n\[\d+\] |\n\nCite |\Z)", re.S | re.M)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*])")
_ECHOES = (f"{ECHO_MARK} You said: {{}}", f"{ECHO_MARK} I heard: {{}}")


class DemoModel:
    """A responder for FakeLlm; one per server, since it remembers questions it was asked."""

    def __init__(self) -> None:
        self._asked: Counter[str] = Counter()  # request fingerprint -> times seen

    def __call__(self, body: dict[str, Any]) -> Script:
        messages = body.get("messages", [])
        last = messages[-1] if messages else {"role": "user", "content": ""}
        question = str(last.get("content") or "")
        if _is_summary_request(messages):
            return Reply(text=f"Summary: {question[:300]}")
        if last.get("role") == "tool":
            trailing = _trailing_tool_results(messages)
            results = [str(m.get("content")) for m in trailing]
            if _searched_knowledge(messages, len(trailing)):
                return Reply(text=answer_from_passages(_last_user_text(messages), results))
            return Reply(text="Here is what I found: " + "; ".join(results))
        if (body.get("response_format") or {}).get("type") == "json_object":  # JSON mode
            return Reply(text=json.dumps({"you_said": question}))
        tool = _tool_call(question, _offered(body))
        if tool is not None:
            return tool
        draw = self._draw(body)
        # with the documents at hand, a question is looked up unless it was asked word for word
        searches = KNOWLEDGE_TOOL in _offered(body) and _is_question(question)
        answers = near_answers(question, _earlier_pairs(messages), near=1.0 if searches else None)
        if answers:
            return Reply(text=answers[draw % len(answers)])
        if searches:
            return CallTools(calls=((KNOWLEDGE_TOOL, {"query": question}),))
        return Reply(text=_ECHOES[draw % len(_ECHOES)].format(question))

    def _draw(self, body: dict[str, Any]) -> int:
        """0 when sampling is pinned; else how often this very request was seen before, so a
        repeated question walks through its near answers as sampling would."""
        if body.get("seed") is not None or not body.get("temperature"):
            return 0
        fingerprint = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()
        self._asked[fingerprint] += 1
        return self._asked[fingerprint] - 1


def near_answers(
    question: str, pairs: list[tuple[str, str]], *, near: float | None = None
) -> list[str]:
    """The answers of the earlier questions that share enough words with this one (`near`,
    default NEAR_ENOUGH, of its words), nearest first (the first of equals wins); at most two,
    the ones sampling would choose between."""
    words = _words(question)
    if not words:
        return []
    enough = NEAR_ENOUGH if near is None else near
    scored = [(len(words & _words(asked)) / len(words), answer) for asked, answer in pairs]
    near_ones = [(score, answer) for score, answer in scored if score >= enough]
    near_ones.sort(key=lambda pair: -pair[0])
    return list(dict.fromkeys(answer for _, answer in near_ones))[:2]


def _words(text: str) -> set[str]:
    return {w[:_STEM] for w in _WORD.findall(text.lower()) if w not in _STOP}


def _earlier_pairs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Each earlier user turn with the assistant turn answering it (examples, then history),
    but for its own echoes: they carry nothing to learn, and repeating one would answer an old
    question instead of the new one."""
    pairs = []
    for asked, answered in itertools.pairwise(messages[:-1]):
        if asked.get("role") == "user" and answered.get("role") == "assistant":
            text = answered.get("content")
            if isinstance(text, str) and text and not text.startswith(ECHO_MARK):
                pairs.append((str(asked.get("content") or ""), text))
    return pairs


def _tool_call(question: str, offered: set[str]) -> CallTools | None:
    expression = ARITHMETIC.search(question)
    if expression and "calculator" in offered:
        return CallTools(calls=(("calculator", {"expression": expression.group().strip()}),))
    if "time" in question.lower() and "current_time" in offered:
        return CallTools(calls=(("current_time", {"timezone": "UTC"}),))
    return None


def answer_from_passages(question: str, results: list[str]) -> str:
    """The passages' sentence sharing most words with the question, with its passage's
    number; ties go to the earlier (better ranked) passage."""
    words = _words(question)
    best: tuple[float, str, str] | None = None
    for result in results:
        for number, text in _PASSAGE.findall(result):
            for sentence in _sentences(text):
                score = len(words & _words(sentence)) / (len(words) or 1)
                if score > 0 and (best is None or score > best[0]):
                    best = (score, sentence, number)
    if best is None:
        return NOT_FOUND
    return f"{best[1]} [{best[2]}]"


def _sentences(text: str) -> list[str]:
    """The prose of a passage, sentence by sentence: table rows, code and headings are left
    out, as a reader quoting the passage would."""
    prose = " ".join(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("|", "```", "#", "    "))
    )
    return [s for s in _SENTENCE.split(prose) if len(s) >= 20]


def _offered(body: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools", [])}


def _is_question(text: str) -> bool:
    words = _WORD.findall(text.lower())
    return text.rstrip().endswith("?") or bool(words and words[0] in _QUESTION_WORDS)


def _searched_knowledge(messages: list[dict[str, Any]], results: int) -> bool:
    """Whether the tool results just before the end answer a `search_knowledge` call."""
    if len(messages) <= results:
        return False
    asked = messages[-results - 1]
    calls = asked.get("tool_calls") or []
    return any((c.get("function") or {}).get("name") == KNOWLEDGE_TOOL for c in calls)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def _is_summary_request(messages: list[dict[str, Any]]) -> bool:
    system = str(messages[0].get("content") or "").lower() if messages else ""
    return "summary" in system and "conversation" in system


def _trailing_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, message)
    return results
