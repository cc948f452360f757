"""What a worker learns from a job store about the leases it holds, on every SQL store.

A worker asks ``heartbeat()`` about the jobs it runs while those jobs may end (and
release their lease) at the same moment, and ``claim()`` while a job it runs may
have stalled past its lease. Each test runs on the SQLite store and, when a server
answers, the PostgreSQL store; the races are played by calling the store's methods
in the racy order, and a lease runs out by setting its expiry in the database
(a long lease: no renewal runs between a test's steps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import duron
from duron._jobstore import Heartbeat, JobStore

if TYPE_CHECKING:
    from store_backends import Backend

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]


@duron.effect
async def double(i: int) -> int:
    return i * 2


@duron.durable
async def doubled(ctx: duron.Context, i: int) -> int:
    return await ctx.run(double, i)


async def run_claimed(store: JobStore, job_id: str) -> object:
    """Run a job this store claimed to its end, as a worker does."""
    async with doubled.invoke(store.log(job_id)) as job:
        await job.resume()
        return await job.wait()


async def test_a_job_released_while_its_heartbeat_was_asked_is_not_lost(
    backend: Backend,
) -> None:
    store = await backend.store(lease=60)
    await store.submit(doubled.options(job_id="ends"), 1)
    await store.submit(doubled.options(job_id="taken"), 2)
    claims = await store.claim(2)
    assert [c.job_id for c in claims] == ["ends", "taken"]
    # The worker names the jobs it runs; before the store reads their rows, one
    # of them ends here and releases its lease, and another owner takes the other.
    running = [c.job_id for c in claims]
    assert await run_claimed(store, "ends") == 2
    backend.take_over("taken")
    beat = await store.heartbeat(running)
    assert beat == Heartbeat(lost=frozenset({"taken"}))


async def test_a_job_whose_lease_ran_out_is_not_claimed_again_by_its_holder(
    backend: Backend,
) -> None:
    store = await backend.store(lease=60)
    await store.submit(doubled.options(job_id="j"), 1)
    [claim] = await store.claim(1)
    assert (claim.job_id, claim.epoch) == ("j", 1)
    # The holder stalled past its lease; it still runs the job, so claiming it
    # again would run it twice in one worker.
    backend.expire("j")
    assert await store.claim(1) == []
    info = await store.get("j")
    assert (info.lease_owner, info.epoch) == (store.owner, 1)
    assert await store.heartbeat(["j"]) == Heartbeat()
    # Another owner may take it over, and then the holder has lost it.
    other = await backend.store(lease=60)
    [taken] = await other.claim(1)
    assert (taken.job_id, taken.epoch) == ("j", 2)
    assert await store.heartbeat(["j"]) == Heartbeat(lost=frozenset({"j"}))
