"""The engine on its own: synchronous, no event loop, no storage, no clock.

Each test issues the operations durable code would ask for, feeds the entries a log
would hold, and checks the engine's answer or its error, word for word; or hands it
live outcomes and checks the entries it composes for one write.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from duron import CorruptLogError, NonDeterminismError, OperationCall
from duron._engine import Engine
from duron._entries import (
    Entry,
    ErrorInfo,
    JobCancelled,
    JobFinished,
    JobStarted,
    OpAttempted,
    OpCompleted,
    OpEmitted,
    OpStarted,
)
from duron._operations import (
    LOG_ENDED,
    NEED_ENTRIES,
    Attempted,
    Cancelled,
    Done,
    Emitted,
    Ended,
    FireTimer,
    Op,
)

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


def replaying() -> Engine:
    return Engine(JOB, replaying=True)


def issue(
    e: Engine, kind: str, name: str, inputs: dict[str, Any] | None, **kw: Any
) -> Op:
    return e.issue(Op(kind, name, inputs, **kw))


def feed(e: Engine, entry: Entry, offset: int) -> Any:
    """Hand the engine one entry; what it answers (None: nothing to deliver)."""
    e.receive(offset, entry)
    event = e.next_event(None)
    return None if event is NEED_ENTRIES else event


def seen(event: Any) -> tuple[Any, ...]:
    """An engine event as comparable data."""
    match event:
        case Done():
            return ("done", event.op.id, event.result, event.error, event.t)
        case Emitted():
            return ("emit", event.op.id, event.value, event.t)
        case Cancelled():
            return ("cancel", event.t)
        case Ended():
            return ("end", event.result, event.error, event.t)
        case FireTimer():
            return ("timer", event.deadline)
    return (event,)


# -- matching -----------------------------------------------------------------------


def test_start_then_done_delivers_the_recorded_result() -> None:
    e = replaying()
    op = issue(e, "effect", "work", {"name": "Ada"})
    assert op.id == 0
    assert feed(e, OpStarted(0, T, "effect", "work", {"name": "Ada"}), 40) is None
    assert op.start_logged
    assert e.pending == {0: op}
    event = feed(e, OpCompleted(0, T + 1, "Hello, Ada!"), 95)
    assert seen(event) == ("done", 0, "Hello, Ada!", None, T + 1)
    assert event.op is op
    assert e.pending == {}
    e.receive_end()
    assert e.next_event(None) is LOG_ENDED
    assert e.go_live() == []


def test_done_that_names_its_call_delivers_without_a_start_entry() -> None:
    e = replaying()
    issue(e, "effect", "work", {"name": "Ada"})
    done = OpCompleted(0, T, "Hello", None, "effect", "work", {"name": "Ada"})
    event = feed(e, done, 40)
    assert seen(event) == ("done", 0, "Hello", None, T)
    assert not event.op.start_logged


def test_recorded_error_is_delivered_as_recorded() -> None:
    e = replaying()
    issue(e, "effect", "charge", {"order": 42})
    err = ErrorInfo("builtins.ValueError", "card declined", ["card declined"])
    done = OpCompleted(0, T, None, err, "effect", "charge", {"order": 42})
    assert seen(feed(e, done, 40)) == ("done", 0, None, err, T)


def test_operations_are_numbered_in_issue_order_and_matched_in_any_order() -> None:
    e = replaying()
    a = issue(e, "effect", "work", {"name": "a"})
    b = issue(e, "effect", "work", {"name": "b"})
    c = issue(e, "effect", "lucky", {})
    assert (a.id, b.id, c.id) == (0, 1, 2)
    assert e.next_id == 3
    # Completions come back in the order they finished live, not the issue order.
    e.receive_many(
        [
            (10, OpCompleted(2, T, 7, None, "effect", "lucky", {})),
            (20, OpCompleted(0, T, "A", None, "effect", "work", {"name": "a"})),
            (30, OpCompleted(1, T, "B", None, "effect", "work", {"name": "b"})),
        ]
    )
    got = [seen(e.next_event(None)) for _ in range(3)]
    assert got == [
        ("done", 2, 7, None, T),
        ("done", 0, "A", None, T),
        ("done", 1, "B", None, T),
    ]
    assert e.next_event(None) is NEED_ENTRIES


def test_inputs_are_compared_whatever_their_key_order() -> None:
    e = replaying()
    issue(e, "effect", "send", {"to": "ada", "body": "hi"})
    done = OpCompleted(0, T, True, None, "effect", "send", {"body": "hi", "to": "ada"})
    assert seen(feed(e, done, 0)) == ("done", 0, True, None, T)


def test_inputs_that_differ_as_stored_are_asked_about() -> None:
    asked: list[tuple[int, Any]] = []

    def same(op: Op, recorded: dict[str, Any] | None) -> bool:
        asked.append((op.id, recorded))
        return recorded == {"name": "ada"}  # today's types read it as the same call

    e = Engine(JOB, replaying=True, same_inputs=same)
    issue(e, "effect", "greet", {"name": "ada", "title": None})
    done = OpCompleted(0, T, "hi", None, "effect", "greet", {"name": "ada"})
    assert seen(feed(e, done, 0)) == ("done", 0, "hi", None, T)
    assert asked == [(0, {"name": "ada"})]


# -- divergence -----------------------------------------------------------------------


def test_other_effect_name_at_a_position_is_named_with_both_sides() -> None:
    e = replaying()
    issue(e, "effect", "send_email", {"order": 42})
    start = OpStarted(0, T, "effect", "charge_card", {"order": 42})
    with pytest.raises(NonDeterminismError) as info:
        feed(e, start, 2048)
    assert info.match(
        nondeterminism(
            "at position 0 (log offset 2048) the log recorded charge_card(order=42) "
            "but the code now asks for send_email(order=42)"
        )
    )
    err = info.value
    assert (err.job, err.position, err.offset, err.kind) == (
        JOB,
        0,
        2048,
        "other-operation",
    )
    assert err.recorded == "charge_card(order=42)"
    assert err.requested == "send_email(order=42)"
    assert err.recorded_call == OperationCall("effect", "charge_card", {"order": 42})
    assert err.requested_calls == (
        OperationCall("effect", "send_email", {"order": 42}),
    )


def test_other_inputs_at_a_position_are_named_with_both_sides() -> None:
    e = replaying()
    issue(e, "effect", "work", {"name": "Ada"})
    issue(e, "effect", "work", {"name": "Bob"})
    done = OpCompleted(1, T, "x", None, "effect", "work", {"name": "Alan"})
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 1 (log offset 311) the log recorded work(name='Alan') "
            "but the code now asks for work(name='Bob')"
        ),
    ):
        feed(e, done, 311)


def test_a_missing_argument_is_a_divergence() -> None:
    e = replaying()
    issue(e, "effect", "work", {})
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 0) the log recorded work(name='Ada') "
            "but the code now asks for work()"
        ),
    ):
        feed(e, OpStarted(0, T, "effect", "work", {"name": "Ada"}), 0)


def test_other_kind_with_the_same_name_is_a_divergence() -> None:
    e = replaying()
    issue(e, "future", "approval", None)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 77) the log recorded approval() "
            "but the code now asks for future approval"
        ),
    ) as info:
        feed(e, OpStarted(0, T, "effect", "approval", None), 77)
    assert info.value.requested_calls == (OperationCall("future", "approval"),)


def test_entry_for_a_position_the_code_never_reached() -> None:
    e = replaying()
    issue(e, "effect", "work", {"name": "Ada"})
    done = OpCompleted(1, T, "x", None, "effect", "lucky", {})
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 1 (log offset 120) the log recorded lucky() but the code "
            "now asks for nothing; the code did not reach that operation"
        ),
    ) as info:
        feed(e, done, 120)
    assert info.value.requested is None
    assert info.value.kind == "not-reached"
    assert info.value.requested_calls == ()
    assert info.value.recorded_call == OperationCall("effect", "lucky", {})


def test_emission_for_a_position_the_code_never_reached() -> None:
    e = replaying()
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 3 (log offset 9) the log recorded operation #3 but the code "
            "now asks for nothing; the code did not reach that operation"
        ),
    ) as info:
        feed(e, OpEmitted(3, T, 1), 9)
    assert info.value.recorded_call is None


def test_emission_for_an_operation_that_does_not_stream_is_a_divergence() -> None:
    # A log or code mismatch (the effect no longer streams), not a bug in Duron.
    e = replaying()
    issue(e, "effect", "count", {"start": 0})
    feed(e, OpStarted(0, T, "effect", "count", {"start": 0}), 0)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 50) the log recorded a value produced by "
            "count(start=0) but the code now asks for count(start=0); the log holds "
            "values streamed by this operation, which no longer streams"
        ),
    ) as info:
        feed(e, OpEmitted(0, T, 1), 50)
    assert info.value.kind == "unexpected-value"
    assert info.value.requested_calls == (
        OperationCall("effect", "count", {"start": 0}),
    )


def test_second_completion_of_a_position() -> None:
    e = replaying()
    issue(e, "effect", "work", {"name": "Ada"})
    feed(e, OpCompleted(0, T, "x", None, "effect", "work", {"name": "Ada"}), 0)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 60) the log recorded work(name='Ada') but the "
            "code now asks for nothing more for it; the code already finished with "
            "that position"
        ),
    ) as info:
        feed(e, OpCompleted(0, T, "y", None, "effect", "work", {"name": "Ada"}), 60)
    assert info.value.kind == "position-finished"
    assert info.value.recorded_call == OperationCall("effect", "work", {"name": "Ada"})


def test_completion_of_an_operation_the_code_dropped_live() -> None:
    e = Engine(JOB, replaying=False)
    op = issue(e, "effect", "work", {"name": "Ada"})
    assert e.abandon(op)
    assert op.abandoned
    assert e.pending == {}


def test_an_operation_dropped_while_replaying_stays_pending() -> None:
    # A later entry may still name it: the engine keeps it until the log ends.
    e = replaying()
    op = issue(e, "effect", "work", {"name": "Ada"})
    assert not e.abandon(op)
    assert e.pending == {0: op}
    assert not op.abandoned


def test_unnamed_completion_without_its_start_entry_is_damage() -> None:
    # A done entry without kind/name relies on an earlier start entry: without one,
    # nothing says which call the result belongs to.
    e = replaying()
    op = issue(e, "effect", "work", {"name": "Ada"})
    with pytest.raises(
        CorruptLogError,
        match=corrupt(
            400,
            "operation #0 completes here but the log holds no start entry naming it",
        ),
    ) as info:
        feed(e, OpCompleted(0, T, "x"), 400)
    assert info.value.offset == 400
    assert e.pending == {0: op}


def test_second_job_entry_is_damage() -> None:
    e = replaying()
    issue(e, "effect", "work", {"name": "Ada"})
    with pytest.raises(
        CorruptLogError,
        match=corrupt(512, "a second job entry (a log holds exactly one job)"),
    ) as info:
        feed(e, JobStarted("greet", {"name": "Ada"}, "seed", T), 512)
    assert (info.value.job, info.value.offset) == (JOB, 512)


def test_an_earlier_divergence_further_in_the_log_is_the_one_reported() -> None:
    # Position 0 was a patch the code no longer has; the log's next write put the
    # start of position 1 first. The entry naming position 0 says more.
    e = replaying()
    issue(e, "effect", "work", {"n": 1})  # today's code: work at 0, nothing at 1
    with pytest.raises(NonDeterminismError) as info:
        feed(e, OpStarted(1, T, "effect", "work", {"n": 1}), 10)
    assert info.value.kind == "not-reached"
    assert e.earlier_divergence(info.value.position) is NEED_ENTRIES
    e.receive(60, OpCompleted(0, T, True, None, "patch", "fix-1", None))
    earlier = e.earlier_divergence(info.value.position)
    assert isinstance(earlier, NonDeterminismError)
    assert str(earlier) == (
        f"job {JOB}: at position 0 (log offset 60) the log recorded patch fix-1 "
        f"but the code now asks for work(n=1){ADVICE}"
    )
    assert earlier.recorded_call == OperationCall("patch", "fix-1")


def test_no_earlier_divergence_when_the_log_ends_first() -> None:
    e = replaying()
    issue(e, "effect", "work", {"n": 1})
    e.receive_end()
    assert e.earlier_divergence(1) is None


# -- timers against entries ---------------------------------------------------------


def test_a_timer_due_before_the_next_entry_fires_first() -> None:
    e = replaying()
    issue(e, "effect", "work", {})
    e.receive(0, OpCompleted(0, T + 5, 1, None, "effect", "work", {}))
    assert seen(e.next_event(T + 2)) == ("timer", T + 2)
    assert seen(e.next_event(T + 5)) == ("timer", T + 5)  # due at the entry: first
    assert seen(e.next_event(T + 5.1)) == ("done", 0, 1, None, T + 5)
    assert e.next_event(T + 5.1) is NEED_ENTRIES


def test_no_timer_means_the_entry_comes_next() -> None:
    e = replaying()
    e.receive(0, JobCancelled(T))
    assert seen(e.next_event(None)) == ("cancel", T)


# -- patched ------------------------------------------------------------------------


def test_patch_verdicts_while_replaying() -> None:
    e = replaying()
    e.receive(0, OpCompleted(0, T, True, None, "patch", "fix-1", None))
    assert e.patch_verdict("fix-1") is True
    assert e.patch_verdict("fix-2") is False  # the marker is another change's
    issue(e, "patch", "fix-1", None)
    feed(e, OpCompleted(0, T, True, None, "patch", "fix-1", None), 0)
    # Nothing read yet for position 1: the engine needs more of the log.
    assert e.patch_verdict("fix-3") is None
    e.receive(40, OpStarted(1, T, "effect", "work", {}))
    assert e.patch_verdict("fix-3") is False  # the old code did something else
    e2 = replaying()
    e2.receive(0, JobFinished(T, 1))
    assert e2.patch_verdict("fix-1") is False  # the job ended before it
    e3 = replaying()
    e3.receive_end()
    assert e3.patch_verdict("fix-1") is True  # the log ends first: the job goes on live


def test_patches_are_taken_live() -> None:
    assert Engine(JOB, replaying=False).patch_verdict("anything") is True


# -- the replay shortcut: the same answer as the general path -----------------------


def _log_of_two() -> list[tuple[int, Entry]]:
    return [
        (0, OpStarted(0, T, "effect", "work", {"n": 1})),
        (40, OpCompleted(0, T + 1, 2)),
        (80, OpCompleted(1, T + 2, 3, None, "effect", "work", {"n": 2})),
    ]


def test_recorded_at_once_gives_what_the_general_path_delivers() -> None:
    general = replaying()
    general.receive_many(_log_of_two())
    delivered = []
    for n in (1, 2):
        issue(general, "effect", "work", {"n": n})
        delivered.append(seen(general.next_event(None))[2:])
    shortcut = replaying()
    shortcut.receive_many(_log_of_two())
    taken = []
    for n in (1, 2):
        done = shortcut.recorded_at_once("effect", "work", {"n": n}, None)
        assert done is not None
        shortcut.take_at_once(done)
        taken.append((done.result, done.error, done.t))
    assert taken == delivered == [(2, None, T + 1), (3, None, T + 2)]
    assert shortcut.next_id == general.next_id == 2
    assert shortcut.pending == general.pending == {}
    assert shortcut.next_event(None) is general.next_event(None) is NEED_ENTRIES


@pytest.mark.parametrize(
    ("call", "deadline", "why"),
    [
        ((("effect", "work", {"n": 9})), None, "other inputs"),
        ((("effect", "other", {"n": 1})), None, "another effect"),
        ((("future", "work", {"n": 1})), None, "another kind"),
        ((("effect", "work", {"n": 1})), T + 1, "a timer due at the outcome"),
        ((("effect", "work", {"n": 1})), T + 0.5, "a timer due before it"),
    ],
)
def test_recorded_at_once_refuses_what_the_general_path_must_judge(
    call: tuple[str, str, dict[str, Any]], deadline: float | None, why: str
) -> None:
    e = replaying()
    e.receive_many(_log_of_two())
    assert e.recorded_at_once(*call, deadline) is None, why
    assert e.next_id == 0
    assert len(list(e.pending)) == 0


def test_recorded_at_once_needs_the_next_entries_to_be_the_call() -> None:
    e = replaying()
    assert e.recorded_at_once("effect", "work", {}, None) is None  # nothing read
    e.receive(0, OpStarted(0, T, "effect", "work", {}))
    assert e.recorded_at_once("effect", "work", {}, None) is None  # no done yet
    e.receive(10, OpStarted(1, T, "effect", "work", {}))
    assert e.recorded_at_once("effect", "work", {}, None) is None  # not its done
    e2 = replaying()
    e2.receive(
        0, OpCompleted(0, T, 1)
    )  # unnamed, no start: the general path reports it
    assert e2.recorded_at_once("effect", "work", {}, None) is None
    e3 = Engine(JOB, replaying=False)
    assert e3.recorded_at_once("effect", "work", {}, None) is None


# -- end of log, emissions, the job's end --------------------------------------------


def test_end_of_log_returns_exactly_the_unfinished_operations() -> None:
    e = replaying()
    ops = [issue(e, "effect", "work", {"i": i}) for i in range(5)]
    e.receive_many(
        [
            (0, OpStarted(1, T, "effect", "work", {"i": 1})),
            (50, OpCompleted(3, T, 3, None, "effect", "work", {"i": 3})),
            (100, OpStarted(4, T, "effect", "work", {"i": 4})),
            (150, OpCompleted(4, T, 4)),
        ]
    )
    e.receive_end()
    events = []
    while (event := e.next_event(None)) is not LOG_ENDED:
        events.append(seen(event))
    assert events == [("done", 3, 3, None, T), ("done", 4, 4, None, T)]
    assert e.replaying
    live = e.go_live()
    assert not e.replaying
    assert live == [ops[0], ops[1], ops[2]]
    assert [op.start_logged for op in live] == [False, True, False]
    # What has no start entry yet gets one at the next write.
    assert e.flush_starts(T + 9) == [
        OpStarted(0, T + 9, "effect", "work", {"i": 0}),
        OpStarted(2, T + 9, "effect", "work", {"i": 2}),
    ]


def test_end_of_log_with_nothing_issued() -> None:
    e = replaying()
    assert e.go_live() == []
    assert not e.replaying


def test_new_job_is_not_replaying() -> None:
    e = Engine(JOB, replaying=False)
    assert not e.replaying
    assert issue(e, "effect", "work", {}).id == 0
    assert e.next_event(None) is LOG_ENDED


def test_emissions_are_delivered_and_the_operation_stays_pending() -> None:
    e = replaying()
    op = issue(e, "effect", "count", {"start": 0}, streaming=True)
    feed(e, OpStarted(0, T, "effect", "count", {"start": 0}), 0)
    assert seen(feed(e, OpEmitted(0, T + 1, 1), 10)) == ("emit", 0, 1, T + 1)
    assert seen(feed(e, OpEmitted(0, T + 2, {"n": 2}), 20)) == (
        "emit",
        0,
        {"n": 2},
        T + 2,
    )
    assert e.pending == {0: op}
    assert seen(feed(e, OpCompleted(0, T + 3, 3), 30)) == ("done", 0, 3, None, T + 3)
    assert e.pending == {}


def test_job_end_is_returned_and_nothing_may_follow_it() -> None:
    e = replaying()
    err = ErrorInfo("builtins.KeyError", "'x'", ["x"])
    assert seen(feed(e, JobFinished(T, None, err), 700)) == ("end", None, err, T)
    assert e.finished
    with pytest.raises(
        CorruptLogError,
        match=corrupt(760, "an entry of type 'emit' after the job's end entry"),
    ):
        feed(e, OpEmitted(0, T, 1), 760)


def test_host_cancel_is_returned_and_the_job_goes_on() -> None:
    e = replaying()
    op = issue(e, "effect", "cleanup", {})
    assert seen(feed(e, JobCancelled(T), 10)) == ("cancel", T)
    assert not e.finished
    # The code may still wait for work after the cancel (cleanup on the way out).
    feed(e, OpCompleted(0, T, None, None, "effect", "cleanup", {}), 40)
    assert seen(feed(e, JobFinished(T, None), 80)) == ("end", None, None, T)
    assert op.id == 0


def test_job_end_compared_with_the_code_end() -> None:
    e = replaying()
    op = issue(e, "effect", "work", {})
    feed(e, OpCompleted(0, T, 1, None, "effect", "work", {}), 0)
    ended = feed(e, JobFinished(T, {"total": 1}), 40)
    assert seen(ended) == ("end", {"total": 1}, None, T)
    assert op.describe() == "work()"
    e.check_end(ended, ({"total": 1}, None))  # the same end: no error
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 1 the log recorded the job's end with result {'total': 1} "
            "but the code now asks for an end with result {'total': 2}"
        ),
    ) as info:
        e.check_end(ended, ({"total": 2}, None))
    assert info.value.kind == "other-end"


def test_job_end_while_the_code_still_waits() -> None:
    e = replaying()
    issue(e, "input", "inbox", None, streaming=True)
    issue(e, "effect", "work", {"n": 1})
    ended = feed(e, JobFinished(T, 1), 0)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 1 the log recorded the job's end but the code now asks for "
            "work(n=1)"
        ),
    ) as info:
        e.check_end(ended, None)
    assert info.value.kind == "early-end"
    assert info.value.requested_calls == (OperationCall("effect", "work", {"n": 1}),)


# -- composing the entries of one write ----------------------------------------------


def live() -> Engine:
    return Engine(JOB, replaying=False)


def test_one_outcome_alone_is_one_self_describing_entry() -> None:
    e = live()
    op = issue(e, "effect", "work", {"n": 1})
    batch: list[Any] = [Done(op, 2)]
    assert e.commit(batch, T + 1, T) == [
        OpCompleted(0, T + 1, 2, None, "effect", "work", {"n": 1})
    ]
    e.committed(batch)
    assert e.pending == {}


def test_a_batch_records_what_still_runs_first() -> None:
    e = live()
    slow = issue(e, "effect", "slow", {})
    fast = issue(e, "effect", "fast", {})
    inbox = issue(e, "input", "inbox", None, streaming=True)
    batch: list[Any] = [Done(fast, 1), Emitted(inbox, "hi"), Cancelled()]
    assert e.commit(batch, T + 1, T) == [
        OpStarted(0, T, "effect", "slow", {}),
        OpStarted(2, T, "input", "inbox", None),
        OpCompleted(1, T + 1, 1, None, "effect", "fast", {}),
        OpEmitted(2, T + 1, "hi"),
        JobCancelled(T + 1),
    ]
    e.committed(batch)
    assert e.pending == {0: slow, 2: inbox}
    # Once named by a start entry, an outcome refers to it.
    assert e.commit([Done(slow, 5)], T + 2, T + 1) == [OpCompleted(0, T + 2, 5)]


def test_an_operation_that_streamed_in_the_batch_gets_its_start_entry() -> None:
    e = live()
    op = issue(e, "effect", "count", {}, streaming=True)
    assert e.commit([Emitted(op, 1), Done(op, 1)], T + 1, T) == [
        OpStarted(0, T, "effect", "count", {}),
        OpEmitted(0, T + 1, 1),
        OpCompleted(0, T + 1, 1),
    ]


def test_abandoned_operations_are_not_recorded() -> None:
    e = live()
    op = issue(e, "effect", "work", {})
    other = issue(e, "effect", "other", {})
    e.abandon(op)
    assert e.commit([Done(op, 1), Done(other, 2)], T + 1, T) == [
        OpCompleted(1, T + 1, 2, None, "effect", "other", {})
    ]
    alone = live()
    dropped = issue(alone, "effect", "work", {})
    alone.abandon(dropped)
    assert alone.commit([Done(dropped, 1)], T + 1, T) == []


def test_patch_markers_get_no_start_entry() -> None:
    e = live()
    patch = issue(e, "patch", "fix-1", None)
    work = issue(e, "effect", "work", {})
    assert e.commit([Done(patch, True)], T + 1, T) == [
        OpStarted(1, T, "effect", "work", {}),
        OpCompleted(0, T + 1, True, None, "patch", "fix-1", None),
    ]
    assert work.start_logged


def test_the_end_records_what_still_runs_then_the_end() -> None:
    e = live()
    issue(e, "effect", "work", {})
    err = ErrorInfo("builtins.ValueError", "no", ["no"])
    assert e.end(None, err, T + 3, T + 2) == [
        OpStarted(0, T + 2, "effect", "work", {}),
        JobFinished(T + 3, None, err),
    ]
    assert e.finished


# -- what mutation testing showed untested -------------------------------------------


def test_an_earlier_divergence_is_searched_past_other_entries_and_named_in_full() -> (
    None
):
    e = replaying()
    issue(e, "input", "inbox", None, streaming=True)  # input is never named early
    issue(e, "effect", "work", {"n": 1})
    issue(e, "effect", "work", {"n": 2})
    e.receive_many(
        [
            (10, JobCancelled(T)),
            (20, OpStarted(2, T, "effect", "work", {"n": 2})),
            (30, OpCompleted(1, T, 5, None, "effect", "other", {"n": 1})),
        ]
    )
    earlier = e.earlier_divergence(3)
    assert isinstance(earlier, NonDeterminismError)
    assert str(earlier) == (
        f"job {JOB}: at position 1 (log offset 30) the log recorded other(n=1) but "
        f"the code now asks for work(n=1){ADVICE}"
    )
    assert earlier.kind == "other-operation"
    assert earlier.recorded_call == OperationCall("effect", "other", {"n": 1})
    assert earlier.requested_calls == (OperationCall("effect", "work", {"n": 1}),)


def test_no_earlier_divergence_below_a_position_whose_operations_are_named() -> None:
    # Position 0 has its start entry, position 1 is the one that diverged: nothing
    # below it is left to explain the divergence, even with more log to read.
    e = replaying()
    issue(e, "effect", "work", {"n": 0})
    issue(e, "effect", "work", {"n": 1})
    feed(e, OpStarted(0, T, "effect", "work", {"n": 0}), 0)
    assert e.earlier_divergence(1) is None
    # An unnamed outcome says nothing about what was asked.
    e2 = replaying()
    issue(e2, "effect", "work", {"n": 0})
    e2.receive(0, OpCompleted(0, T, 1))
    assert e2.earlier_divergence(1) is None


def test_patch_verdicts_read_past_entries_of_no_position() -> None:
    e = replaying()
    e.receive_many(
        [
            (0, JobCancelled(T)),
            (30, OpCompleted(0, T, True, None, "patch", "fix-1", None)),
        ]
    )
    assert e.patch_verdict("fix-1") is True


def test_patch_markers_record_the_new_path_taken() -> None:
    e = live()
    assert e.patched("fix-1") is True
    assert e.has_staged
    assert e.commit([], T + 1, T) == [
        OpCompleted(0, T + 1, True, None, "patch", "fix-1", None)
    ]
    # Taken where the log ends: recorded once the job goes live.
    r = replaying()
    r.receive_end()
    assert r.patched("fix-1") is True
    assert not r.has_staged
    assert r.go_live() == []
    assert r.exhausted
    assert r.commit([], T + 1, T) == [
        OpCompleted(0, T + 1, True, None, "patch", "fix-1", None)
    ]


def test_recorded_at_once_takes_exactly_a_start_and_its_done() -> None:
    e = replaying()
    e.receive_many(
        [
            (0, OpStarted(0, T, "effect", "work", {})),
            (40, OpCompleted(0, T, 7)),
        ]
    )
    done = e.recorded_at_once("effect", "work", {}, None)
    assert done == OpCompleted(0, T, 7)
    # After a start entry, only an unnamed done of the same position is its end.
    for second in (
        OpCompleted(0, T, 7, None, "effect", "work", {}),
        OpEmitted(0, T, 7),
    ):
        e = replaying()
        e.receive_many([(0, OpStarted(0, T, "effect", "work", {})), (40, second)])
        assert e.recorded_at_once("effect", "work", {}, None) is None


def test_nothing_is_taken_at_once_after_the_job_s_end() -> None:
    e = replaying()
    e.receive(0, JobFinished(T, 1))
    assert seen(e.next_event(None)) == ("end", 1, None, T)
    e.receive(40, OpCompleted(0, T, 1, None, "effect", "work", {}))
    assert e.recorded_at_once("effect", "work", {}, None) is None


def test_job_ends_with_errors_compare_by_type_and_message() -> None:
    e = replaying()
    recorded = ErrorInfo("builtins.ValueError", "no", ["no"])
    ended = feed(e, JobFinished(T, None, recorded), 0)
    same = (None, ErrorInfo("builtins.ValueError", "no", ["other"]))
    e.check_end(ended, same)  # args are not compared
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 the log recorded the job's end with error "
            "builtins.ValueError('no') but the code now asks for an end with error "
            "builtins.KeyError('no')"
        ),
    ):
        e.check_end(ended, (None, ErrorInfo("builtins.KeyError", "no")))
    with pytest.raises(NonDeterminismError, match="but the code now asks for an end"):
        e.check_end(ended, (None, ErrorInfo("builtins.ValueError", "yes")))
    with pytest.raises(NonDeterminismError, match="but the code now asks for an end"):
        e.check_end(ended, (None, None))


def test_a_cancelled_job_ends_the_same_whatever_its_label() -> None:
    # The message of a cancellation names the log; a copy of the log elsewhere is
    # the same job, cancelled the same way.
    e = replaying()
    cancelled = "duron._errors.JobCancelledError"
    recorded = ErrorInfo(cancelled, "job a.jsonl was cancelled", [])
    ended = feed(e, JobFinished(T, None, recorded), 0)
    e.check_end(ended, (None, ErrorInfo(cancelled, "job b.jsonl was cancelled")))


def test_job_end_while_the_code_waits_for_several_things_or_nothing() -> None:
    e = replaying()
    issue(e, "effect", "work", {"n": 1})
    issue(e, "effect", "work", {"n": 2})
    ended = feed(e, JobFinished(T, 1), 0)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 the log recorded the job's end but the code now asks for "
            "work(n=1), work(n=2)"
        ),
    ):
        e.check_end(ended, None)
    nothing = replaying()
    ended = feed(nothing, JobFinished(T, 1), 0)
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 the log recorded the job's end but the code now asks for "
            "to wait for something"
        ),
    ) as info:
        nothing.check_end(ended, None)
    assert info.value.requested_calls == ()


def test_one_emission_or_cancel_alone_is_written_as_itself() -> None:
    e = live()
    op = issue(e, "effect", "count", {}, streaming=True)
    assert e.commit([Emitted(op, 1)], T + 1, T) == [
        OpStarted(0, T, "effect", "count", {}),
        OpEmitted(0, T + 1, 1),
    ]
    assert e.commit([Cancelled()], T + 2, T + 1) == [JobCancelled(T + 2)]


def test_one_outcome_among_running_operations_records_their_starts() -> None:
    e = live()
    first = issue(e, "effect", "work", {"n": 1})
    issue(e, "effect", "work", {"n": 2})
    assert e.commit([Done(first, 1)], T + 1, T) == [
        OpStarted(1, T, "effect", "work", {"n": 2}),
        OpCompleted(0, T + 1, 1, None, "effect", "work", {"n": 1}),
    ]


def test_an_abandoned_operation_gets_no_start_entry() -> None:
    e = live()
    dropped = issue(e, "effect", "work", {"n": 1})
    issue(e, "effect", "work", {"n": 2})
    assert e.abandon(dropped)
    assert e.flush_starts(T) == [OpStarted(1, T, "effect", "work", {"n": 2})]
    # Dropping what already finished changes nothing.
    done = issue(e, "effect", "work", {"n": 3})
    batch: list[Any] = [Done(done, 3)]
    e.commit(batch, T + 1, T)
    e.committed(batch)
    assert e.abandon(done)
    assert list(e.pending) == [1]


# -- failed attempts of an effect tried again ---------------------------------------

DOWN = ErrorInfo("builtins.ConnectionError", "down", ["down"])


def test_attempts_are_kept_by_the_operation_and_not_delivered() -> None:
    e = replaying()
    op = issue(e, "effect", "charge", {"n": 1})
    feed(e, OpStarted(0, T, "effect", "charge", {"n": 1}), 0)
    first = OpAttempted(0, T + 1, 1, DOWN, 0.5, T + 3)
    event = feed(e, first, 50)
    # An Attempted moves the clock like any entry; durable code gets nothing.
    assert type(event) is Attempted
    assert (event.op, event.attempt, event.error, event.t) == (op, 1, DOWN, T + 1)
    assert (event.duration, event.retry_at) == (0.5, T + 3)
    assert op.attempts == [first]
    assert e.pending == {0: op}
    second = OpAttempted(0, T + 4, 2, DOWN, 0.25, T + 8)
    feed(e, second, 120)
    assert op.attempts == [first, second]
    done = feed(e, OpCompleted(0, T + 9, "paid"), 190)
    assert seen(done) == ("done", 0, "paid", None, T + 9)
    assert e.pending == {}


def test_a_log_ending_after_attempts_resumes_the_operation_with_them() -> None:
    e = replaying()
    op = issue(e, "effect", "charge", {})
    feed(e, OpStarted(0, T, "effect", "charge", {}), 0)
    feed(e, OpAttempted(0, T + 1, 1, DOWN, 0.5, T + 600), 50)
    e.receive_end()
    assert e.next_event(None) is LOG_ENDED
    assert e.go_live() == [op]
    assert op.attempts is not None
    assert [a.retry_at for a in op.attempts] == [T + 600]


def test_a_timer_due_before_an_attempt_entry_fires_first() -> None:
    e = replaying()
    issue(e, "effect", "charge", {})
    feed(e, OpStarted(0, T, "effect", "charge", {}), 0)
    e.receive(50, OpAttempted(0, T + 5, 1, DOWN, 0.5, T + 6))
    assert seen(e.next_event(T + 2)) == ("timer", T + 2)
    assert type(e.next_event(T + 7)) is Attempted


def test_an_attempt_without_the_start_entry_naming_its_operation_is_damage() -> None:
    e = replaying()
    issue(e, "effect", "charge", {})
    with pytest.raises(
        CorruptLogError,
        match=corrupt(
            30,
            "operation #0 records a failed attempt 1 here but the log holds no start "
            "entry naming it",
        ),
    ):
        feed(e, OpAttempted(0, T, 1, DOWN, 0.1, T + 1), 30)


def test_attempts_out_of_order_are_damage() -> None:
    e = replaying()
    issue(e, "effect", "charge", {})
    feed(e, OpStarted(0, T, "effect", "charge", {}), 0)
    with pytest.raises(
        CorruptLogError,
        match=corrupt(
            50, "operation #0 records a failed attempt 2 here where attempt 1 was due"
        ),
    ):
        feed(e, OpAttempted(0, T, 2, DOWN, 0.1, T + 1), 50)


def test_an_attempt_of_something_that_is_not_an_effect_is_damage() -> None:
    e = replaying()
    issue(e, "future", "approval", None)
    feed(e, OpStarted(0, T, "future", "approval", None), 0)
    with pytest.raises(
        CorruptLogError,
        match=corrupt(
            40,
            "operation #0 records a failed attempt 1 here but it is a future, not "
            "an effect",
        ),
    ):
        feed(e, OpAttempted(0, T, 1, DOWN, 0.1, T + 1), 40)


def test_an_attempt_for_a_position_the_code_never_reached() -> None:
    e = replaying()
    with pytest.raises(
        NonDeterminismError,
        match=nondeterminism(
            "at position 0 (log offset 30) the log recorded operation #0 but the "
            "code now asks for nothing; the code did not reach that operation"
        ),
    ):
        feed(e, OpAttempted(0, T, 1, DOWN, 0.1, T + 1), 30)


def test_a_failed_attempt_is_written_after_the_operation_s_start() -> None:
    e = live()
    op = issue(e, "effect", "charge", {"n": 1})
    failed = Attempted(op, 1, DOWN, 0.5, T + 3)
    batch: list[Any] = [failed]
    assert e.commit(batch, T + 1, T) == [
        OpStarted(0, T, "effect", "charge", {"n": 1}),
        OpAttempted(0, T + 1, 1, DOWN, 0.5, T + 3),
    ]
    assert op.attempts is None  # not before it is in the log
    e.committed(batch)
    assert op.attempts == [OpAttempted(0, T + 1, 1, DOWN, 0.5, T + 3)]
    assert e.pending == {0: op}  # still running: its next attempt is due
    # The call's end refers to the start entry.
    assert e.commit([Done(op, "paid")], T + 4, T + 1) == [OpCompleted(0, T + 4, "paid")]


def test_an_abandoned_operation_s_attempt_is_not_recorded() -> None:
    e = live()
    op = issue(e, "effect", "charge", {})
    e.abandon(op)
    batch: list[Any] = [Attempted(op, 1, DOWN, 0.5, T + 3)]
    assert e.commit(batch, T + 1, T) == []
    e.committed(batch)
    assert op.attempts is None


# -- the engine imports nothing that does I/O ------------------------------------------

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
import duron._engine
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


def test_engine_imports_nothing_that_does_io() -> None:
    package_dir = Path(__file__).resolve().parent.parent / "duron"
    out = subprocess.run(
        [sys.executable, "-I", "-c", _IMPORT_PROBE, str(package_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(out.stdout)
    assert "duron._engine" in loaded
    offending = sorted(m for m in loaded if m.split(".")[0] in _FORBIDDEN)
    assert offending == []
    duron_modules = sorted(m for m in loaded if m.startswith("duron"))
    assert duron_modules == [
        "duron._engine",
        "duron._entries",
        "duron._errors",
        "duron._json",
        "duron._operations",
        "duron._redact",
    ]


def test_a_value_without_the_start_entry_naming_its_operation_is_damage() -> None:
    e = replaying()
    issue(e, "effect", "count", {"start": 0}, streaming=True)
    with pytest.raises(
        CorruptLogError,
        match=corrupt(
            30,
            "operation #0 records a value here but the log holds no start entry "
            "naming it",
        ),
    ):
        feed(e, OpEmitted(0, T, 1), 30)


def test_job_end_while_waiting_names_the_first_operation_waited_for() -> None:
    # Input parameters are pending from the start; the position reported is the
    # one of the call the code waits for, not theirs.
    e = replaying()
    issue(e, "input", "inbox", None, streaming=True)
    issue(e, "effect", "a", {})
    feed(e, OpCompleted(1, T, 1, None, "effect", "a", {}), 0)
    issue(e, "effect", "b", {})
    ended = feed(e, JobFinished(T, 1), 40)
    with pytest.raises(NonDeterminismError) as info:
        e.check_end(ended, None)
    assert info.value.position == 2
