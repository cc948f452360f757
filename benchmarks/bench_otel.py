"""What ``duron.contrib.otel`` costs per effect: tracing off, on with no SDK, on
with the SDK and an in-memory exporter.

    .venv/bin/python benchmarks/bench_otel.py [--quick] [--clock cpu]

Each mode runs in its own interpreter (``--worker MODE``), the modes alternating
repeat by repeat so that a busy neighbour slows them alike; the best of the
repeats is kept. Workloads: ``sequential`` (``for i in range(n): await
ctx.run(step, i)``, where ``step`` returns at once) live on a memory log, the same
job replayed from its finished log, and ``gather(1000)`` live. Modes:

* ``off``: not instrumented (what every user who does not call ``instrument()``
  runs; ``./dev bench --against main`` compares it with the code before the
  observation seam existed);
* ``api``: ``instrument()`` with the OpenTelemetry API alone (no SDK
  configured: its no-op tracer and meter), the cost of Duron's own bookkeeping;
* ``sdk``: ``instrument()`` with an SDK ``TracerProvider`` (a
  ``SimpleSpanProcessor`` into an ``InMemorySpanExporter``) and ``MeterProvider``:
  a span and three metric updates per live effect.

The reference is ``off``; the floor is plain asyncio awaiting the same ``step``
(no Duron at all). A replay makes no span in any mode: its ``api`` and ``sdk``
figures should match ``off``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duron
from duron.contrib.storage import MemoryLogStorage

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MODES = ("off", "api", "sdk")


@duron.effect
async def step(i: int) -> int:
    return i + 1


@duron.durable
async def seq_flow(ctx: duron.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run(step, i)
    return total


@duron.durable
async def gather_flow(ctx: duron.Context, n: int) -> int:
    return sum(await asyncio.gather(*[ctx.run(step, i) for i in range(n)]))


def worker(mode: str, n: int, gather_n: int, clock: str) -> dict[str, Any]:
    spans: Any = None
    if mode != "off":
        import duron.contrib.otel

        if mode == "sdk":
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )

            spans = InMemorySpanExporter()
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
            duron.contrib.otel.instrument(
                tracer_provider=tracer_provider,
                meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
            )
        else:
            duron.contrib.otel.instrument()

    now = time.process_time if clock == "cpu" else time.perf_counter

    async def timed(flow: Any, storage: Any, arg: int | None) -> float:
        t0 = now()
        async with flow.invoke(storage) as job:
            if arg is None:
                await job.resume()
            else:
                await job.start(arg)
            await job.wait()
        return now() - t0

    async def plain(n: int) -> float:
        async def plain_step(i: int) -> int:
            return i + 1

        t0 = now()
        total = 0
        for i in range(n):
            total += await plain_step(i)
        return now() - t0

    async def main() -> dict[str, Any]:
        await timed(seq_flow, MemoryLogStorage(), 10)  # imports, adapters
        live_log = MemoryLogStorage()
        out = {
            "seq_live": await timed(seq_flow, live_log, n) / n,
            "seq_replay": await timed(seq_flow, MemoryLogStorage(live_log.raw), None)
            / n,
            "gather_live": await timed(gather_flow, MemoryLogStorage(), gather_n)
            / gather_n,
            "plain": await plain(n) / n,
        }
        if spans is not None:
            out["spans"] = len(spans.get_finished_spans())
        return out

    return asyncio.run(main())


def run_worker(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__)),
        "--worker",
        mode,
        "--n",
        str(args.n),
        "--gather",
        str(args.gather),
        "--clock",
        args.clock,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{mode}: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller N, fewer repeats")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--gather", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 2_000 if args.quick else 10_000
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.gather, args.clock)))
        return 0
    repeats = args.repeats or (3 if args.quick else 7)
    best: dict[str, dict[str, float]] = {}
    spans: dict[str, int] = {}
    for r in range(repeats):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            print(f"==> {mode} run {r + 1}/{repeats}", file=sys.stderr, flush=True)
            out = run_worker(mode, args)
            if "spans" in out:
                spans[mode] = int(out.pop("spans"))
            for key, value in out.items():
                kept = best.setdefault(mode, {})
                kept[key] = min(value, kept.get(key, value))
    off = best["off"]
    floor = min(b["plain"] for b in best.values())
    print(
        f"\nµs per effect, best of {repeats} ({args.clock} clock); sequential "
        f"N={args.n:,}, gather N={args.gather:,}; floor: plain asyncio awaits "
        f"{floor * 1e6:.2f} µs\n"
    )
    rows = (
        ("sequential live", "seq_live"),
        ("sequential replay", "seq_replay"),
        ("gather(1000) live", "gather_live"),
    )
    print(f"{'workload':<20}" + "".join(f"{m:>10}{'':>9}" for m in MODES))
    for label, key in rows:
        cells = []
        for mode in MODES:
            us = best[mode][key] * 1e6
            rel = best[mode][key] / off[key]
            cells.append(
                f"{us:>10.2f}" + (f"{'':>9}" if mode == "off" else f"  x{rel:<5.2f}")
            )
        print(f"{label:<20}" + "".join(cells))
    if spans:
        # A span per live effect, plus a run span and a job span per live job
        # (the warm-up, sequential and gather jobs); none for the replay.
        expected = 10 + args.n + args.gather + 3 * 2
        sent = spans.get("sdk")
        verdict = "as expected" if sent == expected else f"expected {expected}"
        print(f"\nspans the sdk mode sent in one process: {sent} ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
