"""The durable loop on its own, stepped by hand (no host event loop): callbacks run
in FIFO order, timers fire only when the clock is moved, in deadline order."""

from __future__ import annotations

from duron._durable_loop import DurableLoop


def make_loop(clock: float = 100.0) -> DurableLoop:
    return DurableLoop(clock)  # type: ignore[abstract]


def test_ready_callbacks_run_in_order_including_those_they_schedule() -> None:
    loop = make_loop()
    seen: list[str] = []

    def b_then_d() -> None:
        seen.append("b")
        loop.call_soon(seen.append, "d")

    loop.call_soon(seen.append, "a")
    loop.call_soon(b_then_d)
    loop.call_soon(seen.append, "c")
    loop.run_ready()
    assert seen == ["a", "b", "c", "d"]


def test_timers_fire_only_when_the_clock_reaches_them_in_deadline_order() -> None:
    loop = make_loop()
    seen: list[tuple[str, float]] = []
    loop.call_later(2.0, lambda: seen.append(("late", loop.time())))
    loop.call_later(1.0, lambda: seen.append(("early", loop.time())))
    loop.call_at(101.0, lambda: seen.append(("same deadline, later", loop.time())))
    loop.run_ready()
    assert seen == []
    assert loop.next_deadline() == 101.0
    loop.advance(101.5)
    assert seen == [("early", 101.0), ("same deadline, later", 101.0)]
    assert loop.time() == 101.5
    loop.advance(103.0)
    assert seen[-1] == ("late", 102.0)
    assert loop.next_deadline() is None


def test_advance_quietly_moves_the_clock_only_when_no_timer_is_due() -> None:
    loop = make_loop()
    fired: list[float] = []
    handle = loop.call_later(5.0, lambda: fired.append(loop.time()))
    assert not loop.due_by(104.9)
    assert loop.advance_quietly(104.9)
    assert loop.time() == 104.9
    assert loop.due_by(105.0)
    assert not loop.advance_quietly(106.0)  # a timer falls due first: nothing done
    assert loop.time() == 104.9
    assert fired == []
    handle.cancel()  # a cancelled timer is never due
    assert not loop.due_by(106.0)
    assert loop.advance_quietly(106.0)
    assert loop.time() == 106.0
    assert loop.advance_quietly(50.0)  # the clock never goes back
    assert loop.time() == 106.0
    assert fired == []
