"""The JSON Lines file store: crash repair, damage, the OS lock, durability.

What every backend must do is in ``test_storage_contract.py``; this file holds what
only a file can get wrong, mostly end to end through real jobs.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import orjson
import pytest

import duron
from duron.contrib.storage import Durability, FileLogStorage

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

DAMAGED = (
    ". Duron does not skip damaged entries; restore the log from a backup or "
    "truncate it before this offset to re-run from there"
)

calls: list[int] = []


@duron.effect
async def step(i: int) -> int:
    calls.append(i)
    return i * 10


@duron.durable
async def chain(ctx: duron.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run(step, i)
    return total


@duron.durable
async def other_flow(ctx: duron.Context, n: int) -> int:
    return n


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


async def run_chain(path: Path, n: int) -> int:
    async with chain.invoke(FileLogStorage(path)) as job:
        await job.start(n)
        return await job.wait()


async def resume_chain(storage: FileLogStorage) -> int:
    async with chain.invoke(storage) as job:
        await job.resume()
        return await job.wait()


def lines(path: Path) -> list[bytes]:
    """The log's lines, each with its newline (a torn tail keeps none)."""
    return path.read_bytes().splitlines(keepends=True)


def types(path: Path) -> list[str]:
    return [orjson.loads(line)["type"] for line in lines(path)]


async def finished_log(tmp_path: Path, n: int = 3) -> Path:
    """A log of ``chain(n)`` that ran to its end: job, n done entries, end."""
    path = tmp_path / "chain.jsonl"
    assert await run_chain(path, n) == sum(i * 10 for i in range(n))
    assert types(path) == ["job", *["done"] * n, "end"]
    calls.clear()
    return path


# -- a crash's torn tail is repaired -----------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(lambda line: line[: len(line) // 2], id="half-a-line"),
        pytest.param(lambda line: line[:-1], id="all-but-the-newline"),
        pytest.param(lambda line: b"\x00" * 4096, id="nul-bytes"),
        pytest.param(lambda line: line[:9] + b"\x00" * 100, id="line-then-nul-bytes"),
    ],
)
async def test_torn_last_line_is_cut_off_and_the_job_carries_on(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    tail: Callable[[bytes], bytes],
) -> None:
    path = await finished_log(tmp_path)
    old = lines(path)
    committed = b"".join(old[:3])  # job, done 0, done 1
    torn = tail(old[3])  # what a crash left of "done 2"
    assert not torn.endswith(b"\n")
    path.write_bytes(committed + torn)

    with caplog.at_level(logging.WARNING, logger="duron"):
        assert await resume_chain(FileLogStorage(path)) == 30
    assert calls == [2]  # only the effect whose entry was torn runs again
    assert caplog.messages == [
        f"log {path}: removed a torn last entry ({len(torn)} bytes at offset "
        f"{len(committed)}) left by a crash"
    ]
    after = path.read_bytes()
    assert after.startswith(committed)  # nothing committed is lost
    assert types(path) == ["job", "done", "done", "done", "end"]
    # The next append started on a fresh line: done 2 again, whole (a new time).
    redone = orjson.loads(lines(path)[3])
    assert redone["t"] >= orjson.loads(old[3])["t"]
    assert {**redone, "t": 0} == {**orjson.loads(old[3]), "t": 0}


async def test_torn_only_line_leaves_an_empty_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = await finished_log(tmp_path)
    first = lines(path)[0]
    path.write_bytes(first[:20])
    storage = FileLogStorage(path)
    with caplog.at_level(logging.WARNING, logger="duron"):
        await storage.acquire()
    await storage.release()
    assert path.read_bytes() == b""
    assert caplog.messages == [
        f"log {path}: removed a torn last entry (20 bytes at offset 0) left by a crash"
    ]
    async with chain.invoke(FileLogStorage(path)) as job:
        with pytest.raises(duron.JobNotStartedError):
            await job.resume()


async def test_a_log_ending_in_a_newline_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = await finished_log(tmp_path)
    before = path.read_bytes()
    storage = FileLogStorage(path)
    with caplog.at_level(logging.WARNING, logger="duron"):
        await storage.acquire()
        await storage.release()
    assert path.read_bytes() == before
    assert caplog.messages == []


async def test_torn_tail_longer_than_the_repair_block(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "long.jsonl"
    good = b'{"type":"x"}\n'
    torn = b'{"pad":"' + b"y" * 200_000  # spans several 64 KiB blocks
    path.write_bytes(good + torn)
    storage = FileLogStorage(path)
    with caplog.at_level(logging.WARNING, logger="duron"):
        await storage.acquire()
    try:
        await storage.append([b'{"type":"z"}'])
    finally:
        await storage.release()
    assert path.read_bytes() == good + b'{"type":"z"}\n'
    assert caplog.messages == [
        f"log {path}: removed a torn last entry ({len(torn)} bytes at offset "
        f"{len(good)}) left by a crash"
    ]


async def test_read_never_yields_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    records = [item async for item in FileLogStorage(path).read()]
    assert records == [(0, b'{"a":1}'), (8, b'{"b":2}')]


async def test_read_across_chunk_boundaries_keeps_offsets(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    rows = [orjson.dumps({"i": i, "pad": "z" * (i % 5000)}) for i in range(800)]
    path.write_bytes(b"".join(r + b"\n" for r in rows))  # about 2 MiB: 2+ chunks
    data = path.read_bytes()
    records = [item async for item in FileLogStorage(path).read()]
    assert [r for _, r in records] == rows
    for offset, row in records:
        assert data[offset : offset + len(row) + 1] == row + b"\n"


# -- damage in the middle is an error naming the byte offset --------------------------------


async def test_damaged_line_in_the_middle_fails_resume_with_its_offset(
    tmp_path: Path,
) -> None:
    path = await finished_log(tmp_path)
    old = lines(path)
    old[2] = b'{"type":"done","id":1,"t":17\n'  # cut short, then a newline
    path.write_bytes(b"".join(old))
    offset = len(old[0]) + len(old[1])
    damaged = path.read_bytes()

    with pytest.raises(duron.CorruptLogError) as info:
        await resume_chain(FileLogStorage(path))
    pattern = (
        re.escape(f"log {path} is damaged at offset {offset}: not JSON (")
        + r"[^\n]+"
        + re.escape(")" + DAMAGED)
    )
    assert info.match("^" + pattern + "$")
    assert info.value.offset == offset
    assert info.value.job == str(path)
    assert calls == []  # no effect ran: replay stopped at the damage
    assert path.read_bytes() == damaged  # and nothing was written or cut


async def test_entry_of_unknown_type_in_the_middle_names_its_offset(
    tmp_path: Path,
) -> None:
    path = await finished_log(tmp_path)
    old = lines(path)
    old[3] = b'{"type":"bogus","id":2}\n'
    path.write_bytes(b"".join(old))
    offset = len(old[0]) + len(old[1]) + len(old[2])
    message = (
        f"log {path} is damaged at offset {offset}: unknown entry type 'bogus'{DAMAGED}"
    )
    with pytest.raises(duron.CorruptLogError, match="^" + re.escape(message) + "$"):
        await resume_chain(FileLogStorage(path))
    assert calls == []


async def test_empty_line_in_the_middle_is_damage(tmp_path: Path) -> None:
    path = await finished_log(tmp_path)
    old = lines(path)
    path.write_bytes(b"".join([*old[:2], b"\n", *old[2:]]))
    offset = len(old[0]) + len(old[1])
    with pytest.raises(duron.CorruptLogError) as info:
        await resume_chain(FileLogStorage(path))
    assert info.value.offset == offset
    assert str(info.value).startswith(
        f"log {path} is damaged at offset {offset}: not JSON ("
    )


async def test_damaged_job_entry_fails_resume_itself(tmp_path: Path) -> None:
    path = tmp_path / "bad-first.jsonl"
    path.write_bytes(b'{"type":"job","version":1}\n')
    message = (
        f"log {path} is damaged at offset 0: field 'args' of a job entry is "
        f"missing{DAMAGED}"
    )
    async with chain.invoke(FileLogStorage(path)) as job:
        with pytest.raises(duron.CorruptLogError, match="^" + re.escape(message) + "$"):
            await job.resume()


# -- one writer, across processes ----------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys
    import anyio
    from duron.contrib.storage import Durability, FileLogStorage

    async def main() -> None:
        storage = FileLogStorage(sys.argv[1])
        await storage.acquire()
        print("locked", flush=True)
        sys.stdin.readline()  # hold the lock until the test says so
        await storage.release()

    anyio.run(main)
    """
)

_CONTENDER = textwrap.dedent(
    """
    import sys
    import anyio
    import duron
    from duron.contrib.storage import Durability, FileLogStorage

    async def main() -> None:
        try:
            await FileLogStorage(sys.argv[1]).acquire()
        except duron.LogLockedError as exc:
            print(f"{type(exc).__name__}: {exc}")
        else:
            print("acquired")

    anyio.run(main)
    """
)


def locked_message(path: Path) -> str:
    return (
        f"log {path} is already open for writing by another job (held by another "
        "process or job); a log has one writer at a time: close the other job or "
        "wait for it to finish"
    )


async def test_second_process_cannot_open_the_log_for_writing(tmp_path: Path) -> None:
    path = await finished_log(tmp_path, 2)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        ready = await anyio.to_thread.run_sync(holder.stdout.readline)
        assert ready == "locked\n"
        with pytest.raises(
            duron.LogLockedError, match="^" + re.escape(locked_message(path)) + "$"
        ):
            async with chain.invoke(FileLogStorage(path)) as job:
                await job.resume()
        # Reading does not need the lock.
        assert len([r async for r in FileLogStorage(path).read()]) == 4
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert await anyio.to_thread.run_sync(holder.wait, 30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # The holder is gone: the lock went with it.
    assert await resume_chain(FileLogStorage(path)) == 10
    assert calls == []


async def test_log_held_here_is_refused_to_another_process(tmp_path: Path) -> None:
    path = await finished_log(tmp_path, 1)
    storage = FileLogStorage(path)
    await storage.acquire()
    try:
        out = await anyio.run_process([sys.executable, "-c", _CONTENDER, str(path)])
    finally:
        await storage.release()
    assert out.stdout.decode() == f"LogLockedError: {locked_message(path)}\n"
    out = await anyio.run_process([sys.executable, "-c", _CONTENDER, str(path)])
    assert out.stdout.decode() == "acquired\n"


async def test_same_log_twice_in_one_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.jsonl"
    async with chain.invoke(FileLogStorage(path)):
        with pytest.raises(
            duron.LogLockedError, match="^" + re.escape(locked_message(path)) + "$"
        ):
            async with chain.invoke(FileLogStorage(path)):
                pass


async def test_log_in_a_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "log.jsonl"
    with pytest.raises(
        duron.StorageError,
        match="^"
        + re.escape(
            f"log {path}: open failed: [Errno 2] No such file or directory: '{path}'"
        )
        + "$",
    ) as caught:
        async with chain.invoke(FileLogStorage(path)):
            pass
    # A missing directory does not come back by waiting: a refusal.
    assert type(caught.value) is duron.StorageError
    assert (caught.value.store, caught.value.operation) == (str(path), "open")
    assert isinstance(caught.value.__cause__, FileNotFoundError)


# -- durability ------------------------------------------------------------------------------


class CountingStorage(FileLogStorage):
    appends = 0

    async def append(self, entries: Sequence[bytes], /) -> None:
        self.appends += 1
        await super().append(entries)


@pytest.mark.parametrize(
    ("durability", "syncs_per_append"), [("fsync", 1), ("flush", 0)]
)
async def test_fsync_mode_syncs_every_batch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    durability: Durability,
    syncs_per_append: int,
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / f"{durability}.jsonl"
    storage = CountingStorage(path, durability=durability)
    assert repr(storage) == f"<FileLogStorage {path} durability={durability}>"
    async with chain.invoke(storage) as job:
        await job.start(4)
        assert await job.wait() == 60
    assert types(path) == ["job", "done", "done", "done", "done", "end"]
    assert storage.appends >= 2
    # One fsync per batch, plus one of the directory when the log is opened.
    dir_sync = 1 if durability == "fsync" else 0
    assert len(synced) == storage.appends * syncs_per_append + dir_sync
    calls.clear()
    assert await resume_chain(FileLogStorage(path, durability="fsync")) == 60
    assert calls == []


def test_unknown_durability_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("durability must be 'flush' or 'fsync', not 'bogus'"),
    ):
        FileLogStorage(tmp_path / "x.jsonl", durability="bogus")  # type: ignore[arg-type]


async def test_failed_write_is_cut_back_before_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "full-disk.jsonl"
    storage = FileLogStorage(path)
    await storage.acquire()
    try:
        await storage.append([b'{"n":1}'])
        real_write = os.write

        def half_then_fail(fd: int, data: bytes | memoryview) -> int:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_fail)
        # A full disk may be freed: the error says to try again, and a worker
        # would stop the job rather than fail it.
        with pytest.raises(
            duron.StoreUnavailableError,
            match="^"
            + re.escape(
                f"log {path} is unavailable right now: append failed: [Errno 28] "
                "No space left on device; try again once it is back"
            )
            + "$",
        ) as caught:
            await storage.append([b'{"n":2}', b'{"n":3}'])
        assert caught.value.__cause__ is not None
        monkeypatch.setattr(os, "write", real_write)
        assert path.read_bytes() == b'{"n":1}\n'
        await storage.append([b'{"n":4}'])
    finally:
        await storage.release()
    assert path.read_bytes() == b'{"n":1}\n{"n":4}\n'


class ShortWritesThenFull:
    """``os.write`` on a filling disk: the first call of a batch writes only
    ``first`` bytes, the next one fails with ENOSPC (what ``write`` does)."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.calls = 0
        self.real = os.write

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        self.calls += 1
        if self.calls == 1:
            return self.real(fd, bytes(data[: self.first]))
        raise OSError(errno.ENOSPC, "No space left on device")


async def read_all(path: Path) -> list[tuple[int, bytes]]:
    storage = FileLogStorage(path)
    await storage.acquire()
    try:
        return [item async for item in storage.read()]
    finally:
        await storage.release()


@pytest.mark.parametrize("durability", ["flush", "fsync"])
async def test_a_batch_that_fails_part_way_is_cut_back_to_the_last_committed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: Durability
) -> None:
    path = tmp_path / "full-disk.jsonl"
    storage = FileLogStorage(path, durability=durability)
    await storage.acquire()
    try:
        await storage.append([b'{"n":1}', b'{"n":2}'])
        committed = path.read_bytes()
        # The failed batch gets one whole line and half of the next onto the disk.
        full = ShortWritesThenFull(len(b'{"n":3}\n{"n'))
        monkeypatch.setattr(os, "write", full)
        with pytest.raises(duron.StorageError) as info:
            await storage.append([b'{"n":3}', b'{"n":4}'])
        assert str(info.value) == (
            f"log {path} is unavailable right now: append failed: [Errno 28] No "
            "space left on device; try again once it is back"
        )
        assert full.calls == 2
        monkeypatch.setattr(os, "write", full.real)
        assert path.read_bytes() == committed
        await storage.append([b'{"n":5}'])
    finally:
        await storage.release()
    assert path.read_bytes() == b'{"n":1}\n{"n":2}\n{"n":5}\n'
    assert await read_all(path) == [(0, b'{"n":1}'), (8, b'{"n":2}'), (16, b'{"n":5}')]


async def test_a_failed_batch_that_cannot_be_cut_back_gives_up_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "full-disk.jsonl"
    storage = FileLogStorage(path)
    await storage.acquire()
    try:
        await storage.append([b'{"n":1}'])
        full = ShortWritesThenFull(len(b'{"n":2}\n{"n'))
        monkeypatch.setattr(os, "write", full)

        def refuse(fd: int, length: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "ftruncate", refuse)
        with pytest.raises(duron.StorageError) as info:
            storage.append_nowait([b'{"n":2}', b'{"n":3}'])
        assert str(info.value) == (
            f"log {path} is unavailable right now: append failed: [Errno 28] No "
            "space left on device; try again once it is back"
        )
        monkeypatch.undo()
        # Not cut back: nothing more is written through this storage object...
        with pytest.raises(duron.StorageError) as info:
            await storage.append([b'{"n":4}'])
        assert str(info.value) == (
            f"log {path}: append failed: not open for writing (acquire() first)"
        )
    finally:
        await storage.release()
    # ...and whoever opens the log next cuts the torn line off, as after a crash
    # during the write (whole lines of the batch stay, as then).
    with caplog.at_level(logging.WARNING, logger="duron"):
        assert await read_all(path) == [(0, b'{"n":1}'), (8, b'{"n":2}')]
    assert caplog.messages == [
        f"log {path}: removed a torn last entry (3 bytes at offset 16) left by a crash"
    ]
    assert path.read_bytes() == b'{"n":1}\n{"n":2}\n'


# -- a log that is not this job's ----------------------------------------------------------


async def test_log_of_another_durable_function(tmp_path: Path) -> None:
    path = await finished_log(tmp_path, 2)
    message = (
        f"job {path}: the log was written by durable function chain, not "
        "other_flow; open the log with the function that wrote it"
    )
    async with other_flow.invoke(FileLogStorage(path)) as job:
        with pytest.raises(
            duron.JobMismatchError, match="^" + re.escape(message) + "$"
        ):
            await job.resume()
    async with other_flow.invoke(FileLogStorage(path)) as job:
        with pytest.raises(
            duron.JobMismatchError, match="^" + re.escape(message) + "$"
        ):
            await job.start(2)
    assert types(path) == ["job", "done", "done", "end"]


async def test_log_in_a_newer_format_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = await finished_log(tmp_path, 1)
    old = lines(path)
    job_entry = orjson.loads(old[0])
    job_entry["version"] = 99
    path.write_bytes(orjson.dumps(job_entry) + b"\n" + b"".join(old[1:]))
    message = (
        f"log {path} cannot be read at offset 0: it was written in log format "
        "version 99, newer than this Duron reads (up to 1). Upgrade duron to read "
        "it: pip install --upgrade duron"
    )
    async with chain.invoke(FileLogStorage(path)) as job:
        with pytest.raises(duron.CorruptLogError, match="^" + re.escape(message) + "$"):
            await job.resume()
    assert calls == []
