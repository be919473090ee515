"""The server-wide buffer budget (``MAX_BUFFERED_MB``): shares, waits, refusals, the peak."""

from __future__ import annotations

import asyncio

import pytest

from picgate.errors import ServerBusy
from picgate.gateway.buffers import STEP, BufferBudget


def test_buffer_budget_share_released_on_exit_gives_bytes_back() -> None:
    async def run() -> None:
        budget = BufferBudget(1000, wait=0.01)
        async with budget.hold() as hold:
            await hold.take(600)
            await hold.take(400)
            assert (budget.held, hold.held) == (1000, 1000)
        assert budget.held == 0
        assert budget.peak == 1000

    asyncio.run(run())


def test_buffer_budget_full_waits_then_server_busy_with_retry_after() -> None:
    async def run() -> None:
        budget = BufferBudget(1000, wait=0.05)
        first = budget.hold()
        await first.take(800)
        with pytest.raises(ServerBusy) as caught:
            await budget.hold().take(300)
        assert caught.value.status_code == 503
        assert caught.value.code == "server_busy"
        assert caught.value.headers["Retry-After"] == "1"
        assert "MAX_BUFFERED_MB" in caught.value.message
        assert budget.held == 800  # the refused request took nothing

    asyncio.run(run())


def test_buffer_budget_waiter_gets_room_when_another_request_releases() -> None:
    async def run() -> None:
        budget = BufferBudget(1000, wait=30.0)
        first = budget.hold()
        await first.take(900)
        second = budget.hold()
        waiting = asyncio.ensure_future(second.take(500))
        await asyncio.sleep(0)
        assert not waiting.done()  # no room yet: it waits instead of failing
        first.release()
        await waiting
        assert (budget.held, budget.peak) == (500, 900)

    asyncio.run(run())


def test_buffer_hold_more_than_the_whole_budget_refused_at_once() -> None:
    async def run() -> None:
        budget = BufferBudget(1000, wait=30.0)  # a wait would hang the test: it must not wait
        hold = budget.hold()
        await hold.take(700)
        with pytest.raises(ServerBusy):
            await hold.take(301)
        assert budget.held == 700

    asyncio.run(run())


def test_buffer_hold_cover_grows_in_steps_not_per_chunk() -> None:
    async def run() -> None:
        budget = BufferBudget(10 * STEP)
        hold = budget.hold()
        for total in range(1000, 3 * STEP, 1000):
            await hold.cover(total)
            assert total <= hold.held <= total + STEP
        assert hold.held == 3 * STEP

    asyncio.run(run())
