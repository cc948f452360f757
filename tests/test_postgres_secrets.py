"""No password of a PostgreSQL store ever reaches the output: not the command line's
stdout or stderr (text or ``--json``), not a label, repr or error message, not a
logging record (Duron's, psycopg's or the pool's, at DEBUG), whether the command
works or fails (wrong password, unknown job, unreachable server, missing or
invalid schema, a URL libpq cannot parse).

The test server knows only the test role's password, so a URL that must connect
carries the distinctive password where a password goes (``user:SECRET@``) and the
real one in its query string, which libpq reads last; a URL that must fail carries
only the distinctive one.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import anyio
import pytest

import duron
from duron._cli import main
from duron.contrib.storage import PostgresStore

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import dsn, requires_postgres, schema_name

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [requires_postgres, pytest.mark.both_hosts]

SECRET = "Zq7hush8vXw"
"""The password that must never be shown."""


@duron.effect
async def double(n: int) -> int:
    return 2 * n


@duron.durable(name="secrets.doubled")
async def doubled(ctx: duron.Context, n: int) -> int:
    return await ctx.run(double, n)


def server() -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn())
    return {
        "user": str(info.get("user") or ""),
        "password": str(info.get("password") or ""),
        "host": str(info.get("host") or "127.0.0.1"),
        "port": str(info.get("port") or "5432"),
        "dbname": str(info.get("dbname") or ""),
    }


def store_url(
    schema: str, *, connects: bool = True, port: str | None = None, db: str = ""
) -> str:
    """The test database's URL with :data:`SECRET` as its password (and, if it
    ``connects``, the real password in the query string, read last by libpq)."""
    s = server()
    query = [("password", s["password"])] if connects else []
    query.append(("schema", schema))
    return (
        f"postgresql://{quote(s['user'])}:{SECRET}@{s['host']}:{port or s['port']}"
        f"/{db or s['dbname']}?{urlencode(query)}"
    )


def keyword_dsn(*, connects: bool) -> str:
    """libpq's keyword form with :data:`SECRET` (then, if it ``connects``, the
    real password: the last ``password=`` wins)."""
    s = server()
    text = (
        f"host={s['host']} port={s['port']} user={s['user']} dbname={s['dbname']} "
        f"password={SECRET}"
    )
    if connects:
        text += f" password='{s['password']}'"
    return text


@pytest.fixture
def schema() -> Iterator[str]:
    """A migrated schema with a completed job ``done`` and a pending job ``todo``."""
    with schema_name() as name:

        async def fill() -> None:
            async with PostgresStore(dsn(), schema=name) as store:
                await store.migrate()
                await store.submit(doubled.options(job_id="done"), 21)
                async with doubled.invoke(store.log("done")) as job:
                    await job.resume()
                    assert await job.wait() == 42
                await store.submit(doubled.options(job_id="todo"), 1)

        anyio.run(fill)
        yield name


@pytest.fixture
def shown(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Shown:
    caplog.set_level(logging.DEBUG)
    # psycopg sets its own logger to WARNING: open it up to its DEBUG records.
    caplog.set_level(logging.DEBUG, logger="psycopg")
    return Shown(capsys, caplog)


class Shown:
    """Everything a run showed: stdout, stderr and every logging record, formatted
    with its traceback."""

    def __init__(
        self, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        self.capsys = capsys
        self.caplog = caplog

    def take(self) -> tuple[str, str, str]:
        out, err = self.capsys.readouterr()
        fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
        logs = "\n".join(fmt.format(r) for r in self.caplog.records)
        self.caplog.clear()
        return out, err, logs

    def run(self, *argv: str) -> tuple[int, str, str]:
        """``duron ARGV`` in-process: exit code, stdout, stderr; asserts that no
        output nor log record holds the password."""
        code = main(list(argv))
        out, err, logs = self.take()
        for where, text in (("stdout", out), ("stderr", err), ("logs", logs)):
            assert SECRET not in text, f"the password is in the {where}:\n{text}"
        return code, out, err


def label(schema: str) -> str:
    """How the store names itself in messages."""
    s = server()
    return (
        f"postgresql://{s['user']}@{s['host']}:{s['port']}/{s['dbname']}"
        f"?schema={schema}"
    )


def cli_label(schema: str) -> str:
    """How the command line shows the URL it was given: without its passwords."""
    s = server()
    return (
        f"postgresql://{quote(s['user'])}:***@{s['host']}:{s['port']}/{s['dbname']}"
        f"?password=***&schema={schema}"
    )


# -- the command line, when it works ------------------------------------------------


def test_inspect(schema: str, shown: Shown) -> None:
    url = store_url(schema)
    code, out, err = shown.run("inspect", "--plain", f"{url}#done")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith(
        f"log      {cli_label(schema)}#done (3 entries, "
    )
    code, out, err = shown.run("inspect", "--store", url, "--job", "done", "--json")
    assert (code, err) == (0, "")
    assert f'"log": "{cli_label(schema)}#done"' in out
    # the records of a connection were captured, and hold no password
    code, *_ = shown.run("inspect", "--store", url, "--job", "done")
    assert code == 0


def test_verify(schema: str, shown: Shown) -> None:
    url = store_url(schema)
    target = f"{__name__}:doubled"
    code, out, err = shown.run("verify", "--no-progress", target, f"{url}#done")
    assert (code, err) == (0, "")
    assert out == f"{cli_label(schema)}#done  ok\n"
    code, out, err = shown.run("verify", "--no-progress", target, url)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{cli_label(schema)}#done  ok",
        f"{cli_label(schema)}#todo  ok (unfinished)",
        "2 logs: 2 ok",
    ]
    code, out, err = shown.run(
        "verify", "--json", target, "--store", url, "--job", "done"
    )
    assert (code, err) == (0, "")
    assert f'"log": "{cli_label(schema)}#done"' in out


def test_jobs(schema: str, shown: Shown) -> None:
    url = store_url(schema)
    code, out, err = shown.run("jobs", "list", url)
    assert code == 0
    assert re.fullmatch(
        r"waiting: todo: no job of secrets\.doubled is running; one last ran at "
        r"\S+Z: is a worker that has secrets\.doubled up\?\n",
        err,
    ), err
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["done", "completed"],
        ["todo", "pending"],
    ]
    code, out, err = shown.run("jobs", "list", "--json", "--limit", "1", url)
    assert code == 0
    assert re.fullmatch(r"next page: --cursor c1\.[\w-]+\n", err), err
    assert len(out.splitlines()) == 1
    code, out, err = shown.run("jobs", "count", url)
    assert (code, err) == (0, "")
    code, out, err = shown.run("jobs", "show", url, "done", "--log")
    assert (code, err) == (0, "")
    assert out.startswith("job:     done\ncall:    secrets.doubled(n=21)\n")
    code, out, err = shown.run("jobs", "show", "--json", url, "done")
    assert (code, err) == (0, "")
    code, out, err = shown.run("jobs", "fork", url, "done", "--at", "0", "--id", "f")
    assert (code, out, err) == (0, "f\n", "")
    code, out, err = shown.run("jobs", "cancel", url, "f")
    assert (code, out, err) == (0, "job f cancelled\n", "")
    code, out, err = shown.run("jobs", "resume", url, "done")
    assert (code, out) == (2, "")
    assert err == (
        "duron jobs: error: job done ended (completed): it cannot run again; fork "
        "it to re-run it from a step (store.fork / `duron jobs fork`)\n"
    )
    code, out, err = shown.run(
        "jobs", "prune", url, "--older-than", "0s", "--status", "cancelled"
    )
    assert (code, out, err) == (0, "deleted 1 job\n", "")
    code, out, err = shown.run("db", "migrate", url)
    assert (code, err) == (0, "")
    assert out == f"{label(schema)}: schema {schema} is up to date (version 4)\n"


def unavailable(store: str, reason: str) -> str:
    """A pattern for the whole message of a server that cannot be reached, whatever
    the operation the command was doing."""
    return (
        re.escape(f"PostgreSQL store {store} is unavailable right now: ")
        + r"[a-z ]+(?: of job \w+)? failed: "
        + re.escape(f"connection failed: {reason}; try again once it is back")
        + "\n"
    )


# -- the command line, when it fails ------------------------------------------------


def test_a_wrong_password(schema: str, shown: Shown) -> None:
    url = store_url(schema, connects=False)
    s = server()
    refused = unavailable(
        label(schema),
        f'connection to server at "{s["host"]}", port {s["port"]} failed: FATAL: '
        f'password authentication failed for user "{s["user"]}"',
    )
    for argv in (
        ("inspect", f"{url}#done"),
        ("inspect", "--json", "--store", url, "--job", "done"),
        ("verify", "--no-progress", f"{__name__}:doubled", url),
        ("jobs", "list", url),
        ("jobs", "list", "--json", url),
        ("jobs", "show", url, "done"),
        ("jobs", "cancel", url, "done"),
        ("jobs", "resume", url, "done"),
        ("jobs", "fork", url, "done", "--at", "0"),
        ("jobs", "prune", url, "--older-than", "1d"),
        ("db", "migrate", url),
    ):
        code, out, err = shown.run(*argv)
        prefix = {"jobs": "duron jobs: error: ", "db": "duron db: error: "}.get(
            argv[0], f"duron {argv[0]}: "
        )
        assert (code, out) == (2, ""), argv
        assert re.fullmatch(re.escape(prefix) + refused, err), (argv, err)
    # A log named by URL#job that cannot be read is reported, not an error.
    code, out, err = shown.run(
        "verify", "--no-progress", f"{__name__}:doubled", f"{url}#done"
    )
    shown_url = cli_label(schema).replace("?password=***&", "?")
    assert (code, err) == (2, "")
    expected = re.escape(f"{shown_url}#done  NOT CHECKABLE  cannot read it: ") + refused
    assert re.fullmatch(expected, out), out


def test_an_unknown_job(schema: str, shown: Shown) -> None:
    url = store_url(schema)
    missing = (
        f"no job 'nope' in {label(schema)}; list the store's jobs with "
        "store.list_jobs() or `duron jobs list`\n"
    )
    for argv in (
        ("inspect", f"{url}#nope"),
        ("inspect", "--store", url, "--job", "nope"),
        ("jobs", "show", url, "nope"),
        ("jobs", "cancel", url, "nope"),
        ("jobs", "resume", url, "nope"),
        ("jobs", "fork", url, "nope", "--at", "1"),
    ):
        code, out, err = shown.run(*argv)
        prefix = "duron jobs: error: " if argv[0] == "jobs" else "duron inspect: "
        assert (code, out, err) == (2, "", prefix + missing), argv
    code, out, err = shown.run(
        "verify", "--no-progress", f"{__name__}:doubled", f"{url}#nope"
    )
    assert (code, err) == (2, "")
    assert out == f"{cli_label(schema)}#nope  NOT CHECKABLE  cannot read it: {missing}"


def test_an_unreachable_server(shown: Shown) -> None:
    url = store_url("duron", port="1")
    s = server()
    refused = unavailable(
        f"postgresql://{s['user']}@{s['host']}:1/{s['dbname']}",
        f'connection to server at "{s["host"]}", port 1 failed: Connection refused '
        "Is the server running on that host and accepting TCP/IP connections?",
    )
    for argv, prefix in (
        (("inspect", f"{url}#done"), "duron inspect: "),
        (("verify", f"{__name__}:doubled", url), "duron verify: "),
        (("jobs", "list", url), "duron jobs: error: "),
        (("db", "migrate", url), "duron db: error: "),
    ):
        code, out, err = shown.run(*argv)
        assert (code, out) == (2, "")
        assert re.fullmatch(re.escape(prefix) + refused, err), (argv, err)


def test_a_missing_or_invalid_schema(shown: Shown) -> None:
    with schema_name() as missing:
        url = store_url(missing)
        absent = (
            f"{label(missing)}: no Duron schema {missing!r} in this database; "
            "create it with `duron db migrate URL` or `await store.migrate()`\n"
        )
        for argv, prefix in (
            (("inspect", f"{url}#done"), "duron inspect: "),
            (("verify", f"{__name__}:doubled", url), "duron verify: "),
            (("jobs", "list", url), "duron jobs: error: "),
        ):
            code, out, err = shown.run(*argv)
            assert (code, out, err) == (2, "", prefix + absent)
    code, out, err = shown.run("jobs", "list", store_url("no-no"))
    assert (code, out, err) == (
        2,
        "",
        "duron jobs: error: schema must be a plain PostgreSQL identifier (letters, "
        "digits and _, not starting with a digit, at most 63 characters), not "
        "'no-no'\n",
    )


def test_urls_the_command_line_cannot_use(schema: str, shown: Shown) -> None:
    url = store_url(schema)
    code, out, err = shown.run("inspect", url)
    assert (code, out) == (2, "")
    assert err == (
        f"duron inspect: {cli_label(schema)!r} names a store, not one job's log: "
        "add #job-id (e.g. sqlite:///jobs.db#order-42)\n"
    )
    other = url.replace("postgresql://", "postgresx://", 1)
    code, out, err = shown.run("jobs", "list", other)
    assert (code, out) == (2, "")
    assert err == (
        f"duron jobs: error: {cli_label(schema).replace('postgresql', 'postgresx')!r}"
        ": unknown store scheme 'postgresx'; Duron knows sqlite:///path.db and "
        "postgresql://user@host/dbname\n"
    )
    code, out, err = shown.run("db", "migrate", other)
    assert (code, out) == (2, "")
    assert err.startswith(
        f"duron db: error: {cli_label(schema).replace('postgresql', 'postgresx')!r}"
        " is not a PostgreSQL URL"
    )
    # A space in the password: libpq refuses the URL and quotes the password.
    spaced = url.replace(SECRET, f"{SECRET[:5]} {SECRET[5:]}")
    code, out, err = shown.run("jobs", "list", spaced)
    assert (code, out) == (2, "")
    assert SECRET[:5] not in err
    assert SECRET[5:] not in err
    assert err.startswith("duron jobs: error: 'postgresql://")
    assert 'unexpected spaces found in "***"' in err


# -- the library ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_store_and_a_worker_show_no_password(
    shown: Shown, anyio_backend: str
) -> None:
    with schema_name() as name:
        store = PostgresStore(keyword_dsn(connects=True), schema=name)
        assert SECRET not in repr(store)
        assert SECRET not in repr(store._engine)
        assert store.label == label(name)
        await store.migrate()
        job_id = await store.submit(doubled, 4)
        async with duron.Worker(store, [doubled], poll_interval=0.05):
            assert await store.result(job_id) == 8
        with pytest.raises(duron.JobNotFoundError) as info:
            await store.get("nope")
        assert SECRET not in str(info.value)
        await store.close()
        *_, logs = shown.take()
        assert "psycopg" in logs  # the driver's DEBUG records were captured
        assert SECRET not in logs


@pytest.mark.anyio
async def test_a_failing_store_and_its_worker_show_no_password(
    shown: Shown, anyio_backend: str
) -> None:
    store = PostgresStore(keyword_dsn(connects=False), connect_timeout=2)
    s = server()
    message = unavailable(
        f"postgresql://{s['user']}@{s['host']}:{s['port']}/{s['dbname']}",
        f'connection to server at "{s["host"]}", port {s["port"]} failed: FATAL: '
        f'password authentication failed for user "{s["user"]}"',
    )
    with pytest.raises(duron.StoreUnavailableError) as info:
        await store.list_jobs()
    assert re.fullmatch(message.removesuffix("\n"), str(info.value))
    async with duron.Worker(
        store, [doubled], poll_interval=0.05, heartbeat_interval=0.05
    ):
        await anyio.sleep(0.3)
    await store.close()
    out, err, logs = shown.take()
    where = f"postgresql://{s['user']}@{s['host']}:{s['port']}/{s['dbname']}"
    assert f"duron: PostgreSQL store {where} is unavailable (" in logs
    assert "password authentication failed" in logs
    assert SECRET not in out + err + logs
    unparsed = (
        "'host=db password=***' is not a PostgreSQL connection string "
        "(unterminated quoted string in connection info string); write "
        "postgresql://user:password@host:5432/dbname"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(unparsed)}$") as bad:
        PostgresStore(f"host=db password='{SECRET}")
    assert bad.value.__cause__ is None  # libpq's message is not chained
