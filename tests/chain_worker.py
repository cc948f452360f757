"""A job that continues as new, run in a subprocess that ``test_continue_as_new.py``
SIGKILLs around its first switch of logs.

Usage: ``python chain_worker.py STORE TARGET CRASH`` where STORE is ``file``
(TARGET: a directory, the log is ``TARGET/log.jsonl``), ``sqlite`` (TARGET: the
database file) or ``postgres`` (TARGET: ``DSN SCHEMA``), and CRASH says where the
process kills itself (a real SIGKILL) at the switch from run 0 to run 1:

* ``before``: before anything of the switch is written;
* ``between``: (file store) once the old log's end entry, naming the next run,
  is written, before the next run's file is created;
* ``after``: once the switch is done, before the new run does anything;
* ``none``: no crash; the job is started (or resumed) and run to its end, and the
  worker prints ``{"result": ...}`` as one JSON line.

Every effect appends its number to ``effects.log`` next to the log (fsynced), so
the test can tell which effects ran, and how often.

This file is not a test module (pytest collects ``test_*.py`` only); it is run by path.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duron
from duron.contrib.storage import FileLogStorage, PostgresStore, SQLiteStore

LAST = 12
"""The job ticks 0 .. LAST-1, three a run: runs 0 to 3."""


class _Side:
    path: Path | None = None


@duron.effect
def tick(n: int) -> int:
    assert _Side.path is not None
    with open(_Side.path, "a") as f:
        f.write(f"{n}\n")
        f.flush()
        os.fsync(f.fileno())
    return n


@duron.durable
async def counter(ctx: duron.Context, n: int, total: int = 0) -> int:
    for i in range(3):
        total += await ctx.run(tick, n + i)
    if n + 3 >= LAST:
        return total
    ctx.continue_as_new(n + 3, total=total)


class Crashing:
    """A log storage that kills its process at one point of the first switch."""

    def __init__(self, inner: Any, crash: str) -> None:
        self._inner = inner
        self._crash = crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def continue_log(
        self, entries: Sequence[bytes], first: bytes, /, *, inbox_done: Sequence[int]
    ) -> None:
        first_switch = b'"run":1' in first
        if first_switch and self._crash == "before":
            _die()
        if first_switch and self._crash == "between":
            await self._inner.append(entries)
            _die()
        await self._inner.continue_log(entries, first, inbox_done=inbox_done)
        if first_switch and self._crash == "after":
            _die()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def main(kind: str, target: str, crash: str) -> None:
    store: SQLiteStore | PostgresStore | None = None
    if kind == "file":
        _Side.path = Path(target) / "effects.log"
        log: Any = FileLogStorage(Path(target) / "log.jsonl")
    elif kind == "sqlite":
        _Side.path = Path(target).with_name("effects.log")
        store = SQLiteStore(target, lease=1.0)
        log = store.log("ticker")
    else:
        dsn, schema = target.split()
        _Side.path = Path(os.environ["CHAIN_SIDE_DIR"]) / "effects.log"
        store = PostgresStore(dsn, schema=schema, lease=1.0)
        log = store.log("ticker")
    try:
        while True:
            try:
                async with counter.invoke(Crashing(log, crash)) as job:
                    await job.start(0)
                    result = await job.wait()
                break
            except duron.LogLockedError:
                # The killed process's lease runs out in a second (a store's).
                await asyncio.sleep(0.2)
    finally:
        if store is not None:
            await store.close()
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
