"""Tools: schemas from typed functions, parallel runs with failures as results, the built-ins."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.builtin_tools import builtin_registry, current_time
from assistant.calculator import CalculatorError, evaluate
from assistant.testing import CallTools, Reply
from assistant.tools import ToolRegistry, tool_from_function, wire_name
from assistant.turns import Completed, ToolStarted
from tests.conftest import collect, inbound, write_prompt

ALL = ("add", "fail", "slow", "meet", "wait_for_flag", "set_flag")


def add(a: int, b: int = 1) -> int:
    """Add two integers.

    Returns their sum.
    """
    return a + b


def fail(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


async def slow() -> str:
    """Takes too long."""
    await asyncio.sleep(5)
    return "done"


@pytest.fixture
def registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(add)
    registry.register(fail)
    registry.register(slow)
    return registry


async def run_one(registry: ToolRegistry, name: str, arguments: str, **kwargs: float) -> str:
    [result] = await registry.run_all(
        [("call-1", name, arguments)], allowed=ALL, time_limit=kwargs.get("time_limit", 2.0)
    )
    assert result.ok is False
    return result.content


def test_schema_from_signature_and_docstring() -> None:
    definition = tool_from_function(add).definition
    assert definition.name == "add"
    assert definition.description == "Add two integers.\n\nReturns their sum."
    assert definition.parameters["required"] == ["a"]
    assert definition.parameters["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": "integer", "default": 1},
    }
    assert "title" not in str(definition.parameters)
    assert definition.to_openai()["function"]["parameters"] == definition.parameters


def test_parameter_without_type_is_refused() -> None:
    def untyped(x, y: int) -> int:  # type: ignore[no-untyped-def]
        return y

    with pytest.raises(TypeError, match="'x' has no type"):
        ToolRegistry().register(untyped)


def test_duplicate_name_is_refused(registry: ToolRegistry) -> None:
    with pytest.raises(ValueError, match="'add' is already registered"):
        registry.register(add)


async def test_calls_run_in_parallel_and_results_keep_the_asked_order() -> None:
    barrier = asyncio.Barrier(2)

    async def meet(label: str, delay: float) -> str:
        """Returns only once both calls are running."""
        await barrier.wait()
        await asyncio.sleep(delay)
        return label

    registry = ToolRegistry()
    registry.register(meet)
    results = await registry.run_all(
        [
            ("c1", "meet", '{"label": "first", "delay": 0.05}'),
            ("c2", "meet", '{"label": "second", "delay": 0}'),
        ],
        allowed=["meet"],
        time_limit=1.0,
    )
    assert [(r.call_id, r.ok, r.content) for r in results] == [
        ("c1", True, "first"),
        ("c2", True, "second"),
    ]


async def test_successful_result_is_text(registry: ToolRegistry) -> None:
    [result] = await registry.run_all(
        [("c1", "add", '{"a": 2, "b": 40}')], allowed=ALL, time_limit=1.0
    )
    assert (result.name, result.ok, result.content) == ("add", True, "42")


@pytest.mark.parametrize("arguments", ["{not json", '{"a": "many"}', '{"b": 2}', "[1, 2]"])
async def test_invalid_arguments(registry: ToolRegistry, arguments: str) -> None:
    assert "invalid arguments" in await run_one(registry, "add", arguments)


async def test_exception_is_reported_not_raised(registry: ToolRegistry) -> None:
    content = await run_one(registry, "fail", '{"reason": "disk full"}')
    assert content == "error: RuntimeError: disk full"


async def test_slow_tool_times_out(registry: ToolRegistry) -> None:
    started = time.perf_counter()
    content = await run_one(registry, "slow", "{}", time_limit=0.05)
    assert "timed out" in content
    assert time.perf_counter() - started < 1


async def test_tool_not_allowed_is_refused(registry: ToolRegistry) -> None:
    [result] = await registry.run_all([("c1", "add", '{"a": 1}')], allowed=["fail"], time_limit=1.0)
    assert result.ok is False
    assert "no tool named 'add'" in result.content


async def test_sync_tools_run_in_a_thread_and_leave_the_loop_free() -> None:
    flag = threading.Event()

    def wait_for_flag() -> bool:
        """Blocks until the other tool sets the flag."""
        return flag.wait(timeout=2)

    async def set_flag() -> str:
        """Sets the flag from the event loop."""
        flag.set()
        return "set"

    registry = ToolRegistry()
    registry.register(wait_for_flag)
    registry.register(set_flag)
    results = await registry.run_all(
        [("c1", "wait_for_flag", "{}"), ("c2", "set_flag", "{}")], allowed=ALL, time_limit=3.0
    )
    assert [r.content for r in results] == ["true", "set"]


async def test_builtin_calculator_through_the_registry() -> None:
    [result] = await builtin_registry().run_all(
        [("c1", "calculator", '{"expression": "2^10"}')], allowed=["calculator"], time_limit=2.0
    )
    assert (result.ok, result.content) == (True, "1024")


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2+3*4", 14), ("2^10", 1024), ("sqrt(16)", 4), ("(1 + 2) * -3", -9), ("7 // 2", 3)],
)
def test_calculator_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "division by zero"),
        ("9**9**9", "exponents above"),
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__", "unsupported element"),
        ("", "empty"),
        ("2 +", "not an arithmetic expression"),
    ],
)
def test_calculator_refuses_with_a_clear_message(expression: str, message: str) -> None:
    with pytest.raises(CalculatorError, match=message):
        evaluate(expression)


def check_number_or_calculator_error(expression: str) -> None:
    started = time.perf_counter()
    try:
        result = evaluate(expression)
    except CalculatorError:
        pass
    else:
        assert isinstance(result, int | float)
    assert time.perf_counter() - started < 1


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=60))
def test_calculator_on_any_text(expression: str) -> None:
    check_number_or_calculator_error(expression)


ARITHMETIC = st.lists(
    st.sampled_from([*"0123456789", "+", "-", "*", "/", "//", "%", "**", "^", "(", ")", ".", " "]),
    max_size=40,
).map("".join)


@settings(deadline=None, max_examples=300)
@given(ARITHMETIC)
def test_calculator_on_arithmetic_like_text(expression: str) -> None:
    check_number_or_calculator_error(expression)


def test_calculator_deeply_nested_unsupported_operator() -> None:
    with pytest.raises(CalculatorError):
        evaluate("~" * 490 + "1")


@pytest.mark.parametrize(
    ("expression", "says"),
    [("(10**3000)**10000", "too large"), ("round(1, -10**8)", "between -100 and 100")],
)
def test_calculator_refuses_huge_work_before_doing_it(expression: str, says: str) -> None:
    # in a subprocess: computing these first would hold the GIL for minutes
    code = (
        "from assistant.calculator import CalculatorError, evaluate\n"
        f"try:\n    evaluate({expression!r})\n"
        "except CalculatorError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=5, capture_output=True, text=True
    )
    assert says in done.stdout


def test_current_time_in_paris() -> None:
    text = current_time("Europe/Paris")
    assert "CET" in text or "CEST" in text


def test_current_time_unknown_zone_names_it() -> None:
    with pytest.raises(ValueError, match="'Mars/Base'"):
        current_time("Mars/Base")


async def test_a_dotted_tool_name_travels_as_the_api_allows_and_comes_back_as_its_own(
    make_assistant, fake_llm, tools, prompts_dir
):
    """OpenAI refuses `server.tool` as a function name (the fake refuses it the same way): it
    goes out as `server__tool`, and the model's call of that name runs `server.tool`."""
    ran: list[str] = []

    def close_ticket(ticket: str) -> str:
        """Close a ticket."""
        ran.append(ticket)
        return f"closed {ticket}"

    tools.register(close_ticket, name="tickets.close")
    write_prompt(prompts_dir, tools=["tickets.close"], tool_choice="tickets.close")
    assistant = await make_assistant()
    fake_llm.script(
        CallTools(calls=(("tickets__close", {"ticket": "T-9"}),)), Reply(text="Closed T-9.")
    )

    events = await collect(assistant.respond(inbound("close T-9")))

    assert isinstance(events[-1], Completed) and ran == ["T-9"]
    [started] = [e for e in events if isinstance(e, ToolStarted)]
    assert started.name == "tickets.close"
    first, second = fake_llm.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["tickets__close"]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "tickets__close"}}
    [asked] = second["messages"][-2]["tool_calls"]
    assert asked["function"]["name"] == "tickets__close"


def test_names_the_api_would_refuse_are_made_safe_and_kept_apart():
    assert wire_name("tickets.close") == "tickets__close"
    assert wire_name("a b/c") == "a_b_c"
    long = wire_name("server." + "x" * 100)
    assert len(long) == 64 and long != wire_name("server." + "x" * 99 + "y")
    registry = ToolRegistry()
    registry.register(lambda: "1", name="a.b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one name"):
        registry.register(lambda: "2", name="a__b")  # type: ignore[arg-type]


async def test_the_fake_refuses_a_dotted_function_name_as_openai_does(fake_llm):
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "a.b", "parameters": {}}}],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake_llm.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status == 400
        assert "tools[0].function.name" in (await response.json())["error"]["message"]
