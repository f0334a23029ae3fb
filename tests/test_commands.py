"""The admin grammar: every string gets a command or a usage message, never a crash; and the
rules about a typed command hold however it was made (parsed, or built by a surface)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.admin.commands import AdminCommands, command_failed
from assistant.admin.grammar import (
    NO_WORKSPACE_HERE,
    USAGE,
    CommandContext,
    CommandError,
    DiffPrompt,
    ListPrompts,
    PromptHistory,
    RollbackPrompt,
    RunEvals,
    ShowPrompt,
    ShowReport,
    SplitPrompt,
    UsageError,
    UsePrompt,
    Where,
    check_place,
    parse,
    parse_split,
)
from assistant.turns import Actor, ConversationRef

WORDS = st.sampled_from(
    [
        "prompt",
        "list",
        "show",
        "diff",
        "use",
        "rollback",
        "ab",
        "history",
        "assistant",
        "/assistant",
        "helpdesk",
        "1",
        "2",
        "0",
        "-3",
        "x",
        "2=90",
        "3=10",
        "3=0",
        "=",
        "2=",
        "--scope",
        "global",
        "workspace",
        "channel",
        "galaxy",
        "--target",
        "slack/T1/C1",
        "slack",
        "slack//C1",
        "--force",
        "--frob",
        "'",
        '"',
        "a b",
        "",
    ]
)


def outcome(text: str) -> object:
    try:
        return parse(text)
    except UsageError as exc:  # anything else escapes and fails the test
        return exc


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_a_command_or_a_usage_error(text: str) -> None:
    result = outcome(text)
    assert not isinstance(result, UsageError) or str(result)


@settings(max_examples=1000, deadline=None)
@given(st.lists(WORDS, max_size=8))
def test_command_like_word_salad_is_a_command_or_a_usage_error(words: list[str]) -> None:
    result = outcome(" ".join(words))
    assert result is not None
    assert not isinstance(result, UsageError) or str(result)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("prompt list", ListPrompts()),
        ("/assistant prompt show helpdesk", ShowPrompt(name="helpdesk")),
        ("prompt show helpdesk 3", ShowPrompt(name="helpdesk", version=3)),
        ("prompt diff helpdesk 2 3", DiffPrompt(name="helpdesk", old=2, new=3)),
        (
            "prompt use helpdesk 3 --scope workspace --force",
            UsePrompt(name="helpdesk", version=3, where=Where(scope="workspace"), force=True),
        ),
        (
            "assistant prompt rollback helpdesk --target slack/T1/C1",
            RollbackPrompt(
                name="helpdesk",
                where=Where(target=ConversationRef(platform="slack", workspace="T1", channel="C1")),
            ),
        ),
        (
            "prompt ab helpdesk 3=10 2=90",
            SplitPrompt(name="helpdesk", weights=((2, 90), (3, 10)), where=Where()),
        ),
    ],
)
def test_well_formed_commands(text, command):
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "commands start with 'prompt'"),
        ("prompt", "commands start with 'prompt'"),
        ("prompt frob", "unknown action 'frob'"),
        ("prompt use helpdesk", "wrong number of arguments for 'prompt use'"),
        ("prompt use helpdesk three", "a version is a whole number from 1 to 2147483647"),
        ("prompt use helpdesk 3 --scope galaxy", "the scope is global, workspace or channel"),
        ("prompt use helpdesk 3 --scope", "--scope needs a value"),
        ("prompt use helpdesk 3 --target slack", "a place is platform/workspace[/channel]"),
        ("prompt ab helpdesk 2=90", "at least two VERSION=WEIGHT pairs"),
        ("prompt ab helpdesk 2=90 2=10", "version 2 appears twice"),
        ("prompt ab helpdesk 2=100 3=0", "at least two versions with a weight above zero"),
        ("prompt ab helpdesk 2=x 3=10", "a weight is a whole number from 0 to 100, not 'x'"),
        ("prompt ab helpdesk 2= 3=10", "a split is VERSION=WEIGHT"),
        ("prompt list --force", "'prompt list' takes no options"),
        ("prompt use 'unclosed", "cannot read the command"),
    ],
)
def test_malformed_commands_say_what_is_wrong(text, says):
    with pytest.raises(UsageError, match=says.replace("[", r"\[").replace("]", r"\]")):
        parse(text)


def test_usage_lists_every_action():
    for action in ("list", "show", "diff", "use", "rollback", "ab", "history"):
        assert f"prompt {action}" in USAGE


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("report", ShowReport(period="24h")),
        ("/assistant report 7d", ShowReport(period="7d")),
        ("eval run", RunEvals()),
        ("eval run helpdesk", RunEvals(name="helpdesk")),
        ("eval run helpdesk 3", RunEvals(name="helpdesk", version=3)),
    ],
)
def test_reports_and_eval_runs_are_in_the_grammar(text, command):
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "says"),
    [("report 1y", "one of 24h, 7d, 30d"), ("eval run a 1 2", "at most a prompt name")],
)
def test_malformed_report_and_eval_commands_say_what_is_wrong(text, says):
    with pytest.raises(UsageError, match=says):
        parse(text)


def test_a_split_parses_on_its_own_as_inside_a_command():
    assert parse_split(["3=10", "2=90", "4=0"]) == ((2, 90), (3, 10))
    with pytest.raises(UsageError, match="a split is VERSION=WEIGHT"):
        parse_split(["2=90", "3"])


ADMIN = Actor(platform="discord", user_id="A1")
IN_A_DM = CommandContext(
    actor=ADMIN, surface="discord", ref=ConversationRef(platform="discord", channel="D1")
)
IN_A_SERVER = CommandContext(
    actor=ADMIN,
    surface="discord",
    ref=ConversationRef(platform="discord", workspace="G1", channel="C1"),
)
WORKSPACE = Where(scope="workspace")


@pytest.mark.parametrize(
    "command",
    [
        UsePrompt(name="helpdesk", version=3, where=WORKSPACE),
        RollbackPrompt(name="helpdesk", where=WORKSPACE),
        SplitPrompt(name="helpdesk", weights=((2, 90), (3, 10)), where=WORKSPACE),
    ],
)
def test_a_workspace_scope_from_a_direct_message_is_refused(command):
    with pytest.raises(CommandError, match=NO_WORKSPACE_HERE):
        check_place(command, IN_A_DM)
    check_place(command, IN_A_SERVER)


@pytest.mark.parametrize(
    "command",
    [
        ShowPrompt(name="workspace"),  # the word is a name here, not a scope
        PromptHistory(name="workspace"),
        UsePrompt(name="helpdesk", version=3, where=Where(scope="channel")),
        UsePrompt(name="helpdesk", version=3, where=Where(scope="global")),
        UsePrompt(
            name="helpdesk",
            version=3,
            where=Where(
                scope="workspace", target=ConversationRef(platform="discord", workspace="G1")
            ),
        ),
    ],
)
def test_other_commands_from_a_direct_message_are_let_through(command):
    check_place(command, IN_A_DM)


async def test_execution_refuses_a_workspace_scope_from_a_direct_message(make_assistant, store):
    assistant = await make_assistant()
    commands = AdminCommands(
        prompts=store.prompts, versions=assistant.versions, admins=["discord:A1"]
    )

    typed = await commands.execute(UsePrompt(name="assistant", version=1, where=WORKSPACE), IN_A_DM)
    worded = await commands.run("prompt use assistant 1 --scope workspace", IN_A_DM)
    shown = await commands.run("prompt show workspace", IN_A_DM)

    assert not typed.ok and typed.text == NO_WORKSPACE_HERE
    assert not worded.ok and worded.text == NO_WORKSPACE_HERE
    assert await store.prompts.bindings() == []
    assert "No prompt named 'workspace'" in shown.text
    in_server = await commands.run("prompt use assistant 1 --scope workspace", IN_A_SERVER)
    assert in_server.ok, in_server.text


# --- hostile input (issue 11): numbers are ASCII digits within bounds; every command answers ----


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "/assistant prompt show helpdesk ²",
            "a version is a whole number from 1 to 2147483647, not '²'",
        ),
        ("prompt show helpdesk ٣", "a version is a whole number from 1 to 2147483647, not '٣'"),
        (
            "prompt use helpdesk \uff11",
            "a version is a whole number from 1 to 2147483647, not '\uff11'",
        ),
        ("prompt diff helpdesk 0 2", "a version is a whole number from 1 to 2147483647, not '0'"),
        ("eval run helpdesk 99999999999999999999", "not '99999999999999999999'"),
        ("prompt show helpdesk 2147483648", "not '2147483648'"),
        ("prompt show helpdesk " + "9" * 5000, "not '999999999999999999999999…'"),
        ("prompt ab helpdesk 2=² 3=10", "a weight is a whole number from 0 to 100, not '²'"),
        ("prompt ab helpdesk 2=101 3=10", "a weight is a whole number from 0 to 100, not '101'"),
        ("prompt ab helpdesk \uff12=90 3=10", "a version is a whole number from 1 to 2147483647"),
    ],
)
def test_numbers_are_ascii_digits_within_bounds(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert says in str(caught.value)


def test_leading_zeros_and_the_bounds_themselves_are_numbers() -> None:
    assert parse("prompt show helpdesk 0002147483647") == ShowPrompt(
        name="helpdesk", version=2**31 - 1
    )
    assert parse("prompt ab helpdesk 1=100 2=0 3=001") == SplitPrompt(
        name="helpdesk", weights=((1, 100), (3, 1)), where=Where()
    )


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (ShowPrompt(name="assistant", version=2**40), f"not {2**40}."),
        (DiffPrompt(name="assistant", old=1, new=0), "not 0."),
        (RunEvals(name="assistant", version=-1), "not -1."),
        (
            UsePrompt(name="assistant", version=2**31, where=Where(scope="global")),
            "not 2147483648.",
        ),
        (
            SplitPrompt(name="assistant", weights=((1, 50), (2, 1000)), where=Where()),
            "A weight is a whole number from 0 to 100, not 1000.",
        ),
    ],
)
async def test_typed_commands_out_of_bounds_are_refused_as_parsing_would(
    make_assistant, store, command, says
) -> None:
    assistant = await make_assistant()
    commands = AdminCommands(
        prompts=store.prompts, versions=assistant.versions, admins=["discord:A1"]
    )
    result = await commands.execute(command, IN_A_SERVER)
    assert not result.ok
    assert result.text.startswith(("A version is a whole number from 1 to 2147483647", "A weight"))
    assert result.text.endswith(says)


async def test_a_unicode_digit_gets_the_usage_not_silence(make_assistant, store) -> None:
    assistant = await make_assistant()
    commands = AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=())
    result = await commands.run("/assistant prompt show helpdesk ²", IN_A_SERVER)
    assert not result.ok
    assert result.text.startswith("a version is a whole number from 1 to 2147483647, not '²'.\n")
    assert USAGE in result.text


async def test_a_command_failing_inside_answers_with_an_id_the_log_carries(
    make_assistant, store, caplog
) -> None:
    assistant = await make_assistant()
    commands = AdminCommands(
        prompts=store.prompts, versions=assistant.versions, admins=["discord:A1"]
    )
    async with store.engine.begin() as connection:  # a real failure: the table is gone
        await connection.exec_driver_sql("DROP TABLE prompt_audit")

    result = await commands.run("prompt history assistant", IN_A_SERVER)

    match = re.fullmatch(
        r"⚠️ The command failed \(error ([0-9a-f]{6})\); nothing was changed\.", result.text
    )
    assert not result.ok and match, result.text
    [record] = [r for r in caplog.records if r.name == "assistant.admin.commands"]
    assert f"(error {match.group(1)})" in record.getMessage()
    assert "PromptHistory(name='assistant')" in record.getMessage()
    assert record.exc_info is not None


async def test_a_change_failing_inside_says_to_check_before_retrying(make_assistant, store) -> None:
    assistant = await make_assistant()
    commands = AdminCommands(
        prompts=store.prompts, versions=assistant.versions, admins=["discord:A1"]
    )
    async with store.engine.begin() as connection:
        await connection.exec_driver_sql("DROP TABLE prompt_bindings")

    result = await commands.run("prompt use assistant 1 --scope global", IN_A_SERVER)

    assert not result.ok
    assert re.fullmatch(
        r"⚠️ The command failed \(error [0-9a-f]{6}\); check `prompt list` before trying again, "
        r"in case it took effect\.",
        result.text,
    ), result.text


@pytest.mark.parametrize(
    ("command", "ending"),
    [
        (None, "nothing was changed."),
        (ShowPrompt(name="assistant"), "nothing was changed."),
        (RunEvals(), "eval runs that finished before it are kept."),
        (
            RollbackPrompt(name="assistant", where=Where()),
            "check `prompt list` before trying again, in case it took effect.",
        ),
    ],
)
def test_a_failure_says_what_may_have_changed(command, ending) -> None:
    assert command_failed("a1b2c3", command) == "⚠️ The command failed (error a1b2c3); " + ending
