"""``duron.testing``: the verify check as functions for a project's own test suite.

tests/golden/checkout holds logs recorded by ``verify_corpus.original`` and
``verify_corpus.patched`` (one finished, one cut after position 1 as a crash leaves
it, one that took the patched branch): the layout the docs recommend.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import anyio
import pytest
import verify_corpus as corpus

import duron
import duron.testing
from duron.contrib.storage import FileLogStorage, MemoryLogStorage
from duron.testing import (
    IncompatibleLogError,
    UncheckableLogError,
    VerificationError,
    golden_logs,
    verify,
    verify_all,
    verify_all_async,
    verify_async,
)

GOLDEN = Path(__file__).parent / "golden" / "checkout"
FINISHED = GOLDEN / "order-1-finished.jsonl"
UNFINISHED = GOLDEN / "order-2-unfinished.jsonl"
EMAILED = GOLDEN / "order-3-emailed.jsonl"


@pytest.fixture(autouse=True)
def _no_effect_runs() -> Any:
    corpus.ran.clear()
    yield
    assert corpus.ran == [], "verification ran an effect"


# The pattern the docs show: one test per golden log.
@pytest.mark.parametrize("log", golden_logs(GOLDEN), ids=lambda p: p.name)
def test_golden_logs_replay_under_the_patched_code(log: Path) -> None:
    verify(corpus.patched, log)


def test_verify_returns_the_report() -> None:
    report = verify(corpus.original, FINISHED)
    assert (report.status, report.finished, report.operations) == ("ok", True, 4)
    report = verify(corpus.original, str(UNFINISHED))
    assert (report.status, report.finished) == ("ok", False)


def test_incompatible_raises_with_the_report() -> None:
    with pytest.raises(IncompatibleLogError) as info:
        verify(corpus.changed_argument, FINISHED)
    err = info.value
    assert str(err) == (
        f"{FINISHED}: durable function checkout no longer replays this log\n"
        "  position 1: log recorded charge_card(order_id=1, amount=10.0)\n"
        "  code now calls charge_card(order_id=1, amount=12.5)"
    )
    assert err.report is err.reports[0]
    assert (err.report.status, err.report.reason, err.report.position) == (
        "incompatible",
        "diverged",
        1,
    )
    assert isinstance(err, VerificationError)
    assert isinstance(err, duron.DuronError)


def test_schema_drift_raises_with_pydantic_explanation() -> None:
    with pytest.raises(
        IncompatibleLogError,
        match=re.escape(
            f"{FINISHED}: durable function checkout no longer replays this log\n"
            "  position 0: recorded result of fetch_user no longer validates as "
            "UserWithEmail: field 'email' required"
        ),
    ):
        verify(corpus.required_field, FINISHED)


def test_uncheckable_raises_its_own_error(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(
        FINISHED.read_text().replace('"type":"done"', '"type":"gone"', 1)
    )
    offset = len(FINISHED.read_text().splitlines(keepends=True)[0])
    with pytest.raises(UncheckableLogError) as info:
        verify(corpus.original, damaged)
    assert str(info.value) == (
        f"{damaged}: durable function checkout cannot be checked against this log\n"
        f"  damaged at offset {offset}: unknown entry type 'gone'"
    )
    with pytest.raises(
        UncheckableLogError,
        match=re.escape(
            f"{FINISHED}: durable function refund cannot be checked against this log\n"
            "  a log of durable function checkout, not refund"
        ),
    ):
        verify(corpus.refund, FINISHED)


def test_verify_takes_any_log_storage() -> None:
    storage = MemoryLogStorage(FINISHED.read_bytes().splitlines(), label="order-1")
    report = verify(corpus.patched, storage)
    assert (report.log, report.status) == ("order-1", "ok")
    with pytest.raises(
        duron.UsageError,
        match="a log to verify is a file path or a LogStorage, not int",
    ):
        verify(corpus.original, 42)  # type: ignore[arg-type]


def test_verify_all_names_every_failing_log(tmp_path: Path) -> None:
    for p in golden_logs(GOLDEN):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "zz-empty.jsonl").write_text("")
    with pytest.raises(IncompatibleLogError) as info:
        verify_all(corpus.original, tmp_path)
    assert [r.log for r in info.value.reports] == [
        str(tmp_path / "order-3-emailed.jsonl"),
        str(tmp_path / "zz-empty.jsonl"),
    ]
    assert str(info.value) == (
        f"{tmp_path / 'order-3-emailed.jsonl'}: durable function checkout no longer "
        "replays this log\n"
        "  position 3: log recorded patch email-receipt\n"
        "  code now calls send_receipt(order_id=3)\n"
        f"{tmp_path / 'zz-empty.jsonl'}: durable function checkout cannot be checked "
        "against this log\n"
        "  empty log: it holds no job entry"
    )
    reports = verify_all(corpus.patched, [FINISHED, UNFINISHED, EMAILED])
    assert [r.status for r in reports] == ["ok", "ok", "ok"]
    (tmp_path / "order-3-emailed.jsonl").unlink()
    with pytest.raises(UncheckableLogError):
        verify_all(corpus.original, tmp_path)


def test_verify_all_refuses_to_check_nothing(tmp_path: Path) -> None:
    with pytest.raises(duron.UsageError, match="verify_all was given no log to check"):
        verify_all(corpus.original, [])
    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            f"golden log folder {tmp_path} holds no file matching '*.jsonl'"
        ),
    ):
        verify_all(corpus.original, tmp_path)


def test_golden_logs_are_sorted_recursive_and_never_silently_empty(
    tmp_path: Path,
) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.jsonl", "a.jsonl", "b/1.jsonl", "notes.txt"):
        (tmp_path / name).write_text("")
    assert golden_logs(tmp_path) == [
        tmp_path / "a.jsonl",
        tmp_path / "b" / "1.jsonl",
        tmp_path / "b" / "2.jsonl",
    ]
    assert golden_logs(tmp_path, "*.txt") == [tmp_path / "notes.txt"]
    with pytest.raises(
        duron.UsageError,
        match=re.escape(f"golden log folder {tmp_path / 'nope'} does not exist"),
    ):
        golden_logs(tmp_path / "nope")


@pytest.mark.anyio
async def test_async_variants(anyio_backend: str) -> None:
    report = await verify_async(corpus.patched, FileLogStorage(EMAILED))
    assert report.status == "ok"
    reports = await verify_all_async(corpus.patched, GOLDEN)
    assert len(reports) == 3
    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            f"duron.testing.verify() runs its own event loop, but {anyio_backend} is "
            "already running here: use `await duron.testing.verify_async(...)` in "
            "async code"
        ),
    ):
        verify(corpus.patched, EMAILED)


def test_verify_is_the_same_check_as_a_resume(tmp_path: Path) -> None:
    """What verify calls incompatible, a real resume refuses the same way."""
    log = tmp_path / "job.jsonl"
    log.write_bytes(FINISHED.read_bytes())
    report = verify_all(corpus.original, [log])[0]
    assert report.ok

    async def resume() -> Any:
        async with corpus.changed_argument.invoke(FileLogStorage(log)) as job:
            await job.resume()
            return await job.wait()

    with pytest.raises(duron.NonDeterminismError) as info:
        anyio.run(resume)
    with pytest.raises(IncompatibleLogError) as verified:
        verify(corpus.changed_argument, log)
    err = info.value
    assert (err.position, err.recorded, err.requested) == (
        verified.value.report.position,
        verified.value.report.recorded,
        verified.value.report.requested,
    )


def test_public_names() -> None:
    module = duron.testing
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, (type, types.FunctionType)):
            assert obj.__module__.startswith("duron."), name
            assert obj.__doc__, f"duron.testing.{name} has no docstring"
    own = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and isinstance(v, (type, types.FunctionType))
        and v.__module__ == module.__name__
    }
    assert own <= set(module.__all__)
