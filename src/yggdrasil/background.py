"""Background tasks that run beside a process's main work (a probe, a listener, a monitor)."""

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel every task, then wait until each has ended, so that what they use (a pool, a
    client) can be closed after. A task that had already failed raises its error here."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
