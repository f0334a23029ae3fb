"""Prompt versions in operation: bindings per scope, A/B splits, rollback, audit, immutability."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from assistant.admin.commands import AdminCommands, CommandContext
from assistant.engine import Assistant
from assistant.store import PromptVersionConflict, Store
from assistant.store.tables import PromptAudit
from assistant.testing import Reply
from assistant.turns import Actor, Completed, ConversationRef
from tests.conftest import REF, collect, inbound, write_prompt

ADMIN = Actor(platform="test", user_id="ADMIN1", display_name="Ada")
VISITOR = Actor(platform="test", user_id="U9", display_name="Vic")


@pytest.fixture
def two_versions(prompts_dir: Path) -> Path:
    write_prompt(prompts_dir, version=1, system="Version one.", params={"temperature": 0.2})
    write_prompt(prompts_dir, version=2, system="Version two.", params={"temperature": 0.9})
    return prompts_dir


def admin_commands(assistant: Assistant, store: Store) -> AdminCommands:
    return AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=["test:ADMIN1"])


async def run(commands: AdminCommands, text: str, actor: Actor = ADMIN, surface: str = "test"):
    return await commands.run(text, CommandContext(actor=actor, surface=surface, ref=REF))


async def system_and_temperature(assistant: Assistant, fake_llm, text: str) -> tuple[str, float]:
    fake_llm.script(Reply(text="ok"))
    events = await collect(assistant.respond(inbound(text)))
    assert isinstance(events[-1], Completed)
    request = fake_llm.requests[-1]
    return request["messages"][0]["content"], request["temperature"]


async def test_a_switch_changes_the_next_request_in_this_and_another_engine(
    two_versions, make_assistant, fake_llm, store, sqlite_url, model, tools
):
    first = await make_assistant()
    other_store = Store.connect(sqlite_url)  # a second replica on the same database
    second = Assistant(
        store=other_store,
        model=model,
        catalog=first.versions.catalog,
        tools=tools,
        prices=first._prices,
    )
    try:
        assert await system_and_temperature(first, fake_llm, "a") == ("Version two.", 0.9)

        result = await run(admin_commands(first, store), "prompt use assistant 1")
        assert result.ok, result.text
        assert await system_and_temperature(first, fake_llm, "b") == ("Version one.", 0.2)
        assert await system_and_temperature(second, fake_llm, "c") == ("Version one.", 0.2)

        back = await run(admin_commands(second, other_store), "prompt use assistant 2")
        assert back.ok
        assert await system_and_temperature(first, fake_llm, "d") == ("Version two.", 0.9)
    finally:
        await other_store.close()


async def test_the_most_specific_scope_wins(two_versions, make_assistant, fake_llm, store):
    assistant = await make_assistant()
    commands = admin_commands(assistant, store)
    assert (await run(commands, "prompt use assistant 1 --scope workspace")).ok
    elsewhere = ConversationRef(platform="test", workspace="W2", channel="C1", thread="x")
    fake_llm.script(Reply(text="ok"), Reply(text="ok"))
    await collect(assistant.respond(inbound("here")))
    await collect(assistant.respond(inbound("elsewhere", ref=elsewhere)))
    systems = [r["messages"][0]["content"] for r in fake_llm.requests]
    assert systems == ["Version one.", "Version two."]
    assert (await run(commands, "prompt use assistant 2 --scope channel")).ok
    assert (await system_and_temperature(assistant, fake_llm, "again"))[0] == "Version two."


async def test_a_non_admin_change_is_refused_and_changes_nothing(
    two_versions, make_assistant, store
):
    commands = admin_commands(await make_assistant(), store)
    result = await run(commands, "prompt use assistant 1 --scope global", actor=VISITOR)
    assert not result.ok
    assert "Only admins" in result.text and "test:U9" in result.text
    assert await store.prompts.bindings() == []
    assert await store.prompts.history("assistant") == []
    assert (await run(commands, "prompt list", actor=VISITOR)).ok  # reading is open


async def test_changes_are_audited_and_rollback_restores_the_previous_binding(
    two_versions, make_assistant, fake_llm, store
):
    assistant = await make_assistant()
    commands = admin_commands(assistant, store)
    assert (await run(commands, "prompt use assistant 1")).ok
    assert (await run(commands, "prompt use assistant 2 --force")).ok

    [latest, first] = await store.prompts.history("assistant")
    assert (first.actor, first.surface, first.action, first.scope) == (
        "test:ADMIN1",
        "test",
        "use",
        "channel",
    )
    assert first.before is None and '"version": 1' in (first.after or "")
    assert '"version": 1' in (latest.before or "")
    assert not latest.forced  # no suite, so no gate: --force overrode nothing

    result = await run(commands, "prompt rollback assistant")
    assert result.ok and "assistant@1 answers again" in result.text
    assert (await system_and_temperature(assistant, fake_llm, "x"))[0] == "Version one."
    assert (await run(commands, "prompt rollback assistant")).ok  # back to no binding at all
    assert await store.prompts.bindings() == []
    nothing = await run(commands, "prompt rollback assistant")
    assert not nothing.ok and "Nothing to roll back" in nothing.text
    history = await run(commands, "prompt history assistant")
    assert history.text.count("(rolled back)") == 2 and "forced" not in history.text


async def test_a_90_10_split_is_fair_and_sticky(two_versions, make_assistant, fake_llm, store):
    assistant = await make_assistant()
    assistant.versions._rng = random.Random(20261124)
    commands = admin_commands(assistant, store)
    assert (await run(commands, "prompt ab assistant 1=90 2=10 --scope global")).ok
    refs = [
        ConversationRef(platform="test", workspace="W", channel="C", thread=str(i))
        for i in range(2000)
    ]
    ids = [await store.conversation_id(ref) for ref in refs]

    chosen = [
        (await assistant.versions.resolve(ref, cid)).version.version
        for ref, cid in zip(refs, ids, strict=True)
    ]
    share = Counter(chosen)[1] / len(chosen)
    assert 0.87 <= share <= 0.93

    assert (await run(commands, "prompt ab assistant 1=50 2=50 --scope global")).ok
    again = [
        (await assistant.versions.resolve(ref, cid)).version.version
        for ref, cid in zip(refs, ids, strict=True)
    ]
    assert again == chosen, "a conversation never moves to another version"

    fake_llm.script(Reply(text="ok"))
    events = await collect(assistant.respond(inbound("hi", ref=refs[7])))
    assert events[-1].prompt_version == f"assistant@{chosen[7]}"
    [row] = [v for v in await store.prompts.versions("assistant") if v.version == chosen[7]]
    messages = await store.messages(ids[7])
    calls = await store.llm_calls(ids[7])
    assert {m.prompt_version_id for m in messages} == {row.id}
    assert {c.prompt_version_id for c in calls} == {row.id}


async def test_an_edited_released_file_is_refused(two_versions, make_assistant):
    await make_assistant()
    path = two_versions / "assistant" / "1.yaml"
    path.write_text(path.read_text().replace("Version one.", "Version one, edited."))
    with pytest.raises(PromptVersionConflict, match=r"1\.yaml.*add a new version"):
        await make_assistant()


async def test_a_deleted_file_keeps_its_version_usable(
    two_versions, make_assistant, fake_llm, store
):
    await make_assistant()
    (two_versions / "assistant" / "1.yaml").unlink()
    assistant = await make_assistant()  # this process never saw 1.yaml
    commands = admin_commands(assistant, store)
    listed = await run(commands, "prompt list")
    assert "versions 1, 2" in listed.text
    assert (await run(commands, "prompt use assistant 1")).ok
    assert (await system_and_temperature(assistant, fake_llm, "x")) == ("Version one.", 0.2)


async def test_unknown_prompts_and_versions_say_what_exists(two_versions, make_assistant, store):
    commands = admin_commands(await make_assistant(), store)
    assert (await run(commands, "prompt use assistant 7")).text == (
        "assistant has no version 7. Versions: 1, 2."
    )
    assert (await run(commands, "prompt show helpdesk")).text == (
        "No prompt named 'helpdesk'. Prompts: assistant."
    )
    diff = await run(commands, "prompt diff assistant 1 2")
    assert "-system: Version one." in diff.text and "+system: Version two." in diff.text
    assert "Version two." in (await run(commands, "prompt show assistant")).text


async def test_the_shell_must_name_a_place_for_narrow_scopes(two_versions, make_assistant, store):
    commands = admin_commands(await make_assistant(), store)
    shell = CommandContext(actor=Actor(platform="cli", user_id="ops"), surface="cli")
    refused = await commands.run("prompt use assistant 1 --scope channel", shell)
    assert not refused.ok and "--target" in refused.text
    done = await commands.run("prompt use assistant 1 --scope channel --target test/W1/C1", shell)
    assert done.ok and "channel test/W1/C1" in done.text
    audit: PromptAudit = (await store.prompts.history("assistant"))[0]
    assert (audit.actor, audit.surface, audit.channel) == ("cli:ops", "cli", "C1")


async def test_two_admins_binding_a_new_scope_at_once_are_both_audited(
    two_versions, make_assistant, store
):
    commands = admin_commands(await make_assistant(), store)
    results = await asyncio.gather(
        run(commands, "prompt use assistant 1 --scope global"),
        run(commands, "prompt use assistant 2 --scope global"),
    )
    assert all(r.ok for r in results), [r.text for r in results]
    history = await store.prompts.history("assistant")
    assert len(history) == 2
    [(_, binding)] = await store.prompts.bindings()
    assert binding.describe() in {"assistant@1", "assistant@2"}
