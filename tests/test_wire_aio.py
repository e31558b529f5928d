"""wire.aio: a cancellation that races with the awaited event always reaches the caller.

The race is made deterministic: the event is set and the waiting task cancelled in the same
loop iteration, the pattern that hung validators on SIGTERM (Python 3.11's wait_for)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

import pytest

from wire.aio import bounded, settle, wait_event


async def _loop_waiting(wait: Callable[[asyncio.Event], Awaitable[object]],
                        wake: asyncio.Event, rounds: list[int]) -> None:
    """The uplink's old idle loop: wake up, clear, wait again, for ever."""
    while True:
        rounds[0] += 1
        wake.clear()
        await wait(wake)


async def _race(wait: Callable[[asyncio.Event], Awaitable[object]]) -> bool:
    """True when the loop ended on the cancel that raced with its wake-up."""
    wake, rounds = asyncio.Event(), [0]
    task = asyncio.create_task(_loop_waiting(wait, wake, rounds))
    await asyncio.sleep(0.01)
    wake.set()
    task.cancel()  # same iteration as the wake-up
    await asyncio.sleep(0.05)
    ended = task.done()
    task.cancel()  # a second cancel, so the test itself never hangs
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return ended


def test_wait_event_never_swallows_a_cancel() -> None:
    for _ in range(20):
        assert asyncio.run(_race(lambda e: wait_event(e, 0.5)))


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for was fixed in 3.12")
def test_the_bug_it_replaces_is_real_on_this_python() -> None:
    """Control: asyncio.wait_for on 3.11 loses the cancel in the same race."""
    async def old(e: asyncio.Event) -> object:
        return await asyncio.wait_for(e.wait(), 0.5)

    assert not asyncio.run(_race(old))


def test_wait_event_times_out_and_sees_a_set_event() -> None:
    async def go() -> tuple[bool, bool]:
        e = asyncio.Event()
        first = await wait_event(e, 0.01)
        e.set()
        return first, await wait_event(e, 0.01)

    assert asyncio.run(go()) == (False, True)


def test_bounded_gives_up_and_cancels() -> None:
    async def go() -> bool:
        slow = asyncio.ensure_future(asyncio.sleep(10))
        with pytest.raises(TimeoutError):
            await bounded(slow, 0.01)
        await asyncio.sleep(0)
        return slow.cancelled()

    assert asyncio.run(go())
    assert asyncio.run(bounded(asyncio.sleep(0, result=7), 1.0)) == 7


def test_settle_leaves_a_task_that_ignores_its_cancel_behind() -> None:
    async def stubborn() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1)

    async def go() -> bool:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await settle([task], 0.05)
        took = loop.time() - t0
        done = task.done()
        task.get_loop().call_soon(task.cancel)
        return took < 1.0 and not done

    # asyncio.run would wait for the stubborn task at the end: run it on a loop we drop.
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(go())
    finally:
        loop.close()
