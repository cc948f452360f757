"""A writer that stalled past its lease starts no effect when it wakes up.

A real process is stopped (SIGSTOP) inside a durable ``asyncio.sleep``; its lease
runs out, a second process takes the job over and finishes it; then the first is
continued (SIGCONT). Its sleep is due and the next effect would start: it must
first find out that the job is no longer its own, and stop with that, so the
effect runs once, in the second process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import duron
from duron.contrib.storage import MemoryLogStorage

HERE = Path(__file__).parent

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGSTOP and SIGCONT are POSIX signals"
)


def spawn(db: Path, side: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "stalled_writer.py"), str(db), str(side)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(side: Path) -> list[str]:
    return side.read_text().splitlines() if side.exists() else []


def test_a_writer_woken_past_its_lease_starts_no_effect(tmp_path: Path) -> None:
    db, side = tmp_path / "jobs.db", tmp_path / "side.txt"
    stalled = spawn(db, side)
    try:
        deadline = time.monotonic() + 20
        while not lines(side):
            assert stalled.poll() is None, stalled.communicate()
            assert time.monotonic() < deadline, "the first effect never ran"
            time.sleep(0.02)
        # Inside its durable sleep: stop it there, past its one-second lease.
        stalled.send_signal(signal.SIGSTOP)
        other = spawn(db, side)
        out, err = other.communicate(timeout=30)
        assert (other.returncode, out, err) == (0, "finished done\n", "")
    finally:
        stalled.send_signal(signal.SIGCONT)
    out, err = stalled.communicate(timeout=30)
    assert stalled.returncode == 0, err
    assert out == (
        "lease lost: job j: lease lost, nothing was written: another writer took "
        "the job over (epoch 2; this writer had 1) after this writer's lease "
        "expired, and the job has since ended (completed)\n"
    )
    assert lines(side) == [f"before {stalled.pid}", f"after {other.pid}"]


# -- a backoff that outlasts the lease -----------------------------------------------------

attempts: list[int] = []


@duron.effect(retry=duron.RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=0))
async def flaky_charge() -> str:
    attempts.append(1)
    raise ConnectionError("bank unreachable")


@duron.durable
async def pay(ctx: duron.Context) -> str:
    return await ctx.run(flaky_charge)


class LeasedLog(MemoryLogStorage):
    """A log whose lease is lost once the first attempt failed."""

    def lease_fresh(self) -> bool:
        return not attempts

    async def confirm_lease(self) -> None:
        raise duron.LeaseLostError(job="j", detail="another writer took the job")


def test_no_attempt_starts_after_a_backoff_on_a_lost_lease() -> None:
    async def main() -> None:
        attempts.clear()
        async with pay.invoke(LeasedLog()) as job:
            await job.start()
            with pytest.raises(
                duron.LeaseLostError,
                match=r"^job j: lease lost, nothing was written: another writer "
                r"took the job$",
            ):
                await job.wait()

    anyio.run(main)
    assert attempts == [1]  # the second attempt never started
