"""The replay core on its own: synchronous, no event loop, no storage.

Each test issues the operations durable code would ask for, feeds the entries a log
would hold, and checks the core's answer or its error, word for word.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from duron import CorruptLogError, NonDeterminismError
from duron._entries import (
    ErrorInfo,
    JobCancelled,
    JobFinished,
    JobStarted,
    OpCompleted,
    OpEmitted,
    OpStarted,
)
from duron._replay import Cancel, Deliver, Emit, Finish, Replayer

JOB = "logs/greet.jsonl"
T = 1_700_000_000.0
ADVICE = (
    ". The durable function no longer replays this log: restore the old code path "
    "(ctx.patched can carry both) or start a new job"
)
DAMAGED = (
    ". Duron does not skip damaged entries; restore the log from a backup or "
    "truncate it before this offset to re-run from there"
)


def nondeterminism(text: str) -> str:
    """A ``match=`` pattern for the whole NonDeterminismError message."""
    return "^" + re.escape(f"job {JOB}: {text}{ADVICE}") + "$"


def corrupt(offset: int, reason: str) -> str:
    """A ``match=`` pattern for the whole CorruptLogError message."""
    return (
        "^"
        + re.escape(f"log {JOB} is damaged at offset {offset}: {reason}{DAMAGED}")
        + "$"
    )


# -- matching -----------------------------------------------------------------------


def test_start_then_done_delivers_the_recorded_result() -> None:
    r = Replayer(JOB)
    op = r.issue("effect", "work", {"name": "Ada"})
    assert op.id == 0
    assert r.feed(OpStarted(0, T, "effect", "work", {"name": "Ada"}), 40) is None
    assert op.start_logged
    assert r.pending == {0: op}
    action = r.feed(OpCompleted(0, T + 1, "Hello, Ada!"), 95)
    assert action == Deliver(op, "Hello, Ada!", None)
    assert r.pending == {}
    assert r.end_of_log() == []


def test_done_that_names_its_call_delivers_without_a_start_entry() -> None:
    r = Replayer(JOB)
    op = r.issue("effect", "work", {"name": "Ada"})
    done = OpCompleted(0, T, "Hello", None, "effect", "work", {"name": "Ada"})
    assert r.feed(done, 40) == Deliver(op, "Hello", None)
    assert not op.start_logged


def test_recorded_error_is_delivered_as_recorded() -> None:
    r = Replayer(JOB)
    op = r.issue("effect", "charge", {"order": 42})
    err = ErrorInfo("builtins.ValueError", "card declined", ["card declined"])
    done = OpCompleted(0, T, None, err, "effect", "charge", {"order": 42})
    action = r.feed(done, 40)
    assert isinstance(action, Deliver)
    assert action.op is op
    assert action.error == err
    assert action.result is None


def test_operations_are_numbered_in_issue_order_and_matched_in_any_order() -> None:
    r = Replayer(JOB)
    a = r.issue("effect", "work", {"name": "a"})
    b = r.issue("effect", "work", {"name": "b"})
    c = r.issue("effect", "lucky", {})
    assert (a.id, b.id, c.id) == (0, 1, 2)
    assert r.next_id == 3
    # Completions come back in the order they finished live, not the issue order.
    got = [
        r.feed(OpCompleted(2, T, 7, None, "effect", "lucky", {}), 10),
        r.feed(OpCompleted(0, T, "A", None, "effect", "work", {"name": "a"}), 20),
        r.feed(OpCompleted(1, T, "B", None, "effect", "work", {"name": "b"}), 30),
    ]
    assert got == [Deliver(c, 7, None), Deliver(a, "A", None), Deliver(b, "B", None)]


def test_inputs_are_compared_whatever_their_key_order() -> None:
    r = Replayer(JOB)
    op = r.issue("effect", "send", {"to": "ada", "body": "hi"})
    done = OpCompleted(0, T, True, None, "effect", "send", {"body": "hi", "to": "ada"})
    assert r.feed(done, 0) == Deliver(op, True, None)


# -- divergence -----------------------------------------------------------------------


def test_other_effect_name_at_a_position_is_named_with_both_sides() -> None:
    r = Replayer(JOB)
    r.issue("effect", "send_email", {"order": 42})
    start = OpStarted(0, T, "effect", "charge_card", {"order": 42})
    with pytest.raises(NonDeterminismError) as info:
        r.feed(start, 2048)
    assert info.match(
        nondeterminism(
            "at position 0 (log offset 2048) the log recorded charge_card(order=42) "
            "but the code now asks for send_email(order=42)"
        )
    )
    err = info.value
    assert (err.job, err.position, err.offset) == (JOB, 0, 2048)
    assert err.recorded == "charge_card(order=42)"
    assert err.requested == "send_email(order=42)"


def test_other_inputs_at_a_position_are_named_with_both_sides() -> None:
    r = Replayer(JOB)
    r.issue("effect", "work", {"name": "Ada"})
    r.issue("effect", "work", {"name": "Bob"})
    done = OpCompleted(1, T, "x", None, "effect", "work", {"name": "Alan"})
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 1 (log offset 311) the log recorded work(name='Alan') "
            "but the code now asks for work(name='Bob')"
        ),
    ):
        r.feed(done, 311)


def test_a_missing_argument_is_a_divergence() -> None:
    r = Replayer(JOB)
    r.issue("effect", "work", {})
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 0) the log recorded work(name='Ada') "
            "but the code now asks for work()"
        ),
    ):
        r.feed(OpStarted(0, T, "effect", "work", {"name": "Ada"}), 0)


def test_other_kind_with_the_same_name_is_a_divergence() -> None:
    r = Replayer(JOB)
    r.issue("future", "approval", None)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 77) the log recorded approval() "
            "but the code now asks for future approval"
        ),
    ):
        r.feed(OpStarted(0, T, "effect", "approval", None), 77)


def test_entry_for_a_position_the_code_never_reached() -> None:
    r = Replayer(JOB)
    r.issue("effect", "work", {"name": "Ada"})
    done = OpCompleted(1, T, "x", None, "effect", "lucky", {})
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 1 (log offset 120) the log recorded lucky() but the code "
            "now asks for nothing; the code did not reach that operation"
        ),
    ) as info:
        r.feed(done, 120)
    assert info.value.requested is None


def test_emission_for_a_position_the_code_never_reached() -> None:
    r = Replayer(JOB)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 3 (log offset 9) the log recorded operation #3 but the code "
            "now asks for nothing; the code did not reach that operation"
        ),
    ):
        r.feed(OpEmitted(3, T, 1), 9)


def test_second_completion_of_a_position() -> None:
    r = Replayer(JOB)
    r.issue("effect", "work", {"name": "Ada"})
    r.feed(OpCompleted(0, T, "x", None, "effect", "work", {"name": "Ada"}), 0)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 60) the log recorded work(name='Ada') but the "
            "code now asks for nothing more for it; the code already finished with "
            "that position"
        ),
    ):
        r.feed(OpCompleted(0, T, "y", None, "effect", "work", {"name": "Ada"}), 60)


def test_completion_of_an_operation_the_code_dropped() -> None:
    r = Replayer(JOB)
    r.issue("effect", "work", {"name": "Ada"})
    r.forget(0)
    assert r.pending == {}
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 5) the log recorded operation #0 but the code "
            "now asks for nothing more for it; the code already finished with that "
            "position"
        ),
    ):
        r.feed(OpCompleted(0, T, "x"), 5)


def test_unnamed_completion_without_its_start_entry_is_damage() -> None:
    # A done entry without kind/name relies on an earlier start entry: without one,
    # nothing says which call the result belongs to.
    r = Replayer(JOB)
    op = r.issue("effect", "work", {"name": "Ada"})
    with pytest.raises(
        CorruptLogError,
        match=corrupt(
            400,
            "operation #0 completes here but the log holds no start entry naming it",
        ),
    ) as info:
        r.feed(OpCompleted(0, T, "x"), 400)
    assert info.value.offset == 400
    assert r.pending == {0: op}


def test_second_job_entry_is_damage() -> None:
    r = Replayer(JOB)
    r.issue("effect", "work", {"name": "Ada"})
    with pytest.raises(
        CorruptLogError,
        match=corrupt(512, "a second job entry (a log holds exactly one job)"),
    ) as info:
        r.feed(JobStarted("greet", {"name": "Ada"}, "seed", T), 512)
    assert (info.value.job, info.value.offset) == (JOB, 512)


# -- end of log, emissions, the job's end --------------------------------------------


def test_end_of_log_returns_exactly_the_unfinished_operations() -> None:
    r = Replayer(JOB)
    ops = [r.issue("effect", "work", {"i": i}) for i in range(5)]
    r.feed(OpStarted(1, T, "effect", "work", {"i": 1}), 0)
    r.feed(OpCompleted(3, T, 3, None, "effect", "work", {"i": 3}), 50)
    r.feed(OpStarted(4, T, "effect", "work", {"i": 4}), 100)
    r.feed(OpCompleted(4, T, 4), 150)
    assert r.replaying
    live = r.end_of_log()
    assert not r.replaying
    assert live == [ops[0], ops[1], ops[2]]
    assert [op.start_logged for op in live] == [False, True, False]


def test_end_of_log_with_nothing_issued() -> None:
    r = Replayer(JOB)
    assert r.end_of_log() == []
    assert not r.replaying


def test_new_job_is_not_replaying() -> None:
    r = Replayer(JOB, replaying=False)
    assert not r.replaying
    assert r.issue("effect", "work", {}).id == 0


def test_emissions_are_delivered_and_the_operation_stays_pending() -> None:
    r = Replayer(JOB)
    op = r.issue("effect", "count", {"start": 0})
    r.feed(OpStarted(0, T, "effect", "count", {"start": 0}), 0)
    assert r.feed(OpEmitted(0, T + 1, 1), 10) == Emit(op, 1)
    assert r.feed(OpEmitted(0, T + 2, {"n": 2}), 20) == Emit(op, {"n": 2})
    assert r.pending == {0: op}
    assert r.feed(OpCompleted(0, T + 3, 3), 30) == Deliver(op, 3, None)
    assert r.pending == {}


def test_job_end_is_returned_and_nothing_may_follow_it() -> None:
    r = Replayer(JOB)
    err = ErrorInfo("builtins.KeyError", "'x'", ["x"])
    assert r.feed(JobFinished(T, None, err), 700) == Finish(None, err)
    assert r.finished
    with pytest.raises(
        CorruptLogError,
        match=corrupt(760, "an entry of type 'emit' after the job's end entry"),
    ):
        r.feed(OpEmitted(0, T, 1), 760)


def test_host_cancel_is_returned_and_the_job_goes_on() -> None:
    r = Replayer(JOB)
    op = r.issue("effect", "cleanup", {})
    assert r.feed(JobCancelled(T), 10) == Cancel()
    assert not r.finished
    # The code may still wait for work after the cancel (cleanup on the way out).
    r.feed(OpCompleted(0, T, None, None, "effect", "cleanup", {}), 40)
    assert r.feed(JobFinished(T, None), 80) == Finish(None, None)
    assert op.id == 0


def test_job_end_with_a_result() -> None:
    r = Replayer(JOB)
    op = r.issue("effect", "work", {})
    r.feed(OpCompleted(0, T, 1, None, "effect", "work", {}), 0)
    assert r.feed(JobFinished(T, {"total": 1}), 40) == Finish({"total": 1}, None)
    assert op.describe() == "work()"


# -- the core imports nothing that does I/O ------------------------------------------

_IMPORT_PROBE = """
import json, sys, types
# The package's __init__ imports the whole runtime; give the interpreter an empty
# ``duron`` package so that only the core and what it imports get loaded.
pkg = types.ModuleType("duron")
pkg.__path__ = [sys.argv[1]]
sys.modules["duron"] = pkg
# ``time`` is loaded at interpreter start-up; drop it to see whether the core asks
# for it again.
del sys.modules["time"]
before = set(sys.modules)
import duron._replay
print(json.dumps(sorted(set(sys.modules) - before)))
"""

_FORBIDDEN = (
    "anyio",
    "asyncio",
    "_asyncio",
    "orjson",
    "pydantic",
    "sqlite3",
    "_sqlite3",
    "trio",
    "time",
    "datetime",
    "selectors",
    "select",
    "socket",
    "_socket",
    "ssl",
    "threading",
    "subprocess",
    "concurrent",
)


def test_replay_core_imports_nothing_that_does_io() -> None:
    package_dir = Path(__file__).resolve().parent.parent / "duron"
    out = subprocess.run(
        [sys.executable, "-I", "-c", _IMPORT_PROBE, str(package_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(out.stdout)
    assert "duron._replay" in loaded
    offending = sorted(m for m in loaded if m.split(".")[0] in _FORBIDDEN)
    assert offending == []
    duron_modules = sorted(m for m in loaded if m.startswith("duron"))
    assert duron_modules == [
        "duron._entries",
        "duron._errors",
        "duron._json",
        "duron._redact",  # errors hide passwords (re and urllib.parse only)
        "duron._replay",
    ]
