"""Each wait is bounded on its own, as `asyncio.timeout` around it would bound it."""

from __future__ import annotations

import asyncio

import pytest

from assistant.waits import WaitLimit


async def test_a_wait_past_its_limit_raises_timeout_and_the_task_goes_on() -> None:
    limit = WaitLimit()
    with pytest.raises(TimeoutError):
        await limit.wait(asyncio.sleep(5), 0.05)
    assert await limit.wait(asyncio.sleep(0.01, "next"), 1.0) == "next"  # not left cancelled
    limit.close()


async def test_time_between_waits_does_not_count() -> None:
    limit = WaitLimit()
    for _ in range(4):  # each wait is short; the work between them is longer than the limit
        await limit.wait(asyncio.sleep(0.01), 0.1)
        await asyncio.sleep(0.15)
    limit.close()


async def test_a_shorter_limit_after_a_longer_one_still_holds() -> None:
    limit = WaitLimit()
    await limit.wait(asyncio.sleep(0), 60.0)  # the timer now sits a minute away
    with pytest.raises(TimeoutError):
        await limit.wait(asyncio.sleep(5), 0.05)
    limit.close()


async def test_a_cancel_from_outside_is_a_cancel_not_a_timeout() -> None:
    async def reader() -> None:
        limit = WaitLimit()
        try:
            await limit.wait(asyncio.sleep(5), 2.0)
        finally:
            limit.close()

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
