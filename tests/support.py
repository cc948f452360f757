"""Helpers the test modules share: run a durable function as a job, with or without
a host talking to it. (Not collected: no ``test_`` prefix.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duron

Host = Callable[["duron.Job[..., Any]"], Awaitable[None]]
"""What a test does with a running job between ``start()`` and ``wait()``."""


async def run_job(
    dfn: duron.DurableFn[..., Any],
    storage: duron.LogStorage,
    *args: Any,
    clock: Callable[[], float] | None = None,
) -> Any:
    """Start (or replay) the job with ``args`` and return its result."""
    async with dfn.invoke(storage, clock=clock) as job:
        await job.start(*args)
        return await job.wait()


async def resume_job(
    dfn: duron.DurableFn[..., Any],
    storage: duron.LogStorage,
    clock: Callable[[], float] | None = None,
) -> Any:
    """Resume the job the log holds and return its result."""
    async with dfn.invoke(storage, clock=clock) as job:
        await job.resume()
        return await job.wait()


async def run_hosted(
    dfn: duron.DurableFn[..., Any], storage: duron.LogStorage, host: Host
) -> Any:
    """Start (or replay) the job, run ``host`` against it, return the job's result."""
    async with dfn.invoke(storage) as job:
        await job.start()
        await host(job)
        return await job.wait()
