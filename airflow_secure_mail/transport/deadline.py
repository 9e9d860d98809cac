"""Run a batch's workers under a hard deadline: the call ends by the deadline plus a short grace, cancelling included.

``asyncio.timeout`` around an ``asyncio.TaskGroup`` cancels each worker once and then waits for all of them,
however long. On Python 3.11 ``asyncio.wait_for`` (aiosmtplib reads every reply with it) swallows a
cancellation that lands in the same turn of the loop as the reply: that worker goes on, into a throttling
pause of a minute, and the batch with it. Here the workers are cancelled again until they end, and any
still running after the grace is left behind (the batch no longer lets it send: see ``_Batch.stopped``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

STOP_GRACE = 1.0
"""Seconds the workers get to end once cancelled, before they are left behind."""
_RECANCEL = 0.05
"""How often a worker that has not ended is cancelled again."""


async def run_until(workers: Iterable[Coroutine[Any, Any, None]], end: float, on_stop: Callable[[], None]) -> bool:
    """Run ``workers`` until all end or ``end`` (``time.monotonic``); True if the deadline cut them off.

    ``on_stop`` is called before the workers are cancelled (the deadline, a crash, our caller cancelling).
    A worker's crash (a bug) stops the others and is raised as itself.
    """
    tasks = {asyncio.create_task(worker) for worker in workers}
    for task in tasks:
        task.add_done_callback(_retrieve)
    pending = set(tasks)
    try:
        while pending and (left := end - time.monotonic()) > 0:
            done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_EXCEPTION)
            crash = next((t.exception() for t in done if not t.cancelled() and t.exception() is not None), None)
            if crash is not None:
                on_stop()
                await stop(pending)
                raise crash
    except asyncio.CancelledError:
        on_stop()
        _cancel(pending)  # our caller's cancellation: no waiting here, it may have a deadline of its own
        raise
    if not pending:
        return False
    on_stop()
    await stop(pending)
    return True


async def stop(tasks: set[asyncio.Task[None]], grace: float = STOP_GRACE) -> None:
    """Cancel ``tasks`` until they end, for at most ``grace`` seconds; the ones left are logged and let go."""
    until = time.monotonic() + grace
    while tasks and (left := until - time.monotonic()) > 0:
        _cancel(tasks)
        _, tasks = await asyncio.wait(tasks, timeout=min(left, _RECANCEL))
    if tasks:
        log.warning("%d SMTP session(s) did not stop within %.1fs of the deadline; left behind", len(tasks), grace)
        _cancel(tasks)


def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()


def _retrieve(task: asyncio.Task[None]) -> None:
    """Read a worker's end so asyncio never logs "exception was never retrieved" (a crash is raised by us)."""
    if not task.cancelled():
        task.exception()
