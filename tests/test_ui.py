"""The web view (``duron ui``): its view models and HTTP handlers.

Handlers are called through Starlette's test client on real sources: log files
written here (fixed times, so whole pages can be compared) and a SQLite store
whose jobs a real worker ran. tests/test_ui_browser.py drives the same pages in
Chromium.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
import orjson
import pytest
import ui_jobs
from asgi_client import ASGIClient
from postgres_support import dsn, requires_postgres

import duron
from duron._cli.inspect import read_timeline
from duron._entries import (
    ErrorInfo,
    JobCancelled,
    JobFinished,
    JobStarted,
    OpAttempted,
    OpCompleted,
    OpEmitted,
    OpStarted,
)
from duron._ui.app import make_app
from duron._ui.sources import FileSource, open_source
from duron._ui.timeline import Bar, Mark, layout
from duron.contrib.storage import FileLogStorage, SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from duron._entries import Entry

T0 = 1_780_000_000.0
ROOT = Path(__file__).parent.parent


def _write(path: Path, entries: list[Entry], mtime: float) -> None:
    path.write_bytes(b"".join(orjson.dumps(e.to_json()) + b"\n" for e in entries))
    os.utime(path, (mtime, mtime))


def _cancelled_log() -> list[Entry]:
    """An effect retried once, input that arrived, a patch, then cancellation."""
    return [
        JobStarted("shop.order", {"order": 7}, "seed", T0, module="shop"),
        OpStarted(0, T0 + 0.1, "effect", "charge", {"item": 1}),
        OpAttempted(
            0, T0 + 0.2, 1, ErrorInfo("builtins.OSError", "down"), 0.1, T0 + 0.3
        ),
        OpCompleted(0, T0 + 0.5, {"ok": True}),
        OpStarted(1, T0 + 0.6, "input", "events", None),
        OpEmitted(1, T0 + 0.7, "hi"),
        OpCompleted(2, T0 + 0.9, None, kind="patch", name="fix-1"),
        JobCancelled(T0 + 1.0),
        JobFinished(
            T0 + 2.0, error=ErrorInfo("duron._errors.JobCancelledError", "cancelled")
        ),
    ]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    (root / "eu").mkdir(parents=True)
    _write(root / "eu" / "a.jsonl", _cancelled_log(), T0 + 3)
    _write(
        root / "b.jsonl",
        [
            JobStarted("shop.refund", {"order": 8}, "seed", T0 + 10),
            OpStarted(0, T0 + 10.5, "future", "approval", None),
        ],
        T0 + 11,
    )
    (root / "notes.txt").write_text("not a log")
    return root


def _client(source: Any, **options: Any) -> ASGIClient:
    return ASGIClient(make_app(source, token="tok", **options))


# -- the view models -------------------------------------------------------------------


@pytest.mark.anyio
async def test_layout_places_bars_attempts_and_marks(logs: Path) -> None:
    tl = await read_timeline(FileLogStorage(logs / "eu" / "a.jsonl"))
    lay = layout(tl)
    assert lay.axis.span == pytest.approx(2.0)
    assert [t for _, t in lay.axis.ticks] == [
        "+0.0ms", "+500.0ms", "+1.000s", "+1.500s", "+2.000s"
    ]  # fmt: skip
    effect, inp, patch = lay.rows
    assert effect.bars == [
        Bar(5.0, 5.0, "attempt", "attempt 1 failed after 0.100s: OSError: down"),
        Bar(10.0, 5.0, "backoff", "waiting to retry until +300.0ms"),
        Bar(15.0, 10.0, "ok", "done: +300.0ms to +500.0ms"),
    ]
    assert inp.status == "open"  # never closed; the job ended: still shown open
    assert inp.bars == [Bar(30.0, 70.0, "running", "open: +600.0ms to now")]
    assert inp.marks == [Mark(35.0, "input", "input arrived at +700.0ms")]
    assert patch.marks == [Mark(45.0, "patch", "patch taken at +900.0ms")]
    assert lay.job_marks == [
        Mark(50.0, "cancel", "cancellation asked at +1.000s"),
        Mark(100.0, "end", "ended at +2.000s"),
    ]
    assert lay.waiting == []  # the job ended: it waits for nothing
    assert lay.peak == 1  # the effect ended before the input opened


@pytest.mark.anyio
async def test_layout_windows_a_thousand_way_gather(tmp_path: Path) -> None:
    entries: list[Entry] = [JobStarted("fan", {}, "s", T0)]
    entries += [OpStarted(i, T0 + 1, "effect", "work", {"i": i}) for i in range(1000)]
    entries += [OpCompleted(i, T0 + 2 + i / 1000, i) for i in range(999)]
    _write(tmp_path / "fan.jsonl", entries, T0)
    tl = await read_timeline(FileLogStorage(tmp_path / "fan.jsonl"))
    lay = layout(tl, start=900, window=200)
    assert (lay.total, lay.start, len(lay.rows)) == (1000, 900, 100)
    assert lay.rows[0].op.position == 900
    assert lay.peak == 1000
    assert [(i, op.position) for i, op in lay.waiting] == [(999, 999)]


@pytest.mark.anyio
async def test_timeline_read_again_decodes_only_what_was_appended(
    tmp_path: Path,
) -> None:
    path = tmp_path / "grow.jsonl"
    first = _cancelled_log()[:4]
    _write(path, first, T0)
    tl = await read_timeline(FileLogStorage(path))
    assert (tl.entries, tl.status) == (4, "unfinished")
    with open(path, "ab") as f:
        for e in _cancelled_log()[4:]:
            f.write(orjson.dumps(e.to_json()) + b"\n")
    again = await read_timeline(FileLogStorage(path), into=tl)
    assert again is tl
    whole = await read_timeline(FileLogStorage(path))
    assert again.to_json() == whole.to_json()
    assert (again.entries, again.status) == (9, "cancelled")


# -- a directory of logs ---------------------------------------------------------------


@pytest.mark.anyio
async def test_file_list_page_fragment(logs: Path) -> None:
    async with _client(FileSource(logs)) as client:
        got = await client.get("/?partial=1")
    assert got.status_code == 200
    assert got.text == (
        '<nav class=counts id=counts><a class="tab on" href="/?">all <b>2</b></a>'
        '<a class="tab" data-status="unfinished" href="/?status=unfinished">'
        "unfinished <b>1</b></a>"
        '<a class="tab" data-status="completed" href="/?status=completed">'
        "completed <b>0</b></a>"
        '<a class="tab" data-status="failed" href="/?status=failed">failed <b>0</b></a>'
        '<a class="tab" data-status="cancelled" href="/?status=cancelled">'
        "cancelled <b>1</b></a>"
        '<a class="tab" data-status="empty" href="/?status=empty">empty <b>0</b></a>'
        '<a class="tab" data-status="damaged" href="/?status=damaged">damaged <b>0</b></a>'
        "</nav><table class=jobs id=jobs><thead><tr><th>job</th><th>status</th>"
        "<th>call</th><th>created</th><th>updated</th></tr></thead><tbody>"
        '<tr data-job="b.jsonl"><td><a href="/job?id=b.jsonl">b.jsonl</a></td>'
        '<td><span class="status s-unfinished">unfinished</span></td>'
        "<td><code>shop.refund(order=8)</code></td>"
        '<td><time datetime="2026-05-28T20:26:50+00:00">2026-05-28 20:26:50Z</time></td>'
        '<td><time datetime="2026-05-28T20:26:51+00:00">2026-05-28 20:26:51Z</time></td>'
        "</tr>"
        '<tr data-job="eu/a.jsonl"><td><a href="/job?id=eu%2Fa.jsonl">eu/a.jsonl</a>'
        '</td><td title="duron._errors.JobCancelledError: cancelled">'
        '<span class="status s-cancelled">cancelled</span></td>'
        "<td><code>shop.order(order=7)</code></td>"
        '<td><time datetime="2026-05-28T20:26:40+00:00">2026-05-28 20:26:40Z</time></td>'
        '<td><time datetime="2026-05-28T20:26:43+00:00">2026-05-28 20:26:43Z</time></td>'
        "</tr></tbody></table>"
    )


@pytest.mark.anyio
async def test_file_list_filters(logs: Path) -> None:
    async with _client(FileSource(logs)) as client:
        rows = re.findall(
            r'data-job="([^"]+)"', (await client.get("/?status=cancelled")).text
        )
        assert rows == ["eu/a.jsonl"]
        rows = re.findall(
            r'data-job="([^"]+)"', (await client.get("/?function=shop.refund")).text
        )
        assert rows == ["b.jsonl"]
        rows = re.findall(r'data-job="([^"]+)"', (await client.get("/?id=eu/")).text)
        assert rows == ["eu/a.jsonl"]
        after = "2026-05-28T20:26:45Z"
        rows = re.findall(
            r'data-job="([^"]+)"', (await client.get(f"/?after={after}")).text
        )
        assert rows == ["b.jsonl"]
        bad = await client.get("/?after=yesterday")
        assert bad.status_code == 400
        assert (
            "<p class=error id=message>created after: &#x27;yesterday&#x27; is not a "
            "time: write 2026-05-01, 2026-05-01T12:00:00Z, 2026-05-01T14:00:00+02:00, "
            "or a duration meaning that long ago (30m, 12h, 7d)</p>"
        ) in bad.text
        bad = await client.get("/?status=running")
        assert bad.status_code == 400
        assert (
            "status &#x27;running&#x27; is not one of unfinished, completed, failed, "
            "cancelled, empty, damaged</p>"
        ) in bad.text


@pytest.mark.anyio
async def test_file_list_pages(tmp_path: Path) -> None:
    for i in range(120):
        _write(
            tmp_path / f"j{i:03}.jsonl",
            [JobStarted("f", {"i": i}, "s", T0 + i)],
            T0 + i,
        )
    async with _client(FileSource(tmp_path)) as client:
        first = (await client.get("/")).text
        ids = re.findall(r'data-job="([^"]+)"', first)
        assert ids == [f"j{i:03}.jsonl" for i in range(119, 69, -1)]  # newest first
        more = re.search(r'id=next-page href="([^"]+)"', first)
        assert more is not None
        second = (await client.get(more[1].replace("&amp;", "&"))).text
        ids = re.findall(r'data-job="([^"]+)"', second)
        assert ids == [f"j{i:03}.jsonl" for i in range(69, 19, -1)]


@pytest.mark.anyio
async def test_file_job_page(logs: Path) -> None:
    async with _client(FileSource(logs)) as client:
        page = await client.get("/job", params={"id": "eu/a.jsonl"})
        assert page.status_code == 200
        text = page.text
        assert "<div id=live>" in text  # ended: no data-live, the script stays idle
        assert (
            '<span id=job-status><span class="status s-cancelled">cancelled</span>'
        ) in text
        assert '<li class="op k-effect" id=op-0 data-status="done">' in text
        assert 'title="attempt 1 failed after 0.100s: OSError: down"' in text
        assert 'class="mark m-cancel" style="left:50.0%"' in text
        assert "id=actions" not in text
        waiting = (await client.get("/job", params={"id": "b.jsonl"})).text
        assert 'data-live="/job?id=b.jsonl&amp;from=0&amp;partial=1"' in waiting
        assert (
            '<section id=waiting><h2>waiting now at</h2><ul><li><a href="#op-0">#0</a> '
            "future <code>approval</code> since +500.0ms</li></ul></section>"
        ) in waiting
        missing = await client.get("/job", params={"id": "../../etc/passwd"})
        assert missing.status_code == 404
        assert (
            "<p class=error id=message>no job &#x27;../../etc/passwd&#x27; in "
            f"{logs}; list the store&#x27;s jobs with store.list_jobs() or `duron "
            "jobs list`</p>"
        ) in missing.text
        bad = await client.get("/job", params={"id": "b.jsonl", "from": "-1"})
        assert bad.status_code == 400
        assert "from must be a whole number &gt;= 0, not &#x27;-1&#x27;" in bad.text


@pytest.mark.anyio
async def test_requests_naming_another_host_are_refused(logs: Path) -> None:
    async with _client(FileSource(logs)) as client:
        got = await client.get("/", headers={"host": "evil.example"})
    assert (got.status_code, got.text) == (400, "Invalid host header")


# -- a store ---------------------------------------------------------------------------


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A SQLite store: order-1 completed, order-2 waiting, broken-1 failed."""
    db = tmp_path / "jobs.db"

    ui_jobs.FLAKY_FAILURES.clear()

    async def fill() -> None:
        store = SQLiteStore(db)
        await store.submit(ui_jobs.order.options(job_id="order-1"), "order-1", 3)
        await store.submit(ui_jobs.order.options(job_id="order-2"), "order-2", 2)
        await store.submit(ui_jobs.broken.options(job_id="broken-1"), "bad input")
        await store.submit(ui_jobs.family.options(job_id="family-1"), 2)
        async with duron.Worker(
            store, ui_jobs.FUNCTIONS, poll_interval=0.05, suspend_after=0
        ) as w:
            await w.wait_idle()
            await store.complete_future("order-1", "4", result="yes")
            await w.wait_idle()
        await store.close()

    anyio.run(fill)
    return f"sqlite:///{db}"


@pytest.fixture
async def store_client(store_url: str) -> AsyncIterator[ASGIClient]:
    async with _client(open_source(store_url)) as client:
        yield client


@pytest.mark.anyio
async def test_store_list_counts_and_filters(store_client: ASGIClient) -> None:
    text = (await store_client.get("/?id=o")).text + (
        await store_client.get("/?id=b")
    ).text
    assert re.findall(r'data-job="([^"]+)"', text) == ["order-2", "order-1", "broken-1"]
    text = (await store_client.get("/")).text
    counts = dict(
        re.findall(r'data-status="(\w+)" href="[^"]*">\w+ <b>(\d+)</b>', text)
    )
    assert counts == {
        "pending": "0",
        "running": "0",
        "suspended": "1",
        "completed": "4",  # order-1, family-1 and its two children
        "failed": "1",
        "cancelled": "0",
    }
    text = (await store_client.get("/?status=failed")).text
    assert re.findall(r'data-job="([^"]+)"', text) == ["broken-1"]
    text = (await store_client.get("/?function=order&id=order-2")).text
    assert re.findall(r'data-job="([^"]+)"', text) == ["order-2"]
    bad = await store_client.get("/?cursor=nonsense")
    assert bad.status_code == 400
    assert (
        "cursor &#x27;nonsense&#x27; is not one list_jobs() returned: pass a page&#x27;s "
        "next_cursor (`duron jobs list` prints it as --cursor)"
    ) in bad.text


@pytest.mark.anyio
async def test_store_job_pages(store_client: ASGIClient) -> None:
    done = (await store_client.get("/job?id=order-1")).text
    assert '<h2>result</h2><details class=payload data-key="result" open>' in done
    assert "&quot;approved&quot;: &quot;yes&quot;" in done
    assert 'title="attempt 1 failed after' in done  # flaky's failed attempt
    failed = (await store_client.get("/job?id=broken-1")).text
    assert "<code>ValueError: bad input</code>" in failed
    waiting = (await store_client.get("/job?id=order-2")).text
    assert 'data-live="/job?id=order-2&amp;from=0&amp;partial=1"' in waiting
    assert '<a href="#op-3">#3</a> future <code>approval</code>' in waiting
    partial = (await store_client.get("/job?id=order-2&partial=1")).text
    assert partial.startswith("<h1>job <span id=job-id>order-2</span>")
    assert "<html" not in partial


@pytest.mark.anyio
async def test_parent_and_children_link_each_other(store_client: ASGIClient) -> None:
    page = (await store_client.get("/job?id=family-1")).text
    children = re.search(r"<span id=children>(.*?)</span>", page)
    assert children is not None
    ids = re.findall(r'<a href="/job\?id=([^"]+)">', children[1])
    assert len(ids) == 2
    child = (await store_client.get("/job", params={"id": unquote(ids[0])})).text
    assert '<a id=parent href="/job?id=family-1">family-1</a>' in child
    assert '<h2>result</h2><details class=payload data-key="result" open>' in child


@pytest.mark.anyio
async def test_actions_are_off_by_default(
    store_client: ASGIClient, store_url: str
) -> None:
    page = (await store_client.get("/job?id=order-2")).text
    assert "id=actions" not in page
    got = await store_client.post(
        "/action", data={"id": "order-2", "action": "cancel", "token": "tok"}
    )
    assert got.status_code == 403
    assert (
        "<p class=error id=message>actions are off: this page is read-only (start "
        "duron ui with --allow-actions to cancel, requeue, complete futures or send "
        "input)</p>"
    ) in got.text
    assert await _status(store_url, "order-2") == "suspended"


@pytest.mark.anyio
async def test_an_action_is_confirmed_then_done(store_url: str) -> None:
    async with _client(open_source(store_url), allow_actions=True) as client:
        page = (await client.get("/job?id=order-2")).text
        assert "<section id=actions>" in page
        form = {"id": "order-2", "action": "complete", "future": "3", "token": "tok"}
        form["result"] = '"ok"'
        ask = await client.post("/action", data=form)
        assert ask.status_code == 200
        assert (
            "<p id=confirm-what>Complete future 3 of job order-2 with result &quot;ok&quot;?</p>"
        ) in ask.text
        assert await _status(store_url, "order-2") == "suspended"  # not yet
        done = await client.post("/action", data={**form, "confirm": "yes"})
        assert done.status_code == 303
        assert done.headers["location"] == (
            "/job?id=order-2&done=future+3+completed%3B+the+job+records+it"
        )
        notice = (await client.get(done.headers["location"])).text
        assert (
            "<p class=notice id=notice>future 3 completed; the job records it</p>"
            in notice
        )
        cancel = {
            "id": "broken-1",
            "action": "cancel",
            "token": "tok",
            "confirm": "yes",
        }
        done = await client.post("/action", data=cancel)
        assert done.headers["location"] == (
            "/job?id=broken-1&done=the+job+had+already+ended"
        )


@pytest.mark.anyio
async def test_actions_refuse_forged_forms(store_url: str) -> None:
    form = {"id": "order-2", "action": "cancel", "confirm": "yes"}
    async with _client(open_source(store_url), allow_actions=True) as client:
        got = await client.post("/action", data={**form, "token": "guess"})
        assert got.status_code == 403
        assert (
            "this form is not from this server: reload the job&#x27;s page" in got.text
        )
        got = await client.post(
            "/action",
            data={**form, "token": "tok"},
            headers={"origin": "http://evil.example"},
        )
        assert got.status_code == 403
        assert (
            "a form posted from another site (http://evil.example) is refused"
            in got.text
        )
        got = await client.post(
            "/action", data={**form, "action": "complete", "future": "3", "token": "tok",
                             "result": "{nope"},
        )  # fmt: skip
        assert got.status_code == 400
        assert (
            "result must be JSON (&quot;text&quot;, 3, true, {&quot;k&quot;: 1}): "
            "&#x27;{nope&#x27; is not</p>"
        ) in got.text
    assert await _status(store_url, "order-2") == "suspended"


async def _status(url: str, job_id: str) -> str:
    store = SQLiteStore(url.removeprefix("sqlite:///"), create=False)
    try:
        return (await store.get(job_id)).status
    finally:
        await store.close()


@requires_postgres
@pytest.mark.anyio
async def test_no_page_shows_a_dsn_password() -> None:
    url = re.sub(r"(postgresql://[^:@/]+):[^@]*@", r"\1:Pa55-w0rd-unseen@", dsn())
    async with _client(open_source(url)) as client:
        pages = [await client.get("/"), await client.get("/job?id=order-1")]
    for page in pages:
        assert page.status_code == 500  # the server refuses the password
        assert "Pa55-w0rd-unseen" not in page.text
        assert ":***@" in page.text


# -- the command -----------------------------------------------------------------------


def _duron(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duron", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_command_errors() -> None:
    got = _duron("ui", "no/such/dir")
    assert (got.returncode, got.stdout) == (2, "")
    assert got.stderr == (
        "duron ui: no such log file or directory: 'no/such/dir' (or give a store "
        "URL: sqlite:///jobs.db, postgresql://user@host/dbname)\n"
    )
    got = _duron("ui", "postgresql://u:hunter2@127.0.0.1:1/x#job")
    assert got.stderr == (
        "duron ui: 'postgresql://u:***@127.0.0.1:1/x#job': give the store URL without "
        "#job-id; the page of each job is linked from the list\n"
    )


def test_command_serves_and_warns_off_localhost(logs: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "duron", "ui", str(logs), "--port", "0", "--host", "0.0.0.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            rf"duron ui: {re.escape(str(logs))} at http://0\.0\.0\.0:(\d+)/ \(read-only\)\n",
            line,
        )
        assert match is not None, line
        warning = proc.stderr.readline()
        assert warning == (
            "duron ui: warning: listening on 0.0.0.0, not on this machine alone: "
            "whoever reaches it reads every job's arguments and results\n"
        )
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{match[1]}/", timeout=10) as r:
            body = r.read().decode()
        assert 'data-job="eu/a.jsonl"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_benchmark_runs() -> None:
    """benchmarks/bench_ui.py is not a test, but it must not rot: a tiny run."""
    got = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_ui.py"), "--jobs", "20",
         "--entries", "50", "--repeat", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert "target: every page under 1000 ms; worst" in got.stdout
