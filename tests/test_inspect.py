"""``duron inspect``: a log shown as a timeline, read without importing any user code."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pytest

import duron
from duron._cli import main
from duron._cli.inspect import read_timeline, render_rich
from duron.contrib.storage import FileLogStorage, SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

T0 = 1700000000.0  # 2023-11-14 22:13:20 UTC

# A log written by hand so that every time is exact: a host input (a signal
# parameter) that received one value, an effect done in one write (no start entry),
# a streaming effect with two emissions, a patch marker, a failed effect, a durable
# future cancelled by the host's cancel, an effect still running when the job ended.
STORY = """\
{"type":"job","version":1,"fn":"checkout","module":"shop_nowhere.flows","args":{"order_id":42},"seed":"ab","t":1700000000.0}
{"type":"start","id":0,"t":1700000000.0,"kind":"input","name":"approvals"}
{"type":"done","id":1,"t":1700000000.25,"kind":"effect","name":"fetch_user","inputs":{"user_id":7},"result":{"id":7,"name":"Ada"}}
{"type":"start","id":2,"t":1700000000.25,"kind":"effect","name":"count_up","inputs":{"state":0,"n":3}}
{"type":"emit","id":2,"t":1700000000.5,"value":1}
{"type":"emit","id":2,"t":1700000000.75,"value":2}
{"type":"done","id":2,"t":1700000001.0,"result":3}
{"type":"emit","id":0,"t":1700000002.0,"value":"yes"}
{"type":"done","id":3,"t":1700000002.0,"kind":"patch","name":"email-receipt","result":true}
{"type":"start","id":4,"t":1700000002.0,"kind":"effect","name":"charge_card","inputs":{"order_id":42,"amount":10.0}}
{"type":"done","id":4,"t":1700000002.5,"error":{"type":"shop.errors.CardDeclined","message":"card declined","args":["card declined"]}}
{"type":"start","id":5,"t":1700000002.5,"kind":"future","name":"approval"}
{"type":"start","id":6,"t":1700000002.5,"kind":"effect","name":"send_email","inputs":{"order_id":42}}
{"type":"cancel","t":1700000065.0}
{"type":"done","id":5,"t":1700000065.0,"error":{"type":"asyncio.exceptions.CancelledError","message":""}}
{"type":"end","t":1700000065.0,"error":{"type":"duron._errors.JobCancelledError","message":"job x was cancelled"}}
"""

STORY_TABLE = """\
pos  kind    operation                              status     started  done        took
  0  input   approvals                              open       +0.000s
     received 'yes' at +2.000s
  1  effect  fetch_user(user_id=7)                  done                +0.250s
     -> {'id': 7, 'name': 'Ada'}
  2  effect  count_up(state=0, n=3)                 done       +0.250s  +1.000s     750.0ms
     emitted 1 at +0.500s
     emitted 2 at +0.750s
     -> 3
  3  patch   email-receipt                          taken               +2.000s
  4  effect  charge_card(order_id=42, amount=10.0)  failed     +2.000s  +2.500s     500.0ms
     raised CardDeclined: card declined
  5  future  approval                               cancelled  +2.500s  +1m05.000s  1m02.500s
     raised CancelledError
  6  effect  send_email(order_id=42)                cancelled  +2.500s
"""


@pytest.fixture
def story(tmp_path: Path) -> Path:
    path = tmp_path / "story.jsonl"
    path.write_text(STORY)
    return path


def stored_size(lines: str) -> int:
    """The bytes of a log's entries, as ``inspect`` counts them (no line ends)."""
    return sum(len(line) for line in lines.encode().splitlines())


def inspect(
    capsys: pytest.CaptureFixture[str], *args: str | Path
) -> tuple[int, str, str]:
    code = main(["inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_timeline_as_plain_text(
    story: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = inspect(capsys, story)
    assert (code, err) == (0, "")
    n = stored_size(STORY)
    assert n == 1401
    assert out == (
        f"log      {story} (16 entries, 1,401 bytes, 1.4 KiB)\n"
        "job      checkout(order_id=42)\n"
        "module   shop_nowhere.flows\n"
        "started  2023-11-14 22:13:20.000 UTC\n"
        "cancel   requested by the host at +1m05.000s\n"
        "status   cancelled at +1m05.000s: JobCancelledError: job x was cancelled\n"
        "\n" + STORY_TABLE
    )


def test_unfinished_log_shows_what_was_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "cut.jsonl"
    log.write_text("".join(STORY.splitlines(keepends=True)[:13]))
    code, out, _ = inspect(capsys, log)
    assert code == 0
    lines = out.splitlines()
    assert lines[4] == (
        "status   unfinished: the log ends at +2.500s with 2 operations in flight"
    )
    assert lines[-2:] == [
        "  5  future  approval                               running  +2.500s",
        "  6  effect  send_email(order_id=42)                running  +2.500s",
    ]


@duron.effect
async def double(x: int) -> int:
    return 2 * x


@duron.durable
async def doubler(ctx: duron.Context, x: int) -> int:
    return await ctx.run(double, x) + await ctx.run(double, x + 1)


def test_finished_job_and_timings_of_a_real_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "run.jsonl"

    async def record() -> Any:
        async with doubler.invoke(FileLogStorage(log)) as job:
            await job.start(5)
            return await job.wait()

    assert anyio.run(record) == 22
    code, out, _ = inspect(capsys, log, "--plain")
    assert code == 0
    assert re.fullmatch(
        rf"log      {re.escape(str(log))} \(4 entries, {stored_size(log.read_text())} "
        r"bytes\)\n"
        r"job      doubler\(x=5\)\n"
        r"module   test_inspect\n"
        r"started  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC\n"
        r"status   finished at \+\d+\.\d{3}s, returned 22\n"
        r"\n"
        r"pos  kind    operation +status  started  done +took\n"
        r"  0  effect  double\(x=5\) +done +\+\d+\.\d{3}s\n"
        r"     -> 10\n"
        r"  1  effect  double\(x=6\) +done +\+\d+\.\d{3}s\n"
        r"     -> 12\n",
        out,
    ), out


def test_json(story: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = inspect(capsys, story, "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["log"] == str(story)
    assert (doc["entries"], doc["bytes"], doc["status"]) == (
        16,
        stored_size(STORY),
        "cancelled",
    )
    assert doc["job"] == {
        "function": "checkout",
        "module": "shop_nowhere.flows",
        "args": {"order_id": 42},
        "seed": "ab",
        "version": 1,
        "t": T0,
        "started": "2023-11-14 22:13:20.000 UTC",
        "deadline": None,
        "run": 0,
    }
    assert doc["runs"] == 1
    assert doc["cancels"] == [T0 + 65]
    assert doc["end"] == {
        "t": T0 + 65,
        "result": None,
        "error": {
            "type": "duron._errors.JobCancelledError",
            "message": "job x was cancelled",
        },
        "next": None,
    }
    assert doc["damage"] is None
    ops = {op["position"]: op for op in doc["operations"]}
    assert [ops[i]["status"] for i in range(7)] == [
        "open",
        "done",
        "done",
        "taken",
        "failed",
        "cancelled",
        "cancelled",
    ]
    assert ops[2] == {
        "position": 2,
        "kind": "effect",
        "name": "count_up",
        "inputs": {"state": 0, "n": 3},
        "status": "done",
        "started": T0 + 0.25,
        "finished": T0 + 1.0,
        "duration": 0.75,
        "result": 3,
        "error": None,
        "emits": [{"t": T0 + 0.5, "value": 1}, {"t": T0 + 0.75, "value": 2}],
        "attempts": [],
    }
    assert ops[1]["started"] is None
    assert ops[1]["duration"] is None
    assert ops[4]["error"] == {
        "type": "shop.errors.CardDeclined",
        "message": "card declined",
        "args": ["card declined"],
    }


RETRIED = """\
{"type":"job","version":1,"fn":"checkout","module":"","args":{},"seed":"ab","t":1700000000.0,"deadline":1700086400.0}
{"type":"start","id":0,"t":1700000000.0,"kind":"effect","name":"charge","inputs":{}}
{"type":"attempt","id":0,"t":1700000000.5,"attempt":1,"error":{"type":"shop.BankDown","message":"503"},"duration":0.5,"retry_at":1700000001.5}
{"type":"attempt","id":0,"t":1700000002.0,"attempt":2,"error":{"type":"builtins.TimeoutError","message":"charge timed out after 0.5 s (attempt 2)"},"duration":0.5,"retry_at":1700000602.0}
"""


def test_attempts_and_the_deadline_are_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "retried.jsonl"
    log.write_text(RETRIED)
    code, out, err = inspect(capsys, log)
    assert (code, err) == (0, "")
    assert out == (
        f"log       {log} (4 entries, {stored_size(RETRIED)} bytes)\n"
        "job       checkout()\n"
        "started   2023-11-14 22:13:20.000 UTC\n"
        "deadline  2023-11-15 22:13:20.000 UTC (+24h00m00s)\n"
        "status    unfinished: the log ends at +2.000s with 1 operation in flight\n"
        "\n"
        "pos  kind    operation  status   started  done  took\n"
        "  0  effect  charge()   running  +0.000s\n"
        "     attempt 1 failed after 500.0ms: BankDown: 503; attempt 2 due at "
        "+1.500s\n"
        "     attempt 2 failed after 500.0ms: TimeoutError: charge timed out after "
        "0.5 s (attempt 2); attempt 3 due at +10m02.000s\n"
    )
    code, out, _ = inspect(capsys, log, "--json")
    doc = json.loads(out)
    assert doc["job"]["deadline"] == T0 + 86400
    (op,) = doc["operations"]
    assert op["attempts"] == [
        {
            "attempt": 1,
            "t": T0 + 0.5,
            "duration": 0.5,
            "error": {"type": "shop.BankDown", "message": "503"},
            "retry_at": T0 + 1.5,
        },
        {
            "attempt": 2,
            "t": T0 + 2.0,
            "duration": 0.5,
            "error": {
                "type": "builtins.TimeoutError",
                "message": "charge timed out after 0.5 s (attempt 2)",
            },
            "retry_at": T0 + 602.0,
        },
    ]


def test_long_values_are_cut_unless_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "long.jsonl"
    big = "x" * 200
    emits = "".join(
        f'{{"type":"emit","id":0,"t":{T0 + i},"value":{i}}}\n' for i in range(7)
    )
    log.write_text(
        '{"type":"job","version":1,"fn":"f","args":{},"seed":"s","t":1700000000.0}\n'
        f'{{"type":"start","id":0,"t":{T0},"kind":"effect","name":"gen","inputs":{{"text":"{big}"}}}}\n'
        + emits
        + f'{{"type":"done","id":0,"t":{T0 + 7},"result":"{big}"}}\n'
    )
    _, out, _ = inspect(capsys, log)
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[1].split("  ")[3] == "gen(text='" + "x" * 36 + "...)"
    assert table[2:] == [
        *(f"     emitted {i} at +{i}.000s" for i in range(5)),
        "     ... 2 more (--full shows all)",
        "     -> '" + "x" * 76 + "...",
    ]
    _, out, _ = inspect(capsys, log, "--full")
    table = out.split("\n\n", 1)[1].splitlines()
    assert f"gen(text='{big}')" in table[1]
    assert table[2:] == [
        *(f"     emitted {i} at +{i}.000s" for i in range(7)),
        f"     -> '{big}'",
    ]


def test_damaged_log_shows_what_precedes_the_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = STORY.splitlines(keepends=True)
    log = tmp_path / "damaged.jsonl"
    log.write_text("".join(lines[:3]) + "{oops\n" + "".join(lines[4:]))
    offset = len("".join(lines[:3]).encode())
    with pytest.raises(orjson.JSONDecodeError) as info:
        orjson.loads("{oops")
    why = f"not JSON ({info.value})"
    code, out, err = inspect(capsys, log)
    assert code == 2
    assert out.splitlines()[:6] == [
        f"log      {log} (3 entries, {stored_size(''.join(lines[:3]))} bytes)",
        "job      checkout(order_id=42)",
        "module   shop_nowhere.flows",
        "started  2023-11-14 22:13:20.000 UTC",
        "status   unfinished: the log ends at +0.250s with no operation in flight",
        f"damaged  at offset {offset}: {why}; nothing after it is shown",
    ]
    assert err == (
        f"duron inspect: log {log} is damaged at offset {offset}: {why}. Duron does "
        "not skip damaged entries; "
        "restore the log from a backup or truncate it before this offset to re-run "
        "from there\n"
    )


def test_empty_missing_and_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert inspect(capsys, empty) == (
        0,
        f"log     {empty} (0 entries, 0 bytes)\nstatus  empty: the log holds no job entry\n",
        "",
    )
    missing = tmp_path / "missing.jsonl"
    assert inspect(capsys, missing) == (
        2,
        "",
        f"duron inspect: no such log file: {missing}\n",
    )
    assert inspect(capsys) == (
        2,
        "",
        "duron inspect: give one LOG, or --store URL --job ID\n",
    )
    assert inspect(capsys, empty, "--store", "sqlite:///x.db", "--job", "j")[0] == 2
    assert inspect(capsys, "--store", "sqlite:///x.db")[0] == 2


def test_rich_table_escapes_markup(story: Path) -> None:
    lines = STORY.splitlines(keepends=True)
    story.write_text(
        "".join(lines[:2])
        + '{"type":"done","id":1,"t":1700000000.25,"kind":"effect","name":"fetch_user",'
        '"inputs":{"user_id":7},"result":"[bold]not markup[/bold]"}\n'
    )
    tl = anyio.run(read_timeline, FileLogStorage(story))
    out = io.StringIO()
    render_rich(tl, out, width=200)
    text = out.getvalue()
    assert "-> '[bold]not markup[/bold]'" in text
    assert "fetch_user(user_id=7)" in text
    assert "checkout(order_id=42)" in text
    assert "2023-11-14 22:13:20.000 UTC" in text


def test_sqlite_store_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    @duron.durable(name="answer")
    async def answer(ctx: duron.Context) -> int:
        return 42

    db = tmp_path / "jobs.db"

    async def record() -> None:
        store = SQLiteStore(db)
        try:
            async with answer.invoke(store.log("job#1")) as job:
                await job.start()
                await job.wait()
        finally:
            await store.close()

    anyio.run(record)
    url = f"sqlite:///{db}"
    code, out, _ = inspect(capsys, f"{url}#job%231")
    assert code == 0

    async def stored() -> int:
        store = SQLiteStore(db)
        try:
            return sum([len(raw) async for _, raw in store.log("job#1").read()])
        finally:
            await store.close()

    n = anyio.run(stored)
    assert out.splitlines()[0] == f"log      {url}#job#1 (2 entries, {n} bytes)"
    assert out.splitlines()[4].startswith("status   finished at +")
    code, out2, _ = inspect(capsys, "--store", url, "--job", "job#1", "--json")
    assert (code, json.loads(out2)["status"]) == (0, "finished")
    code, out, err = inspect(capsys, "--store", url, "--job", "nope")
    assert (code, out) == (2, "")
    assert err == (
        f"duron inspect: no job 'nope' in {db}; list the store's jobs with "
        "store.list_jobs() or `duron jobs list`\n"
    )


def test_no_user_code_is_imported(story: Path) -> None:
    """The log names module shop_nowhere.flows, which does not exist anywhere."""
    proc = subprocess.run(
        [sys.executable, "-m", "duron", "inspect", str(story), "--plain"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.endswith(STORY_TABLE)
