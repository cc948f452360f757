"""Core runtime benchmark: µs per effect, live and replayed, against duron 0.0.3.

Run it with ``./dev bench`` (or ``.venv/bin/python benchmarks/bench_core.py``)::

    ./dev bench              # full run: N up to 100k (best of 5 at 1k, of 3 at 10k)
    ./dev bench --quick      # N up to 10k, fewer repeats: a look in ~10 s
    ./dev bench --no-seed    # this implementation only
    ./dev bench --profile    # cProfile of the two hottest workloads instead
    ./dev bench --against REF  # also this repo at commit REF, in the same run

Every measurement runs in a fresh interpreter (``_worker.py``), one implementation at
a time, so timings and peak memory never leak from one case into the next. The
reference is ``duron==0.0.3`` from PyPI, the original implementation of this API,
installed on demand into ``benchmarks/.venv-seed-3.X`` (git-ignored; one per Python
version, the one running this script, so that both sides run on the same Python). See
``benchmarks/README.md`` for how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKER = BENCH / "_worker.py"
# One side environment per Python version: both implementations run on the
# interpreter this script runs on (./dev benchpy 3.X picks another one).
SEED_VENV = BENCH / f".venv-seed-{sys.version_info[0]}.{sys.version_info[1]}"
SEED_SPEC = "duron==0.0.3"
SEED_VERSION = "0.0.3"
WARMUP_N = 10  # the untimed job _worker.py runs first (its WARMUP_N)

LIVE_TARGET = 5.0
REPLAY_TARGET = 15.0
# Verdict thresholds: replay µs/effect may rise this much from one N to 10x that N
# and still count as linear; peak memory may rise this much and still count as flat.
LINEAR_SLACK = 1.5
FLAT_MIB = 4.0
FLAT_FRACTION = 0.10


@dataclass(frozen=True)
class Case:
    shape: str  # "seq" or "gather"
    mode: str  # "live" or "replay"
    store: str  # "memory" or "file"
    n: int
    repeat: int

    @property
    def log_name(self) -> str | None:
        """Live file runs write this log; the replay of the same shape and N reads it."""
        return f"{self.shape}-{self.n}.jsonl" if self.store == "file" else None

    @property
    def label(self) -> str:
        shape = "sequential" if self.shape == "seq" else f"gather({self.n})"
        return f"{shape} {self.mode} {self.store}"

    @property
    def target(self) -> float:
        return REPLAY_TARGET if self.mode == "replay" else LIVE_TARGET


@dataclass
class Outcome:
    status: str  # "ok", "timeout", "error", "skipped"
    best_s: float | None = None  # on the clock the run was asked to use
    times_s: list[float] = field(default_factory=list)  # wall time of each run
    cpu_s: list[float] = field(default_factory=list)  # CPU time of each run
    peak_kib: int | None = None
    rss_before_kib: int | None = None
    log_bytes: int | None = None
    cold_s: float | None = None
    detail: str = ""

    def us_per_effect(self, n: int) -> float | None:
        return None if self.best_s is None else self.best_s / n * 1e6

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_kib is None else self.peak_kib / 1024


def plan(quick: bool) -> list[Case]:
    """The workloads, live runs before the replays that read their logs."""
    live_ns = [1_000] if quick else [1_000, 10_000]
    replay_ns = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]

    def rep(n: int, mode: str = "live") -> int:
        if quick:
            return 3 if n <= 1_000 else 1
        if n >= 100_000:
            # The 100k replays decide the verdicts: worth three runs. The 100k
            # live run mostly writes the log they read.
            return 3 if mode == "replay" else 1
        return 5 if n <= 1_000 else 3

    cases = [Case("seq", "live", "memory", n, rep(n)) for n in live_ns]
    # The live file run at each replay N also writes the log that replay reads.
    cases += [Case("seq", "live", "file", n, rep(n)) for n in replay_ns]
    cases += [Case("seq", "replay", "file", n, rep(n, "replay")) for n in replay_ns]
    g = 1_000
    cases += [
        Case("gather", "live", "memory", g, rep(g)),
        Case("gather", "live", "file", g, rep(g)),
        Case("gather", "replay", "file", g, rep(g)),
    ]
    return cases


# -- running one measurement ------------------------------------------------------


def run_case(
    python: Path,
    impl: str,
    case: Case,
    logdir: Path,
    timeout: float,
    clock: str = "wall",
    profile: Path | None = None,
    src: Path | None = None,
    replay_from: Path | None = None,
) -> Outcome:
    """One workload in a fresh process. ``src``: import duron from that tree;
    ``replay_from``: the folder whose live run wrote the log a replay reads."""
    key = "s" if clock == "wall" else "cpu_s"
    log = logdir / case.log_name if case.log_name else None
    if case.mode == "replay" and replay_from is not None and case.log_name:
        log = replay_from / case.log_name
    if case.mode == "replay" and (log is None or not log.exists()):
        return Outcome("skipped", detail="no log: its live run did not finish")
    cmd = [
        str(python),
        "-I",  # never import the duron of the current directory or PYTHONPATH
        str(WORKER),
        f"--impl={impl}",
        f"--shape={case.shape}",
        f"--mode={case.mode}",
        f"--store={case.store}",
        f"--n={case.n}",
        f"--repeat={case.repeat}",
    ]
    if log is not None:
        cmd.append(f"--log={log}")
    if profile is not None:
        cmd.append(f"--profile={profile}")
    if src is not None:
        cmd.append(f"--src={src}")
    try:
        proc = subprocess.run(
            cmd, cwd=logdir, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        if log is not None and case.mode == "live":
            log.unlink(missing_ok=True)  # a partial log must not be replayed
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        runs = [json.loads(line) for line in (out or "").splitlines() if line]
        if runs:  # some repeats finished: keep them, but not the memory figure
            return Outcome(
                "ok",
                min(r[key] for r in runs),
                [r["s"] for r in runs],
                [r["cpu_s"] for r in runs],
                detail=f"{len(runs)} of {case.repeat} runs",
            )
        return Outcome("timeout", detail=f"> {timeout:g} s")
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return Outcome(
            "error", detail=lines[-1] if lines else f"exit {proc.returncode}"
        )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Outcome(
        "ok",
        best_s=min(data["times_s" if clock == "wall" else "cpu_s"]),
        times_s=data["times_s"],
        cpu_s=data["cpu_s"],
        peak_kib=data["peak_kib"],
        rss_before_kib=data["rss_before_kib"],
        log_bytes=data["log_bytes"],
        cold_s=data["cold_s"],
    )


# -- the reference environment ----------------------------------------------------


def seed_python(install: bool) -> tuple[Path | None, str]:
    """The side venv's interpreter, created on demand, or None and the reason."""
    py = SEED_VENV / "bin" / "python"
    if sys.platform == "win32":
        py = SEED_VENV / "Scripts" / "python.exe"
    probe = [
        str(py),
        "-I",
        "-c",
        "import importlib.metadata as m; print(m.version('duron'))",
    ]

    def installed() -> bool:
        r = subprocess.run(probe, capture_output=True, text=True, check=False)
        return r.returncode == 0 and r.stdout.strip() == SEED_VERSION

    if py.exists() and installed():
        return py, ""
    if not install:
        return None, f"{SEED_VENV} has no {SEED_SPEC} (run without --no-install)"
    say(f"creating {SEED_VENV.relative_to(ROOT)} with {SEED_SPEC} from PyPI")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(SEED_VENV)],
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SEED_SPEC,
        ],
    ]
    for step in steps:
        r = subprocess.run(step, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()
            return (
                None,
                f"cannot install {SEED_SPEC}: {tail[-1] if tail else r.returncode}",
            )
    if not installed():
        return None, f"{SEED_SPEC} did not import in {SEED_VENV}"
    return py, ""


def python_version(py: Path) -> str:
    r = subprocess.run(
        [str(py), "-I", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return r.stdout.strip() or "?"


def reference_tree(ref: str) -> tuple[Path | None, str]:
    """A copy of this repository at commit ``ref`` (made once per commit, in
    ``benchmarks/.ref/``, git-ignored), to measure against; or None and why."""
    r = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        return None, f"git does not know {ref!r}: {r.stderr.strip()}"
    sha = r.stdout.strip()
    tree = BENCH / ".ref" / sha
    if not (tree / "duron" / "__init__.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "duron"], cwd=ROOT, capture_output=True, check=False
        )
        if archive.returncode != 0:
            return None, f"git archive {sha} failed"
        untar = subprocess.run(
            ["tar", "-x", "-C", str(tree)], input=archive.stdout, check=False
        )
        if untar.returncode != 0:
            return None, f"could not unpack {sha} into {tree}"
    return tree, sha[:10]


# -- output -----------------------------------------------------------------------


def say(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def fmt_us(o: Outcome | None, n: int) -> str:
    if o is None:
        return "-"
    us = o.us_per_effect(n)
    return f"{us:,.1f}" if us is not None else o.status


def fmt_mib(o: Outcome | None) -> str:
    return "-" if o is None or o.peak_mib is None else f"{o.peak_mib:.1f}"


def ratio(
    ours: Outcome, seed: Outcome | None, timeout: float | None
) -> tuple[str, float | None]:
    """seed / ours, or a lower bound when the seed ran out of (wall) time."""
    if ours.best_s is None or seed is None:
        return "-", None
    if seed.best_s is not None:
        r = seed.best_s / ours.best_s
        return f"{r:.2f}x", r
    if seed.status == "timeout" and timeout is not None:
        r = timeout / ours.best_s
        return f">{r:.0f}x", r
    return seed.status, None


def budget_us(case: Case, seed: Outcome | None) -> float | None:
    """The µs per effect the target allows: the seed's figure / the target ratio."""
    us = None if seed is None else seed.us_per_effect(case.n)
    return None if us is None else us / case.target


def change(ours: Outcome | None, ref: Outcome | None) -> str:
    """How much slower (+) or faster (-) ours is than the reference commit."""
    if ours is None or ref is None or ours.best_s is None or ref.best_s is None:
        return "-"
    return f"{(ours.best_s / ref.best_s - 1) * 100:+.0f}%"


def times_floor(o: Outcome | None, floor: Outcome | None) -> str:
    if o is None or floor is None or o.best_s is None or floor.best_s is None:
        return "-"
    return f"{o.best_s / floor.best_s:.1f}x"


def print_table(
    cases: list[Case],
    ours: dict[Case, Outcome],
    seed: dict[Case, Outcome] | None,
    plain: dict[tuple[str, int], Outcome],
    timeout: float | None,
    floor: dict[Case, Outcome],
    ref: dict[Case, Outcome] | None = None,
    ref_name: str = "",
) -> None:
    head = (
        f"{'workload':<26}{'N':>9}  {'ours µs/eff':>11}  {'seed µs/eff':>11}"
        f"  {'seed/ours':>9}  {'target':>6}  {'met':<4}  {'budget':>6}  {'asyncio':>7}"
        f"  {'floor':>6}  {'ours/floor':>10}"
        f"  {'ours peak MiB':>13}  {'seed peak MiB':>13}"
    )
    if ref is not None:
        head += f"  {'ref µs/eff':>10}  {'ref/floor':>9}  {'vs ref':>6}"
    print(head)
    print("-" * len(head))
    for c in cases:
        o = ours[c]
        s = seed.get(c) if seed is not None else None
        text, r = ratio(o, s, timeout)
        met = "-" if r is None else ("yes" if r >= c.target else "NO")
        budget = budget_us(c, s)
        f = floor.get(c)
        line = (
            f"{c.label:<26}{c.n:>9,}  {fmt_us(o, c.n):>11}  {fmt_us(s, c.n):>11}"
            f"  {text:>9}  {'>=' + format(c.target, 'g') + 'x':>6}  {met:<4}"
            f"  {'-' if budget is None else format(budget, ',.1f'):>6}"
            f"  {fmt_us(plain.get((c.shape, c.n)), c.n):>7}"
            f"  {fmt_us(f, c.n):>6}  {times_floor(o, f):>10}"
            f"  {fmt_mib(o):>13}  {fmt_mib(s):>13}"
        )
        if ref is not None:
            rc = ref.get(c)
            line += (
                f"  {fmt_us(rc, c.n):>10}  {times_floor(rc, f):>9}  {change(o, rc):>6}"
            )
        print(line)
    if ref is not None:
        print(
            f"\nref: commit {ref_name}, measured in the same run; vs ref: ours' time "
            "against it (+ slower, - faster)"
        )
    print(
        "floor: the same awaits on plain asyncio plus orjson encoding each entry "
        "(live; a file row also writes and flushes it) or decoding each line of "
        "the same log (replay)"
    )
    problems = [
        f"  {who} {c.label} N={c.n:,}: {out.status} {out.detail}"
        for who, res in (("ours", ours), ("seed", seed or {}), ("ref", ref or {}))
        for c, out in res.items()
        if out.status not in ("ok",)
    ]
    if problems:
        print("\nnot measured:")
        print("\n".join(problems))


def verdicts(cases: list[Case], results: dict[Case, Outcome], who: str) -> list[str]:
    """Is replay linear in N, and is its peak memory flat in N?"""
    replays = sorted(
        (c for c in cases if c.shape == "seq" and c.mode == "replay"), key=lambda c: c.n
    )
    if len(replays) < 2:
        return []
    small, big = replays[-2], replays[-1]
    a, b = results.get(small), results.get(big)
    if a is None or b is None or a.best_s is None or b.best_s is None:
        return [f"{who}: replay at N={small.n:,}/{big.n:,} not measured"]
    ua, ub = a.best_s / small.n * 1e6, b.best_s / big.n * 1e6
    growth = ub / ua
    linear = "linear" if growth <= LINEAR_SLACK else "NOT linear"
    per_n = ", ".join(
        f"{c.n:,}: {fmt_us(results[c], c.n)}" for c in replays if c in results
    )
    lines = [
        f"{who}: replay µs/effect {per_n} -> x{growth:.2f} from {small.n:,} to "
        f"{big.n:,}: {linear} (allowed x{LINEAR_SLACK:g})"
    ]
    pa, pb = a.peak_mib, b.peak_mib
    if pa is not None and pb is not None:
        allowed = max(FLAT_MIB, FLAT_FRACTION * pa)
        flat = "flat" if pb - pa <= allowed else "GROWS with N"
        per = (pb - pa) * 2**20 / (big.n - small.n)
        lines.append(
            f"{who}: replay peak RSS {pa:.1f} MiB at {small.n:,} -> {pb:.1f} MiB at "
            f"{big.n:,} ({pb - pa:+.1f} MiB, {per:+.0f} B per added effect): {flat} "
            f"(allowed +{allowed:.1f} MiB)"
        )
    return lines


def target_summary(
    cases: list[Case],
    ours: dict[Case, Outcome],
    seed: dict[Case, Outcome],
    timeout: float | None,
) -> list[str]:
    lines = []
    for mode, target in (("live", LIVE_TARGET), ("replay", REPLAY_TARGET)):
        rs = [ratio(ours[c], seed.get(c), timeout)[1] for c in cases if c.mode == mode]
        got = [r for r in rs if r is not None]
        if not got:
            continue
        met = sum(r >= target for r in got)
        lines.append(
            f"{mode}: target >= {target:g}x faster than {SEED_VERSION}; met in "
            f"{met}/{len(got)} workloads (worst {min(got):.2f}x, best {max(got):.2f}x)"
        )
    return lines


def below_floor(
    cases: list[Case], seed: dict[Case, Outcome], plain: dict[tuple[str, int], Outcome]
) -> list[str]:
    """Rows whose target asks for less time than the workload itself takes with no
    durability at all: no runtime on this loop can meet those."""
    lines = []
    for c in cases:
        budget = budget_us(c, seed.get(c))
        p = plain.get((c.shape, c.n))
        floor = None if p is None else p.us_per_effect(c.n)
        if budget is not None and floor is not None and budget < floor:
            lines.append(
                f"{c.label} N={c.n:,}: the target allows {budget:.1f} µs per effect; "
                f"the same code on plain asyncio, with no Duron at all, takes "
                f"{floor:.1f} µs: out of reach on this loop"
            )
    return lines


def extras(
    cases: list[Case], ours: dict[Case, Outcome], seed: dict[Case, Outcome]
) -> list[str]:
    """Fixed start-up cost and log size: context for the per-effect figures."""
    lines = []
    first = cases[0]  # sequential live memory at the smallest N

    def ms(o: Outcome | None) -> str:
        return "-" if o is None or o.cold_s is None else f"{o.cold_s * 1e3:.1f} ms"

    lines.append(
        f"first job of a fresh process (N={WARMUP_N}, memory, untimed warm-up): "
        f"ours {ms(ours.get(first))}, seed {ms(seed.get(first))}"
    )
    files = [
        c for c in cases if c.shape == "seq" and c.mode == "live" and c.store == "file"
    ]
    if files:
        big = files[-1]

        def per(o: Outcome | None) -> str:
            if o is None or o.log_bytes is None:
                return "-"
            return f"{o.log_bytes / big.n:.0f} B"

        lines.append(
            f"log size per effect (sequential, N={big.n:,}): "
            f"ours {per(ours.get(big))}, seed {per(seed.get(big))}"
        )
    return lines


# -- entry points -----------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    cases = plan(args.quick)
    ours_py = Path(sys.executable)
    timeout = args.seed_timeout or (60.0 if args.quick else 120.0)
    seed_py: Path | None = None
    if not args.no_seed:
        seed_py, why = seed_python(install=not args.no_install)
        if seed_py is None:
            say(f"reference not available, measuring this implementation only: {why}")

    ref_tree: Path | None = None
    ref_name = ""
    if args.against:
        ref_tree, ref_name = reference_tree(args.against)
        if ref_tree is None:
            say(f"cannot measure against {args.against}: {ref_name}")
            return 2

    probe = subprocess.run(
        [str(ours_py), "-I", "-c", "import duron"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        say(f"{ours_py} cannot import duron: run ./dev bench (it uses .venv)")
        return 2

    print(f"duron core benchmark ({'quick' if args.quick else 'full'} run)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"host: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}, load average {load}"
    )
    print(f"ours: duron (this tree), Python {python_version(ours_py)}")
    if seed_py is not None:
        print(f"seed: {SEED_SPEC} from PyPI, Python {python_version(seed_py)}")
    if ref_tree is not None:
        print(f"ref: duron at commit {ref_name} ({args.against}), same interpreter")
    what = "wall time" if args.clock == "wall" else "CPU time (all threads)"
    print(
        f"µs/eff = best {what} over the repeats / N, job open to result; "
        "each row is a fresh process"
    )
    busy = os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1)
    if busy and args.clock == "wall":
        print("the machine is busy: wall times are noisy; --clock cpu is steadier")
    print()

    ours: dict[Case, Outcome] = {}
    seed: dict[Case, Outcome] = {}
    ref: dict[Case, Outcome] = {}
    floor: dict[Case, Outcome] = {}
    plain: dict[tuple[str, int], Outcome] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="duron-bench-") as tmp:
        dirs = {name: Path(tmp, name) for name in ("ours", "seed", "ref", "floor")}
        for d in dirs.values():
            d.mkdir()
        for case in cases:
            # The two sides alternate case by case, so a noisy neighbour on the
            # machine slows both rather than one.
            shape = (case.shape, case.n)
            if shape not in plain:
                say(f"plain asyncio {case.shape} N={case.n:,} x{case.repeat}")
                plain[shape] = run_case(
                    ours_py,
                    "plain",
                    Case(case.shape, "live", "memory", case.n, case.repeat),
                    dirs["ours"],
                    args.timeout,
                    args.clock,
                )
            say(f"{case.label} N={case.n:,} x{case.repeat}")
            ours[case] = run_case(
                ours_py, "ours", case, dirs["ours"], args.timeout, args.clock
            )
            # The floor replays the log ours wrote; live, it writes its own.
            floor[case] = run_case(
                ours_py,
                "floor",
                case,
                dirs["floor"],
                args.timeout,
                args.clock,
                replay_from=dirs["ours"],
            )
            if ref_tree is not None:
                ref[case] = run_case(
                    ours_py,
                    "ref",
                    case,
                    dirs["ref"],
                    args.timeout,
                    args.clock,
                    src=ref_tree,
                )
            if seed_py is not None:
                seed[case] = run_case(
                    seed_py, "seed", case, dirs["seed"], timeout, args.clock
                )
    elapsed = time.perf_counter() - started

    # A wall-clock time limit bounds the seed's wall time only.
    bound = timeout if args.clock == "wall" else None
    print_table(
        cases,
        ours,
        seed if seed_py is not None else None,
        plain,
        bound,
        floor,
        ref if ref_tree is not None else None,
        ref_name,
    )
    print()
    for line in verdicts(cases, ours, "ours"):
        print(line)
    if seed_py is not None:
        for line in verdicts(cases, seed, "seed"):
            print(line)
        print()
        for line in target_summary(cases, ours, seed, bound):
            print(line)
        floor = below_floor(cases, seed, plain)
        if floor:
            print()
            for line in floor:
                print(line)
    print()
    for line in extras(cases, ours, seed):
        print(line)
    print(f"\n(measured in {elapsed:.0f} s)")

    if args.json is not None:
        raw = [
            {
                "case": asdict(c),
                "ours": asdict(ours[c]),
                "seed": asdict(seed[c]) if c in seed else None,
                "plain_asyncio": asdict(plain[(c.shape, c.n)])
                if (c.shape, c.n) in plain
                else None,
                "floor": asdict(floor[c]) if c in floor else None,
                "ref": asdict(ref[c]) if c in ref else None,
            }
            for c in cases
        ]
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
        say(f"raw results written to {args.json}")
    failed = [c for c, o in ours.items() if o.status != "ok"]
    return 1 if failed else 0


def profile(args: argparse.Namespace) -> int:
    """cProfile this implementation on sequential live memory and replay file."""
    n = 1_000 if args.quick else 10_000
    ours_py = Path(sys.executable)
    out_dir = args.profile_dir or Path(tempfile.mkdtemp(prefix="duron-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="duron-bench-") as tmp:
        logdir = Path(tmp)
        # An unprofiled live run writes the log the profiled replay reads.
        writer = Case("seq", "live", "file", n, 1)
        o = run_case(ours_py, "ours", writer, logdir, args.timeout)
        if o.status != "ok":
            say(f"could not write the log to replay: {o.status} {o.detail}")
            return 1
        for case in (
            Case("seq", "live", "memory", n, 1),
            Case("seq", "replay", "file", n, 1),
        ):
            report = out_dir / f"{case.shape}-{case.mode}-{case.store}-{n}.txt"
            o = run_case(ours_py, "ours", case, logdir, args.timeout, profile=report)
            if o.status != "ok":
                say(f"{case.label}: {o.status} {o.detail}")
                return 1
            us = o.us_per_effect(n)
            print(f"\n######## {case.label} N={n:,}: {us:,.1f} µs/effect (profiled)")
            print(report.read_text())
    say(f"reports kept in {out_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="µs per effect, live and replayed, against duron 0.0.3"
    )
    p.add_argument("--quick", action="store_true", help="smaller N, fewer repeats")
    p.add_argument("--no-seed", action="store_true", help=f"skip {SEED_SPEC}")
    p.add_argument(
        "--no-install",
        action="store_true",
        help=f"use {SEED_VENV.name} only if it exists; never run pip",
    )
    p.add_argument(
        "--seed-timeout",
        type=float,
        default=None,
        help="seconds one reference measurement may take (default 120, quick 60)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds one measurement of ours may take (default 600)",
    )
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="time each run by wall clock (default) or by the process's CPU time, "
        "which load from other programs disturbs much less",
    )
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument(
        "--against",
        metavar="REF",
        help="also measure duron at this git commit (e.g. HEAD~3, a tag) in the "
        "same run, with the same interpreter: the regression check",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of the table, cProfile sequential live memory and replay file",
    )
    p.add_argument("--profile-dir", type=Path, help="keep the profile reports here")
    args = p.parse_args(argv)
    return profile(args) if args.profile else bench(args)


if __name__ == "__main__":
    sys.exit(main())
