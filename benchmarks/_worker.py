"""One benchmark measurement, run in its own interpreter by ``bench_core.py``.

This file must stay self-contained: it runs under ``python -I`` (no script directory
on ``sys.path``, so the ``duron`` it imports is the one installed in that
interpreter's environment) either with this project's ``.venv`` (``--impl ours``) or
with the side environment holding ``duron==0.0.3`` from PyPI (``--impl seed``). Both
implementations share the decorator and ``ctx.run`` API, so the workloads below are
the same code for both; only the way a job is opened differs.

It prints one JSON line per finished run, then a last JSON object: every run's wall
and CPU time, the effects that really ran, and the process's memory high-water mark.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any


def _source_first() -> None:
    """``--src=DIR``: import the ``duron`` in DIR (another checkout of this repo)."""
    for arg in sys.argv[1:]:
        if arg.startswith("--src="):
            sys.path.insert(0, arg.removeprefix("--src="))


_source_first()

import duron  # noqa: E402 - after --src put its tree first
from duron.contrib import storage as storage_mod  # noqa: E402

_effect_runs = 0
WARMUP_N = 10


@duron.effect
async def step(i: int) -> int:
    global _effect_runs
    _effect_runs += 1
    return i + 1


@duron.durable
async def seq_flow(ctx: duron.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run(step, i)
    return total


@duron.durable
async def gather_flow(ctx: duron.Context, n: int) -> int:
    results = await asyncio.gather(*[ctx.run(step, i) for i in range(n)])
    return sum(results)


FLOWS: dict[str, Any] = {"seq": seq_flow, "gather": gather_flow}


# --impl plain: the same workloads on plain asyncio, no Duron at all: ctx.run(step, i)
# becomes step(i). What the workload's own shape costs (its gather, its awaits) is a
# floor no durable runtime on this loop can go under.


async def plain_step(i: int) -> int:
    global _effect_runs
    _effect_runs += 1
    return i + 1


async def plain_seq(n: int) -> int:
    total = 0
    for i in range(n):
        total += await plain_step(i)
    return total


async def plain_gather(n: int) -> int:
    results = await asyncio.gather(*[plain_step(i) for i in range(n)])
    return sum(results)


PLAIN: dict[str, Any] = {"seq": plain_seq, "gather": plain_gather}


# --impl floor: the plain workload plus what a log costs at the least: live, each
# effect's entry encoded with orjson (and written and flushed, for a file); replay,
# each line of the same log read and decoded. Duron's own cost is what it takes
# above this.


class FloorLog:
    """Entries as bytes: kept in a list (memory) or written to a file, one flushed
    write per entry; or, to replay, read back and decoded line by line."""

    def __init__(self, path: Path | None, mode: str) -> None:
        import orjson  # only this tree's environment has it (not the seed's)

        self.orjson: Any = orjson
        self.path = path
        self.mode = mode
        self.entries: list[bytes] = []

    def record(self, i: int, result: int) -> None:
        data = self.orjson.dumps(
            {
                "type": "done",
                "id": i,
                "t": time.time(),
                "kind": "effect",
                "name": "step",
                "inputs": {"i": i},
                "result": result,
            }
        )
        if self.file is None:
            self.entries.append(data)
        else:
            self.file.write(data + b"\n")
            self.file.flush()

    def __enter__(self) -> FloorLog:
        self.file: Any = None
        if self.path is not None and self.mode == "live":
            self.file = open(self.path, "wb", buffering=0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()

    def replay(self) -> list[Any]:
        assert self.path is not None
        with open(self.path, "rb") as f:
            return [self.orjson.loads(line) for line in f]


async def floor_run(shape: str, log: FloorLog, n: int) -> int:
    if log.mode == "replay":
        decoded = log.replay()
        return await PLAIN[shape](n) if decoded else 0

    async def logged(i: int) -> int:
        result = await plain_step(i)
        log.record(i, result)
        return result

    if shape == "seq":
        total = 0
        for i in range(n):
            total += await logged(i)
        return total
    return sum(await asyncio.gather(*[logged(i) for i in range(n)]))


def make_storage(impl: str, store: str, path: Path | None, mode: str = "live") -> Any:
    if impl == "plain":
        return None
    if impl == "floor":
        return FloorLog(path if store == "file" else None, mode)
    if store == "memory":
        return storage_mod.MemoryLogStorage()
    assert path is not None
    if impl in ("ours", "ref"):
        return storage_mod.FileLogStorage(path, durability="flush")
    return storage_mod.FileLogStorage(path)


async def run_job(impl: str, flow: Any, storage: Any, n: int) -> int:
    if impl in ("plain", "floor"):
        shape = "seq" if flow is FLOWS["seq"] else "gather"
        if impl == "plain":
            result: int = await PLAIN[shape](n)
            return result
        with storage:
            return await floor_run(shape, storage, n)
    if impl in ("ours", "ref"):
        async with flow.invoke(storage) as job:
            await job.start(n)
            result = await job.wait()
        return result
    # duron 0.0.3: a Session opens the log; start() replays what the log holds.
    seed: Any = duron
    async with seed.Session(storage) as session:
        task = await session.start(flow, n)
        result = await task.result()
    return result


async def timed(
    job: Coroutine[Any, Any, int], profiler: cProfile.Profile | None
) -> tuple[int, float, float]:
    """Run the job, timed from opening its log to its result (loop set-up excluded).

    Returns the result, the wall time and the CPU time of the whole process (every
    thread), which other load on the machine disturbs much less than wall time.
    """
    if profiler is not None:
        profiler.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    result = await job
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if profiler is not None:
        profiler.disable()
    return result, wall, cpu


def memory_kib() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process in KiB, from /proc when it exists."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        # ru_maxrss is KiB on Linux, bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            peak //= 1024
        out = {"VmRSS": peak, "VmHWM": peak}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--impl", choices=["ours", "ref", "seed", "plain", "floor"], required=True
    )
    p.add_argument("--src", type=Path, help="import duron from this checkout")
    p.add_argument("--shape", choices=sorted(FLOWS), required=True)
    p.add_argument("--mode", choices=["live", "replay"], required=True)
    p.add_argument("--store", choices=["memory", "file"], required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--log", type=Path, help="the file log to write (live) or replay")
    p.add_argument("--profile", type=Path, help="write cProfile stats of run 1 here")
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help=f"skip the untimed N={WARMUP_N} job run first on a memory log",
    )
    a = p.parse_args()

    if a.store == "file" and a.log is None:
        p.error("--store file needs --log")
    if a.impl == "plain" and (a.mode, a.store) != ("live", "memory"):
        p.error("--impl plain has no log: --mode live --store memory")
    if a.mode == "replay" and a.store != "file":
        p.error("replay reads a log written by an earlier process: --store file")

    global _effect_runs
    flow = FLOWS[a.shape]
    expected = a.n * (a.n + 1) // 2
    # A small job first, on a throwaway memory log: imports, adapters and caches
    # that every process pays once are set up here, not charged per effect.
    cold_s = 0.0
    if a.warmup:
        warm = make_storage(a.impl, "memory", None)
        _, cold_s, _ = asyncio.run(timed(run_job(a.impl, flow, warm, WARMUP_N), None))
        del warm
    before = memory_kib()
    times: list[float] = []
    cpu_times: list[float] = []
    calls: list[int] = []
    for r in range(a.repeat):
        path: Path | None = None
        if a.store == "file":
            # Live: every repeat writes a fresh log and the last one is kept for
            # the replay measurements. Replay: every repeat reads the same log.
            path = a.log
            if a.mode == "live" and a.impl != "floor":
                assert path is not None
                if r < a.repeat - 1:
                    path = path.with_name(f"{path.name}.{r}")
                if path.exists():
                    path.unlink()
        storage = make_storage(a.impl, a.store, path, a.mode)
        _effect_runs = 0
        profiler = cProfile.Profile() if a.profile and r == 0 else None
        result, seconds, cpu = asyncio.run(
            timed(run_job(a.impl, flow, storage, a.n), profiler)
        )
        times.append(seconds)
        cpu_times.append(cpu)
        calls.append(_effect_runs)
        if result != expected:
            raise SystemExit(f"wrong result {result!r}, expected {expected!r}")
        want_calls = a.n if a.mode == "live" or a.impl == "floor" else 0
        if _effect_runs != want_calls:
            raise SystemExit(
                f"{a.mode} ran the effect {_effect_runs} times, expected {want_calls}"
            )
        # One line per finished run, so a parent that times out keeps these.
        print(json.dumps({"run": r, "s": seconds, "cpu_s": cpu}), flush=True)
        if profiler is not None:
            assert a.profile is not None
            a.profile.write_text(profile_report(profiler))
        if path is not None and path != a.log:
            path.unlink()
        del storage
        # A finished job may sit in reference cycles until the collector runs; let
        # it run, so the peak below is one run's, whatever the number of repeats.
        gc.collect()
    after = memory_kib()
    print(
        json.dumps(
            {
                "times_s": times,
                "cpu_s": cpu_times,
                "calls": calls,
                "cold_s": cold_s,
                "rss_before_kib": before["VmRSS"],
                "peak_kib": after["VmHWM"],
                "log_bytes": os.path.getsize(a.log) if a.store == "file" else None,
            }
        )
    )


def profile_report(profiler: cProfile.Profile, top: int = 25) -> str:
    """The top functions by cumulative and by own time, as % of the profiled time."""
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in stats.values()) or 1.0
    rows = [
        (where(file, line, name), nc, tt / total * 100, ct / total * 100)
        for (file, line, name), (_, nc, tt, ct, _) in stats.items()
    ]
    out = io.StringIO()
    out.write(
        f"profiled time {total:.3f} s. cProfile's per-call overhead inflates call-heavy"
        " code; cum % passes 100 for coroutines that are resumed many times.\n"
    )
    for title, key in (("cumulative", 3), ("own", 2)):
        out.write(f"\nby {title} time\n")
        out.write(f"  {'cum %':>6}  {'own %':>6}  {'calls':>7}  function\n")
        ranked = sorted(rows, key=lambda r: r[key], reverse=True)
        for name, calls, own, cum in ranked[:top]:
            out.write(f"  {cum:>6.1f}  {own:>6.1f}  {calls:>7}  {name}\n")
    return out.getvalue()


def where(file: str, line: int, name: str) -> str:
    """``pkg/module.py:line(name)``: enough of the path to tell duron from anyio."""
    if file == "~":  # a built-in
        return name
    parts = Path(file).parts[-2:]
    return f"{'/'.join(parts)}:{line}({name})"


if __name__ == "__main__":
    main()
