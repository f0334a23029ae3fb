"""The admin grammar: every string gets a command or a usage message, never a crash; and the
rules about a typed command hold however it was made (parsed, or built by a surface)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.admin.commands import AdminCommands
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
        ("prompt use helpdesk three", "a version is a whole number from 1, not 'three'"),
        ("prompt use helpdesk 3 --scope galaxy", "the scope is global, workspace or channel"),
        ("prompt use helpdesk 3 --scope", "--scope needs a value"),
        ("prompt use helpdesk 3 --target slack", "a place is platform/workspace[/channel]"),
        ("prompt ab helpdesk 2=90", "at least two VERSION=WEIGHT pairs"),
        ("prompt ab helpdesk 2=90 2=10", "version 2 appears twice"),
        ("prompt ab helpdesk 2=100 3=0", "at least two versions with a weight above zero"),
        ("prompt ab helpdesk 2=x 3=10", "a split is VERSION=WEIGHT"),
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
