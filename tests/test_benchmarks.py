"""The core benchmark's worker still runs every workload it is asked for (a tiny N):
the benchmark is not a test, but it must not rot between the runs that use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).parent.parent / "benchmarks" / "_worker.py"
N = 20


def run_worker(tmp_path: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-I", str(WORKER), f"--n={N}", "--repeat=2", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3  # one line per run, then the summary
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


@pytest.mark.parametrize("shape", ["seq", "gather"])
def test_every_workload_runs_live_then_replays_on_this_tree(
    tmp_path: Path, shape: str
) -> None:
    log = tmp_path / f"{shape}.jsonl"
    live = run_worker(
        tmp_path, "--impl=ours", f"--shape={shape}", "--mode=live", "--store=file",
        f"--log={log}",
    )  # fmt: skip
    assert live["calls"] == [N, N]  # the worker also checks the result
    assert live["log_bytes"] == log.stat().st_size > 0
    replay = run_worker(
        tmp_path, "--impl=ours", f"--shape={shape}", "--mode=replay", "--store=file",
        f"--log={log}",
    )  # fmt: skip
    assert replay["calls"] == [0, 0]
    memory = run_worker(
        tmp_path, "--impl=ours", f"--shape={shape}", "--mode=live", "--store=memory"
    )
    assert memory["calls"] == [N, N]


@pytest.mark.parametrize("shape", ["seq", "gather"])
def test_the_plain_asyncio_reference_runs_the_same_shapes(
    tmp_path: Path, shape: str
) -> None:
    plain = run_worker(
        tmp_path, "--impl=plain", f"--shape={shape}", "--mode=live", "--store=memory"
    )
    assert plain["calls"] == [N, N]
    assert all(t > 0 for t in plain["cpu_s"])


@pytest.mark.parametrize("shape", ["seq", "gather"])
def test_the_floor_encodes_live_and_decodes_the_same_log_on_replay(
    tmp_path: Path, shape: str
) -> None:
    log = tmp_path / f"{shape}.jsonl"
    run_worker(
        tmp_path, "--impl=ours", f"--shape={shape}", "--mode=live", "--store=file",
        f"--log={log}",
    )  # fmt: skip
    written = log.read_bytes()
    floor_log = tmp_path / "floor" / f"{shape}.jsonl"
    floor_log.parent.mkdir()
    live = run_worker(
        tmp_path, "--impl=floor", f"--shape={shape}", "--mode=live", "--store=file",
        f"--log={floor_log}",
    )  # fmt: skip
    assert live["calls"] == [N, N]
    assert len(floor_log.read_bytes().splitlines()) == N  # one entry per effect
    replay = run_worker(
        tmp_path, "--impl=floor", f"--shape={shape}", "--mode=replay", "--store=file",
        f"--log={log}",
    )  # fmt: skip
    assert replay["calls"] == [N, N]  # the plain awaits, after decoding the log
    assert log.read_bytes() == written  # read, never written


def test_the_worker_imports_duron_from_another_tree(tmp_path: Path) -> None:
    # --src is how --against measures another commit: a tree whose duron says so.
    fake = tmp_path / "tree" / "duron"
    fake.mkdir(parents=True)
    real = Path(__file__).parent.parent / "duron"
    for item in real.rglob("*.py"):
        target = fake / item.relative_to(real)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.read_text())
    (fake / "__init__.py").write_text(
        (real / "__init__.py").read_text() + "\nFROM_OTHER_TREE = True\n"
    )
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.argv[1:] = ['--src=" + str(fake.parent) + "']; "
            "import runpy; g = runpy.run_path("
            + repr(str(WORKER))
            + ", run_name='probe'); import duron; "
            "print(getattr(duron, 'FROM_OTHER_TREE', False))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "True"
