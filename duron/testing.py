"""Check in your test suite that today's code still replays the logs real jobs wrote.

Keep a folder of logs (copied from production, or recorded once by a test) next to
your tests and replay them on every change; nothing is run and nothing is written:

```python
import pytest
from duron.testing import golden_logs, verify

from shop.flows import checkout


@pytest.mark.parametrize("log", golden_logs("tests/golden/checkout"))
def test_checkout_still_replays(log):
    verify(checkout, log)
```

:func:`verify` raises :class:`IncompatibleLogError` (or :class:`UncheckableLogError`)
whose message names the log, the position and both sides of the difference; the
:class:`VerifyReport` it carries has the same facts as attributes. The command line
does the same check: ``duron verify shop.flows:checkout tests/golden/checkout/*.jsonl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from duron._errors import (
    IncompatibleLogError,
    UncheckableLogError,
    UsageError,
    VerificationError,
)
from duron._guard import guarded
from duron._storage import LogStorage
from duron._verify import Status, VerifyReport, verify_log
from duron.contrib._file import FileLogStorage

if TYPE_CHECKING:
    from duron._durable import DurableFn

__all__ = [
    "IncompatibleLogError",
    "LogSource",
    "Status",
    "UncheckableLogError",
    "VerificationError",
    "VerifyReport",
    "determinism_guard",
    "golden_logs",
    "verify",
    "verify_all",
    "verify_all_async",
    "verify_async",
]

LogSource: TypeAlias = "str | os.PathLike[str] | LogStorage"
"""A log to check: the path of a file log, or any :class:`~duron.LogStorage`
(``store.log(job_id)`` for a job in a SQLite store)."""


def verify(fn: DurableFn[..., Any], log: LogSource, /) -> VerifyReport:
    """Replay one log against ``fn`` without running any effect; raise if it differs.

    Runs its own event loop: from async code use :func:`verify_async`.

    Args:
        fn: The durable function, as the code is today.
        log: A file log's path, or a :class:`~duron.LogStorage`.

    Returns:
        The report (status ``"ok"``; ``finished`` says whether the log records
        the job's end: an unfinished job is checked up to where its log ends).

    Raises:
        IncompatibleLogError: The code takes another path, or a recorded payload
            no longer validates.
        UncheckableLogError: The log is damaged, empty, unreadable, or was written
            by another durable function.
    """
    _no_running_loop("verify", "verify_async")
    return anyio.run(verify_async, fn, log)


async def verify_async(fn: DurableFn[..., Any], log: LogSource, /) -> VerifyReport:
    """:func:`verify` for async code (any anyio backend)."""
    report = await verify_log(fn, _storage(log))
    _raise_for([report])
    return report


def verify_all(
    fn: DurableFn[..., Any],
    logs: str | os.PathLike[str] | Iterable[LogSource],
    /,
    *,
    pattern: str = "*.jsonl",
) -> list[VerifyReport]:
    """Replay every log against ``fn``; raise once, naming every log that fails.

    Args:
        fn: The durable function, as the code is today.
        logs: A folder (its files matching ``pattern``, in name order), or paths
            and storages.
        pattern: Which files of a folder are logs.

    Returns:
        One report per log, in order (all ok).

    Raises:
        IncompatibleLogError: At least one log is incompatible (its ``reports``
            lists every log that is not ok).
        UncheckableLogError: No log is incompatible but some could not be checked.
        UsageError: ``logs`` is a folder with no log in it, or names no log.
    """
    _no_running_loop("verify_all", "verify_all_async")
    return anyio.run(_verify_all, fn, logs, pattern)


async def verify_all_async(
    fn: DurableFn[..., Any],
    logs: str | os.PathLike[str] | Iterable[LogSource],
    /,
    *,
    pattern: str = "*.jsonl",
) -> list[VerifyReport]:
    """:func:`verify_all` for async code (any anyio backend)."""
    return await _verify_all(fn, logs, pattern)


@contextlib.contextmanager
def determinism_guard() -> Iterator[None]:
    """Make durable code fail where it reads the clock or a random source.

    Every job whose ``start()`` or ``resume()`` (or whose run by a
    :class:`~duron.Worker`) begins inside the block runs its durable code under
    the guard: a call to ``time.time()``, ``time.time_ns()``,
    ``time.monotonic()``, ``time.perf_counter()`` (and their ``_ns`` forms),
    ``datetime.now()``, ``datetime.utcnow()``, ``date.today()``, the global
    ``random`` generator (``random.random()``, ``random.choice()``, ...),
    ``os.urandom()`` and what reads it (``uuid.uuid4()``, ``secrets``) raises
    :class:`~duron.NondeterministicCallError` at the call, naming it, where it was
    made and what to use instead. Effects, Duron itself and ``logging`` are
    free to call them. It is meant for tests: durable code runs several times
    slower under it (a profile hook sees each of its calls); outside it,
    nothing is checked and nothing costs.

    Example:
        ```python
        @pytest.fixture(autouse=True)
        def _guard():
            with duron.testing.determinism_guard():
                yield
        ```
    """
    with guarded():
        yield


def golden_logs(folder: str | os.PathLike[str], pattern: str = "*.jsonl") -> list[Path]:
    """The log files in ``folder`` (recursively), sorted: for ``pytest.mark.parametrize``.

    An empty or missing folder is an error rather than an empty list, which pytest
    would turn into a skipped test and a green build.

    Raises:
        UsageError: The folder does not exist or holds no file matching ``pattern``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"golden log folder {root} does not exist")
    found = sorted(p for p in root.rglob(pattern) if p.is_file())
    if not found:
        raise UsageError(f"golden log folder {root} holds no file matching {pattern!r}")
    return found


async def _verify_all(
    fn: DurableFn[..., Any],
    logs: str | os.PathLike[str] | Iterable[LogSource],
    pattern: str,
) -> list[VerifyReport]:
    sources: list[LogSource]
    if isinstance(logs, (str, os.PathLike)):
        sources = list(golden_logs(logs, pattern))
    else:
        sources = list(logs)
        if not sources:
            raise UsageError("verify_all was given no log to check")
    reports = [await verify_log(fn, _storage(log)) for log in sources]
    _raise_for(reports)
    return reports


def _storage(log: LogSource) -> LogStorage:
    if isinstance(log, (str, os.PathLike)):
        return FileLogStorage(log)
    if isinstance(log, LogStorage):
        return log
    raise UsageError(
        f"a log to verify is a file path or a LogStorage, not {type(log).__qualname__}"
    )


def _raise_for(reports: list[VerifyReport]) -> None:
    bad = [r for r in reports if not r.ok]
    if any(r.status == "incompatible" for r in bad):
        raise IncompatibleLogError(bad)
    if bad:
        raise UncheckableLogError(bad)


def _no_running_loop(name: str, instead: str) -> None:
    try:
        import sniffio

        library = sniffio.current_async_library()
    except Exception:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        library = "asyncio"
    raise UsageError(
        f"duron.testing.{name}() runs its own event loop, but {library} is already "
        f"running here: use `await duron.testing.{instead}(...)` in async code"
    )
