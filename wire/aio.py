"""Waiting on the link without losing a cancellation.

On Python 3.11, ``asyncio.wait_for(fut, t)`` returns ``fut``'s result when ``fut`` completes in
the same loop iteration as the waiting task is cancelled: the cancellation is swallowed
(CPython issue gh-86296, fixed in 3.12 by rewriting wait_for on ``asyncio.timeout``).  A loop
that waits that way (``while True: wait_for(wake.wait(), 0.5)``) then never ends, and a
validator on SIGTERM hung holding its journal lock.  ``asyncio.wait`` only awaits a waiter
future, so a cancellation always reaches the caller: these helpers use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """True once ``event`` is set, False after ``timeout`` seconds (never eats a cancel)."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)


async def bounded(aw: Awaitable[T], timeout: float) -> T:
    """``aw``'s result, or TimeoutError after ``timeout`` (``aw`` cancelled then); a cancel
    of the caller always propagates."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise TimeoutError(f"not done in {timeout:g} s")
    return task.result()


async def settle(tasks: Iterable[asyncio.Future[Any]], timeout: float) -> None:
    """Cancel ``tasks`` and give them ``timeout`` seconds to end (a task that swallows its
    cancel is left behind rather than hang the caller)."""
    pending = set(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout)
