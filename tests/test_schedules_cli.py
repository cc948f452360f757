"""``duron schedules`` and ``duron queues`` on a SQLite store: what each action
prints, and one line (exit code 2) for bad input."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import orjson
import pytest

from duron._cli import main
from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def url(tmp_path: Path) -> str:
    path = tmp_path / "jobs.db"

    async def create() -> None:
        await SQLiteStore(path).close()
        store = SQLiteStore(path)
        await store.queues()  # the file and its tables
        await store.close()

    anyio.run(create)
    return f"sqlite:///{path}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schedules_are_added_listed_paused_and_removed(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "schedules", "add", url, "nightly", "report", "0 3 * * *",
        "--args", '{"region": "emea"}', "--timezone", "Europe/Paris",
        "--queue", "reports",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith(
        "nightly '0 3 * * *' Europe/Paris report queue=reports missed=latest (next "
    )
    code, out, _ = run(capsys, "schedules", "list", url, "--json")
    shown = orjson.loads(out)
    assert (shown["name"], shown["args"], shown["paused"]) == (
        "nightly",
        {"region": "emea"},
        False,
    )
    assert run(capsys, "schedules", "pause", url, "nightly") == (
        0,
        "schedule nightly paused\n",
        "",
    )
    code, out, _ = run(capsys, "schedules", "list", url)
    assert out == (
        "nightly '0 3 * * *' Europe/Paris report queue=reports missed=latest (paused)\n"
    )
    assert run(capsys, "schedules", "remove", url, "nightly")[:2] == (
        0,
        "schedule nightly removed\n",
    )
    assert run(capsys, "schedules", "list", url) == (0, "", "")


def test_bad_schedule_input_is_one_line(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = url.removeprefix("sqlite:///")
    cases = [
        (
            ("schedules", "remove", url, "nope"),
            f"duron schedules: error: {path}: no schedule named 'nope'\n",
        ),
        (
            ("schedules", "add", url, "x", "report", "bad"),
            "duron schedules: error: schedule 'x': 'bad' is not a cron expression "
            "(Wrong number of fields)\n",
        ),
        (
            ("schedules", "add", url, "x", "report", "* * * * *", "--args", "{"),
            "duron schedules: error: --args is not JSON: unexpected end of data: "
            "line 1 column 2 (char 1)\n",
        ),
        (
            ("queues", "set", url, "mail", "--rate", "10"),
            "duron queues: error: --rate takes N/SECONDS (10/60), not '10'\n",
        ),
    ]
    for argv, message in cases:
        assert run(capsys, *argv) == (2, "", message)


def test_queue_limits_are_set_and_listed(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(
        capsys, "queues", "set", url, "mail", "--concurrency", "3", "--rate", "10/60"
    ) == (
        0,
        "mail (concurrency 3, rate 10/60s)\n",
        "",
    )
    assert run(capsys, "queues", "list", url) == (
        0,
        "mail (concurrency 3, rate 10/60s)\n",
        "",
    )
