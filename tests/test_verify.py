"""``duron verify``: code changes replayed against logs the original code recorded.

The corpus (tests/verify_corpus.py) holds the original ``checkout`` and one version
per kind of change; each case below names the log it is checked against, the
verdict and the whole message. Verification must run no effect and write nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import verify_corpus as corpus

import duron
from duron._cli import main
from duron._cli._progress import _Bar, progress_bar
from duron._log import encode_entry
from duron._verify import VerifyReport, verify_log
from duron.contrib.storage import FileLogStorage, MemoryLogStorage, SQLiteStore

TESTS = Path(__file__).parent


@dataclass(frozen=True)
class Logs:
    finished: Path  # the original, run to its end (order 42)
    unfinished: Path  # the same log cut after position 1, as a crash leaves it
    patched: Path  # recorded by the ``patched`` version (the new branch taken)
    damaged: Path  # the finished log with its position-1 entry overwritten
    other: Path  # a log of another durable function
    empty: Path
    missing: Path
    retried: Path  # recorded by ``retrying``: charge_card failed once, retried


async def _record(dfn: duron.DurableFn[..., Any], path: Path, *args: Any) -> Any:
    async with dfn.invoke(FileLogStorage(path)) as job:
        await job.start(*args)
        return await job.wait()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Logs:
    d = tmp_path_factory.mktemp("logs")
    finished, patched, other = (
        d / "finished.jsonl",
        d / "patched.jsonl",
        d / "other.jsonl",
    )
    anyio.run(_record, corpus.original, finished, 42)
    anyio.run(_record, corpus.patched, patched, 42)
    anyio.run(_record, corpus.refund, other, 42)
    retried = d / "retried.jsonl"
    anyio.run(_record, corpus.retrying, retried, 42)
    assert b'"type":"attempt"' in retried.read_bytes()
    lines = _lines(finished)
    kept = []
    for line in lines:
        entry = orjson.loads(line)
        if entry["type"] == "end" or entry.get("id", 0) >= 2:
            break
        kept.append(line)
    unfinished = d / "unfinished.jsonl"
    unfinished.write_bytes(b"".join(kept))
    damaged = d / "damaged.jsonl"
    damaged.write_bytes(
        b"".join(
            b'{"type":"bogus"}\n' if i == 2 else line for i, line in enumerate(lines)
        )
    )
    empty = d / "empty.jsonl"
    empty.write_bytes(b"")
    return Logs(
        finished,
        unfinished,
        patched,
        damaged,
        other,
        empty,
        d / "missing.jsonl",
        retried,
    )


@pytest.fixture(autouse=True)
def _no_effect_runs() -> Any:
    corpus.ran.clear()
    yield
    assert corpus.ran == [], "verification ran an effect"


def check(dfn: duron.DurableFn[..., Any], log: Path) -> VerifyReport:
    before = log.read_bytes() if log.exists() else None
    report = anyio.run(verify_log, dfn, FileLogStorage(log))
    after = log.read_bytes() if log.exists() else None
    assert after == before, "verification wrote to the log"
    return report


# -- the corpus: each change, its verdict, its whole message ----------------------------

OK = ("ok", None, "")


def _diverged(position: int, recorded: str, now: str) -> tuple[str, str, str]:
    return (
        "incompatible",
        "diverged",
        f"position {position}: log recorded {recorded}\n{now}",
    )


CASES: list[tuple[str, str, tuple[str, str | None, str]]] = [
    ("original", "finished", OK),
    ("original", "unfinished", OK),
    ("retry_changed", "finished", OK),
    ("retry_changed", "retried", OK),
    ("original", "retried", OK),
    (
        "reordered",
        "finished",
        _diverged(
            0,
            "fetch_user(user_id=7)",
            "code now calls charge_card(order_id=42, amount=10.0)",
        ),
    ),
    (
        "reordered",
        "unfinished",
        _diverged(
            0,
            "fetch_user(user_id=7)",
            "code now calls charge_card(order_id=42, amount=10.0)",
        ),
    ),
    (
        "renamed",
        "finished",
        _diverged(0, "fetch_user(user_id=7)", "code now calls load_user(user_id=7)"),
    ),
    # A function renamed in code, its recorded name kept with @duron.effect(name=...).
    ("renamed_keeping_name", "finished", OK),
    # A new parameter with a default: defaults are not recorded, so the call is the
    # same; passing it explicitly (even with the default's value) is another call.
    ("new_parameter_with_default", "finished", OK),
    (
        "new_parameter_passed",
        "finished",
        _diverged(
            1,
            "charge_card(order_id=42, amount=10.0)",
            "code now calls charge_card(order_id=42, amount=10.0, currency='EUR')",
        ),
    ),
    (
        "changed_argument",
        "finished",
        _diverged(
            1,
            "charge_card(order_id=42, amount=10.0)",
            "code now calls charge_card(order_id=42, amount=12.5)",
        ),
    ),
    (
        "removed_effect",
        "finished",
        _diverged(
            1,
            "charge_card(order_id=42, amount=10.0)",
            "code now calls ship(address={'street': 'Main 1', 'city': 'Delft'})",
        ),
    ),
    (
        "removed_last_effect",
        "finished",
        _diverged(
            3, "send_receipt(order_id=42)", "code now returns before reaching it"
        ),
    ),
    (
        "added_effect",
        "finished",
        _diverged(3, "send_receipt(order_id=42)", "code now calls notify(order_id=42)"),
    ),
    # Past the end of an unfinished log, new code is simply what the job runs next.
    ("added_effect", "unfinished", OK),
    (
        "added_effect_at_end",
        "finished",
        _diverged(4, "the job's end", "code now calls notify(order_id=42)"),
    ),
    (
        "changed_result",
        "finished",
        _diverged(
            4,
            "the job's end with result 'Ada:r-42'",
            "code now ends with result 'ADA:r-42'",
        ),
    ),
    (
        "required_field",
        "finished",
        (
            "incompatible",
            "payload",
            "position 0: recorded result of fetch_user no longer validates as "
            "UserWithEmail: field 'email' required",
        ),
    ),
    ("optional_field", "finished", OK),
    ("wider_union", "finished", OK),
    # An input model gained a field with a default, and the code passes the default:
    # the same call as recorded. Passing another value is another call.
    ("input_field_default", "finished", OK),
    (
        "input_field_set",
        "finished",
        _diverged(
            2,
            "ship(address={'street': 'Main 1', 'city': 'Delft'})",
            "code now calls ship(address={'street': 'Main 1', 'city': 'Delft', "
            "'country': 'BE'})",
        ),
    ),
    # A field dropped from an input model: the recorded call, read today, is this one.
    ("input_field_dropped", "finished", OK),
    (
        "argument_type_changed",
        "finished",
        (
            "incompatible",
            "payload",
            "recorded argument 'order_id' of checkout no longer validates as UUID: "
            "UUID input should be a string, bytes or UUID object",
        ),
    ),
    (
        "argument_renamed",
        "finished",
        (
            "incompatible",
            "arguments",
            "the log started checkout(order_id=42)\n"
            "code now has checkout without a parameter 'order_id'",
        ),
    ),
    # ctx.patched, step 1: old logs take the old branch, new logs the new one.
    ("patched", "finished", OK),
    ("patched", "patched", OK),
    ("patched", "unfinished", OK),
    (
        "original",
        "patched",
        _diverged(3, "patch email-receipt", "code now calls send_receipt(order_id=42)"),
    ),
    # Step 2 (old branch removed) must wait for every job recorded before the patch.
    (
        "patch_kept",
        "finished",
        _diverged(
            3, "send_receipt(order_id=42)", "code now calls send_email(order_id=42)"
        ),
    ),
    ("patch_kept", "patched", OK),
    # Step 3 (the call removed) must wait for every job recorded with the marker.
    (
        "patch_removed",
        "patched",
        _diverged(3, "patch email-receipt", "code now calls send_email(order_id=42)"),
    ),
    (
        "original",
        "damaged",
        (
            "uncheckable",
            "damaged",
            "damaged at offset {offset}: unknown entry type 'bogus'",
        ),
    ),
    (
        "original",
        "other",
        (
            "uncheckable",
            "other-function",
            "a log of durable function refund, not checkout",
        ),
    ),
    ("original", "empty", ("uncheckable", "empty", "empty log: it holds no job entry")),
    (
        "original",
        "missing",
        ("uncheckable", "unreadable", "cannot read it: no such file {path}"),
    ),
]


@pytest.mark.parametrize(
    ("version", "log", "expected"), CASES, ids=[f"{v}-{log}" for v, log, _ in CASES]
)
def test_corpus(
    logs: Logs, version: str, log: str, expected: tuple[str, str | None, str]
) -> None:
    path: Path = getattr(logs, log)
    report = check(getattr(corpus, version), path)
    status, reason, detail = expected
    offset = len(b"".join(_lines(logs.finished)[:2]))
    assert (report.status, report.reason, report.detail) == (
        status,
        reason,
        detail.replace("{offset}", str(offset)).replace("{path}", str(path)),
    )
    assert report.log == str(path)
    assert report.function == "checkout"
    if status == "ok":
        assert report.finished == (log not in ("unfinished",))


def test_divergence_report_names_both_sides_and_the_offset(logs: Logs) -> None:
    report = check(corpus.changed_argument, logs.finished)
    lines = _lines(logs.finished)
    assert report.position == 1
    assert report.recorded == "charge_card(order_id=42, amount=10.0)"
    assert report.requested == "charge_card(order_id=42, amount=12.5)"
    assert report.offset == len(b"".join(lines[:2]))
    assert report.operations == 2
    assert str(report) == (
        f"{logs.finished}  INCOMPATIBLE  position 1: log recorded "
        "charge_card(order_id=42, amount=10.0)\n"
        + " " * (len(str(logs.finished)) + 16)
        + "code now calls charge_card(order_id=42, amount=12.5)"
    )


def test_ok_report_counts_what_was_replayed(logs: Logs) -> None:
    done = check(corpus.original, logs.finished)
    assert (done.finished, done.entries, done.operations) == (True, 6, 4)
    assert done.verdict == "ok"
    cut = check(corpus.original, logs.unfinished)
    # The code issued position 2 too: a resumed job would run it live.
    assert (cut.finished, cut.entries, cut.operations) == (False, 3, 3)
    assert cut.verdict == "ok (unfinished)"
    assert str(cut) == f"{logs.unfinished}  ok (unfinished)"


def test_a_resumed_job_accepts_inputs_whose_model_gained_a_default(
    logs: Logs, tmp_path: Path
) -> None:
    """What verify calls compatible, the runtime replays: the same comparison."""
    log = tmp_path / "job.jsonl"
    log.write_bytes(logs.unfinished.read_bytes())
    text = log.read_text()
    # Record ``ship`` under the old Address: position 2 done, then stop.
    entry = {
        "type": "done",
        "id": 2,
        "t": orjson.loads(text.splitlines()[-1])["t"],
        "kind": "effect",
        "name": "ship",
        "inputs": {"address": {"street": "Main 1", "city": "Delft"}},
        "result": None,
    }
    log.write_text(text + orjson.dumps(entry).decode() + "\n")

    async def resume() -> Any:
        async with corpus.input_field_default.invoke(FileLogStorage(log)) as job:
            await job.resume()
            return await job.wait()

    assert anyio.run(resume) == "Ada:r-42"
    assert corpus.ran == ["send_receipt"]  # only what the log did not hold
    corpus.ran.clear()


def test_start_accepts_arguments_whose_model_gained_a_default() -> None:
    @duron.durable(name="greet")
    async def greet_v1(ctx: duron.Context, address: corpus.Address) -> str:
        return address.city

    @duron.durable(name="greet")
    async def greet_v2(ctx: duron.Context, address: corpus.AddressWithCountry) -> str:
        assert address.country == "NL"
        return address.city

    async def scenario() -> tuple[str, str]:
        storage = MemoryLogStorage()
        async with greet_v1.invoke(storage) as job:
            await job.start(corpus.HOME)
            first = await job.wait()
        async with greet_v2.invoke(storage) as job2:
            await job2.start(corpus.AddressWithCountry(street="Main 1", city="Delft"))
            again = await job2.wait()
        return first, again

    assert anyio.run(scenario) == ("Delft", "Delft")


def test_several_functions_pick_by_recorded_name(logs: Logs) -> None:
    fns = {"checkout": corpus.original, "refund": corpus.refund}
    a = anyio.run(verify_log, fns, FileLogStorage(logs.finished))
    b = anyio.run(verify_log, fns, FileLogStorage(logs.other))
    assert (a.status, a.function, b.status, b.function) == (
        "ok",
        "checkout",
        "ok",
        "refund",
    )
    corpus.ran.clear()


def test_verify_reads_without_taking_the_lease(logs: Logs, tmp_path: Path) -> None:
    log = tmp_path / "held.jsonl"
    log.write_bytes(logs.finished.read_bytes())

    async def scenario() -> VerifyReport:
        holder = FileLogStorage(log)
        await holder.acquire()  # a job is running on this log
        try:
            return await verify_log(corpus.original, FileLogStorage(log))
        finally:
            await holder.release()

    assert anyio.run(scenario).status == "ok"


@pytest.mark.anyio
@pytest.mark.both_hosts
async def test_verify_runs_on_both_hosts(logs: Logs) -> None:
    report = await verify_log(corpus.changed_argument, FileLogStorage(logs.finished))
    assert (report.status, report.position) == ("incompatible", 1)


def test_verify_replays_a_long_log(tmp_path: Path) -> None:

    @duron.effect
    async def step(i: int) -> int:
        return i

    @duron.durable(name="long")
    async def long(ctx: duron.Context, n: int) -> int:
        total = 0
        for i in range(n):
            total += await ctx.run(step, i)
        return total

    log = tmp_path / "long.jsonl"
    assert anyio.run(_record, long, log, 3000) == sum(range(3000))
    report = anyio.run(verify_log, long, FileLogStorage(log))
    assert (report.status, report.operations, report.finished) == ("ok", 3000, True)


# -- the command line ---------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["verify", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reports_each_log_aligned_and_exits_1_when_one_is_incompatible(
    logs: Logs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(logs.finished.parent)
    code, out, err = cli(
        capsys,
        "verify_corpus:added_effect",
        "unfinished.jsonl",
        "finished.jsonl",
        "damaged.jsonl",
    )
    offset = len(b"".join(_lines(logs.finished)[:2]))
    assert out == (
        "unfinished.jsonl  ok (unfinished)\n"
        "finished.jsonl    INCOMPATIBLE  position 3: log recorded send_receipt(order_id=42)\n"
        "                                code now calls notify(order_id=42)\n"
        f"damaged.jsonl     NOT CHECKABLE  damaged at offset {offset}: unknown entry "
        "type 'bogus'\n"
        "3 logs: 1 ok, 1 incompatible, 1 not checkable\n"
    )
    assert (code, err) == (1, "")


def test_cli_payload_message(logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "verify_corpus:required_field", logs.finished)
    assert out == (
        f"{logs.finished}  INCOMPATIBLE  position 0: recorded result of fetch_user "
        "no longer validates as UserWithEmail: field 'email' required\n"
    )
    assert code == 1


def test_cli_exit_0_when_all_ok(logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(
        capsys, "verify_corpus:patched", logs.finished, logs.patched, "--quiet"
    )
    assert (code, out, err) == (0, "2 logs: 2 ok\n", "")


def test_cli_exit_2_when_a_log_cannot_be_checked(
    logs: Logs, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "verify_corpus:original", logs.finished, logs.other)
    assert code == 2
    assert out.splitlines()[1:] == [
        f"{logs.other}     NOT CHECKABLE  a log of durable function refund, not checkout",
        "2 logs: 1 ok, 1 not checkable",
    ]


def test_cli_json(logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(
        capsys, "verify_corpus:changed_argument", logs.finished, logs.empty, "--json"
    )
    doc = json.loads(out)
    assert code == 1
    assert doc["exit_code"] == 1
    assert doc["target"] == "verify_corpus:changed_argument"
    assert doc["functions"] == ["checkout"]
    assert doc["counts"] == {"ok": 0, "incompatible": 1, "uncheckable": 1}
    first, second = doc["logs"]
    assert first == {
        "log": str(logs.finished),
        "function": "checkout",
        "status": "incompatible",
        "reason": "diverged",
        "detail": "position 1: log recorded charge_card(order_id=42, amount=10.0)\n"
        "code now calls charge_card(order_id=42, amount=12.5)",
        "position": 1,
        "recorded": "charge_card(order_id=42, amount=10.0)",
        "requested": "charge_card(order_id=42, amount=12.5)",
        "offset": len(b"".join(_lines(logs.finished)[:2])),
        "finished": False,
        "entries": first["entries"],  # how far the driver read: its business
        "operations": 2,
    }
    assert (second["status"], second["reason"]) == ("uncheckable", "empty")


def test_cli_module_target_checks_each_log_against_its_function(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare MODULE checks every durable function in it; cwd is importable."""
    (tmp_path / "shop_flows_a.py").write_text(
        "import duron\n"
        "\n"
        "@duron.durable\n"
        "async def checkout(ctx: duron.Context, order_id: int) -> int:\n"
        "    return order_id\n"
        "\n"
        "@duron.durable\n"
        "async def refund(ctx: duron.Context, order_id: int) -> int:\n"
        "    return -order_id\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "shop_flows_a", raising=False)
    jobs = tmp_path / "logs"
    jobs.mkdir()
    (jobs / "a.jsonl").write_text(
        '{"type":"job","version":1,"fn":"checkout","args":{"order_id":1},"seed":"s","t":1.0}\n'
        '{"type":"end","t":1.0,"result":1}\n'
    )
    (jobs / "b.jsonl").write_text(
        '{"type":"job","version":1,"fn":"refund","args":{"order_id":2},"seed":"s","t":1.0}\n'
        '{"type":"end","t":1.0,"result":-3}\n'
    )
    code, out, _ = cli(capsys, "shop_flows_a", "logs/a.jsonl", "logs/b.jsonl")
    assert out == (
        "logs/a.jsonl  ok\n"
        "logs/b.jsonl  INCOMPATIBLE  position 0: log recorded the job's end with "
        "result -3\n"
        "                            code now ends with result -2\n"
        "2 logs: 1 ok, 1 incompatible\n"
    )
    assert code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["no_such_module_xyz:flow", "a.jsonl"],
            "duron verify: cannot import no_such_module_xyz: no module named "
            "'no_such_module_xyz' (looked in {cwd} and the installed packages)\n",
        ),
        (
            ["verify_corpus:nothing", "a.jsonl"],
            "duron verify: module verify_corpus has no attribute 'nothing'\n",
        ),
        (
            ["verify_corpus:HOME", "a.jsonl"],
            "duron verify: verify_corpus:HOME is not a @duron.durable function "
            "(it is Address)\n",
        ),
        (
            ["verify_corpus", "a.jsonl"],
            "duron verify: module verify_corpus holds several durable functions "
            "recorded as 'checkout' (original, reordered): name the one to check, "
            "e.g. verify_corpus:reordered\n",
        ),
        (
            ["verify_corpus:original"],
            "duron verify: no log to check: give LOG paths or --store URL\n",
        ),
        (
            ["verify_corpus:original", "--job", "x"],
            "duron verify: --job needs exactly one --store URL\n",
        ),
    ],
    ids=["no-module", "no-attribute", "not-durable", "ambiguous", "no-log", "job"],
)
def test_cli_usage_errors_exit_2(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, out, err = cli(capsys, *args)
    assert (code, out, err) == (2, "", message.format(cwd=tmp_path))


def test_cli_missing_store_is_not_checkable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "verify_corpus:original", "sqlite:///no-such.db#x")
    assert (code, err) == (2, "")
    assert out == (
        "sqlite:///no-such.db#x  NOT CHECKABLE  cannot read it: no-such.db: no such "
        "file; a store is created by SQLiteStore(path) in the application that "
        "submits jobs\n"
    )


def test_cli_import_error_inside_the_module_shows_its_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_flows_b.py").write_text(
        "import duron\nraise RuntimeError('boom')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, out, err = cli(capsys, "broken_flows_b:flow", "a.jsonl")
    assert (code, out) == (2, "")
    assert err.startswith("duron verify: importing broken_flows_b failed:\nTraceback")
    assert err.endswith("RuntimeError: boom\n\n")


def test_cli_sqlite_store(
    logs: Logs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.db"

    async def record() -> None:
        store = SQLiteStore(db)
        try:
            for job_id in ("order-1", "order 2"):
                async with corpus.original.invoke(store.log(job_id)) as job:
                    await job.start(int(job_id[-1]))
                    await job.wait()
            async with corpus.refund.invoke(store.log("refund-1")) as job:
                await job.start(1)
                await job.wait()
        finally:
            await store.close()

    anyio.run(record)
    corpus.ran.clear()
    url = f"sqlite:///{db}"
    code, out, _ = cli(capsys, "verify_corpus:changed_argument", f"{url}#order-1")
    assert code == 1
    assert out == (
        f"{url}#order-1  INCOMPATIBLE  position 1: log recorded "
        "charge_card(order_id=1, amount=10.0)\n"
        + " " * (len(url) + 8 + 16)
        + "code now calls charge_card(order_id=1, amount=12.5)\n"
    )
    # A whole store: every job of the function checked, the other function's left out.
    code, out, _ = cli(capsys, "verify_corpus:original", url)
    assert (code, out) == (
        0,
        f"{url}#order-1  ok\n{url}#order 2  ok\n2 logs: 2 ok\n",
    )
    code, out, _ = cli(
        capsys, "verify_corpus:original", "--store", url, "--job", "order 2"
    )
    assert (code, out) == (0, f"{url}#order 2  ok\n")
    code, out, _ = cli(
        capsys, "verify_corpus:original", "--store", url, "--status", "running"
    )
    assert code == 2
    code, out, _ = cli(capsys, "verify_corpus:original", f"{url}#nope")
    assert (code, out) == (
        2,
        f"{url}#nope  NOT CHECKABLE  cannot read it: no job 'nope' in {db}; list the "
        "store's jobs with store.list_jobs() or `duron jobs list`\n",
    )


def test_console_script_runs_verify_in_a_subprocess(logs: Logs) -> None:
    """The installed ``duron`` entry point, run from the project dir (its modules
    import from the current directory, as with ``python -m``)."""
    script = Path(sys.executable).with_name("duron")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(script), "verify", "verify_corpus:removed_effect", str(logs.finished)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (1, "")
    assert proc.stdout == (
        f"{logs.finished}  INCOMPATIBLE  position 1: log recorded "
        "charge_card(order_id=42, amount=10.0)\n"
        + " " * (len(str(logs.finished)) + 16)
        + "code now calls ship(address={'street': 'Main 1', 'city': 'Delft'})\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "duron",
            "verify",
            "verify_corpus:original",
            str(logs.finished),
        ],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, f"{logs.finished}  ok\n")


# -- the progress bar -------------------------------------------------------------------


class _Tty:
    """A stderr stand-in that says it is a terminal and keeps what is written."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_no_progress_bar_off_a_terminal() -> None:
    import io

    bar = progress_bar("verifying", [10], stream=io.StringIO())
    bar.log_started(0, 10)
    bar.entry(5)
    bar.close()
    assert type(bar).__name__ == "_Silent"


def test_plain_progress_bar_draws_and_clears(monkeypatch: pytest.MonkeyPatch) -> None:
    import duron._cli._progress as progress

    monkeypatch.setattr(progress, "_DELAY", 0.0)
    monkeypatch.setattr(progress, "_INTERVAL", 0.0)
    out = _Tty()
    bar = _Bar("verifying", [100, 100], out, use_rich=False)  # type: ignore[arg-type]
    bar.log_started(0, 100)
    bar.entry(50)
    bar.log_started(1, 100)
    bar.entry(100)
    bar.close()
    assert out.text == (
        "\rverifying [" + "#" * 0 + "." * 30 + "]   0% 1/2 logs"
        "\rverifying [" + "#" * 7 + "." * 23 + "]  25% 1/2 logs"
        "\rverifying [" + "#" * 15 + "." * 15 + "]  50% 2/2 logs"
        "\rverifying [" + "#" * 30 + "] 100% 2/2 logs"
        "\r" + " " * 79 + "\r"
    )


def test_rich_progress_bar_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import duron._cli._progress as progress

    monkeypatch.setattr(progress, "_DELAY", 0.0)
    out = _Tty()
    bar = _Bar("verifying", [None, None], out, use_rich=True)  # type: ignore[arg-type]
    bar.log_started(0, None)
    bar.entry(3)
    assert bar._rich is not None
    bar.log_started(1, None)
    bar.close()
    assert bar._rich is None
    assert "verifying" in out.text


# -- host input, futures and timers replay with no host attached ------------------------


@duron.effect
async def triple(x: int) -> int:
    return 3 * x


@duron.durable(name="hosted")
async def hosted(
    ctx: duron.Context,
    items: duron.Stream[int] = duron.Provided,
    out: duron.StreamWriter[str] = duron.Provided,
) -> int:
    future_id, approval = await ctx.create_future(int, name="approval")
    await out.send(future_id)
    total = await approval
    async for item in items:
        total += await ctx.run(triple, item)
    await anyio.sleep(0.01)  # a durable timer: replay fires it from the log's times
    return total


@pytest.mark.anyio
async def test_host_input_futures_and_timers_replay_without_a_host() -> None:
    storage = MemoryLogStorage()
    async with hosted.invoke(storage) as job:
        await job.start()
        async for future_id in await job.open_stream("out", "r"):
            await job.complete_future(future_id, result=100)
            break
        items = await job.open_stream("items", "w")
        for i in range(3):
            await items.send(i)
        await items.close()
        assert await job.wait() == 109
    report = await verify_log(hosted, storage)
    assert (report.status, report.finished) == ("ok", True)
    for cut in range(2, len(storage.raw)):
        part = await verify_log(hosted, MemoryLogStorage(storage.raw[:cut]))
        assert (part.status, part.finished) == ("ok", False), cut


charged: list[int] = []


@duron.effect
async def charge_card(order: int) -> str:
    charged.append(order)
    return "ok"


@duron.durable(name="charge-only")
async def charge_only(ctx: duron.Context, order: int) -> str:
    return await ctx.run(charge_card, order)


def test_a_log_of_its_job_entry_alone_is_checked_without_running_anything(
    tmp_path: Path,
) -> None:
    # A job that crashed right after its job entry was written: verify replays
    # nothing, runs nothing, and says the job is unfinished.
    entry = charge_only.job_entry((42,), {}, via="start()", t=1_700_000_000.0)
    path = tmp_path / "log.jsonl"
    path.write_bytes(encode_entry(entry) + b"\n")
    charged.clear()
    for storage in (FileLogStorage(path), MemoryLogStorage([encode_entry(entry)])):
        report = anyio.run(verify_log, charge_only, storage)
        assert (report.status, report.finished, report.operations) == ("ok", False, 1)
    assert charged == []
    assert path.read_bytes() == encode_entry(entry) + b"\n"
