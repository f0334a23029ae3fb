"""From production back to evals and training: 👎 answers become candidate eval cases, 👍
conversations become fine-tuning examples (OpenAI's chat JSONL format)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import yaml

from assistant.prompts.files import PromptFileError, parse_prompt
from assistant.store import Store
from assistant.store.tables import Message, PromptVersionRow

_EXCERPT = 300


async def candidate_cases(store: Store, prompt_name: str) -> str:
    """YAML of cases for `prompts/NAME/evals.yaml`, one per disliked answer, to review: the
    question as the input, the rated answer as what not to say, and a rubric to write."""
    cases = []
    for answer, version in await store.votes.rated_answers(liked=False, prompt_name=prompt_name):
        earlier = await store.messages_before(answer)
        questions = [m for m in earlier if m.role == "user"]
        if not questions:
            continue
        label = f"{version.name}@{version.version}" if version is not None else "unknown version"
        cases.append(
            {
                "name": f"feedback-{answer.id}",
                "input": questions[-1].text,
                "expect": [
                    {"not_equals": answer.text.strip()},
                    {
                        "judge": f"TODO: what a good answer does. ({label} answered, rated 👎: "
                        f"{_excerpt(answer.text)})"
                    },
                ],
            }
        )
    header = (
        f"# {len(cases)} candidate cases from 👎 answers to {prompt_name}: review, write each "
        f"rubric, then add them to prompts/{prompt_name}/evals.yaml\n"
    )
    body = yaml.safe_dump({"cases": cases}, sort_keys=False, allow_unicode=True, width=100)
    return header + body


async def finetune_lines(store: Store) -> AsyncIterator[str]:
    """One JSON line per liked answer: the system prompt of its version, the conversation up
    to it, and the answer."""
    for answer, version in await store.votes.rated_answers(liked=True):
        earlier = await store.messages_before(answer)
        messages = [{"role": m.role, "content": m.text} for m in earlier]
        system = _system(version, answer)
        if system:
            messages.insert(0, {"role": "system", "content": system})
        messages.append({"role": "assistant", "content": answer.text})
        yield json.dumps({"messages": messages}, ensure_ascii=False)


def _system(version: PromptVersionRow | None, answer: Message) -> str:
    """The version's system prompt as it was rendered for that answer (as near as the stored
    facts allow: the day it was said, a neutral user name)."""
    if version is None:
        return ""
    try:
        prompt = parse_prompt(version.body, Path(version.source_file))
    except PromptFileError:
        return ""
    return prompt.version.render_system(now=answer.created_at, platform="", user_name="a user")


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 1] + "…"
