"""The observation seam: what a run tells an observer about the work it does live.

Duron's core knows no telemetry library. An :class:`Observer` installed with
:func:`install` (``duron.contrib.otel.instrument()`` installs one) is asked, once
per job entry built (``job.start()``, ``store.submit()``), for the context that
travels with the job (:meth:`Observer.capture`), and once per run of a job for a
:class:`RunObserver` (:meth:`Observer.run_started`), which the run then tells about
what it does **live** only: an effect attempt started and ended, a durable timer
that fired, a future the host completed, a value the host sent. A replayed
operation tells it nothing; what was replayed is told as one count when the run
goes live.

With no observer installed (the default) a run holds ``None`` and pays one
``is None`` test per run, not per effect: the effect runner is only swapped for its
observed twin when a run is observed (:class:`~duron._effect_runner.ObservedEffects`).

Every method of a :class:`RunObserver` is called on the host's event loop thread
(``effect_started`` inside the context the effect will run in) and must not raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from duron._json import JSONValue

__all__ = ["Observer", "RunObserver", "RunStart", "current", "install"]


@dataclass(frozen=True, slots=True)
class RunStart:
    """One run of a job, as it begins.

    Attributes:
        job: The job's label (its job id, or its log's path).
        function: The durable function's recorded name.
        seed: The job's random seed (from its job entry): with ``job``, what
            identifies the job across runs and processes.
        created: The job clock at its job entry (seconds since the epoch).
        context: What :meth:`Observer.capture` gave when the job entry was built,
            as the log stores it (``None``: nothing).
        resumed: Whether the log held more than its job entry (the run replays
            first).
    """

    job: str
    function: str
    seed: str
    created: float
    context: dict[str, JSONValue] | None
    resumed: bool


class RunObserver(Protocol):
    """What one run of a job tells its observer (live work only)."""

    def enter_durable(self) -> None:
        """Called once, inside the context durable code will run in."""
        ...

    def replay_done(self, replayed_effects: int) -> None:
        """Replay is over (``replayed_effects`` effects took their recorded end):
        the run goes live, or (``run_ended`` says ``replayed``) the log held the
        job's end."""
        ...

    def effect_started(self, name: str, position: int, attempt: int) -> None:
        """An effect attempt starts live; called inside the context it runs in."""
        ...

    def effect_ended(
        self, position: int, attempt: int, error: BaseException | None
    ) -> None:
        """The attempt ended with a result (``error`` None) or an exception. Its
        outcome is not in the log yet: :meth:`written` says when it is (a run
        that stops first runs the effect again when the job resumes)."""
        ...

    def effect_abandoned(self, position: int) -> None:
        """Durable code stopped waiting for a running effect: it is cancelled
        (settled by the next write: until then a crash would redo it)."""
        ...

    def timer_fired(self, seq: int, set_at: float, due: float) -> None:
        """A durable timer (the ``seq``-th the job set) fired live; job clock
        times. Settled by the next write, like :meth:`effect_abandoned`."""
        ...

    def written(self, ended: list[int]) -> None:
        """The run wrote to its log; ``ended``: the positions whose end it holds.
        What happened live before it will not happen again on a resume."""
        ...

    def future_completed(
        self, name: str, position: int, issued_at: float, error: BaseException | None
    ) -> None:
        """The host completed a durable future and it is recorded."""
        ...

    def input_recorded(
        self,
        name: str,
        position: int,
        count: int,
        sent_at: float,
        closed: bool,
        error: BaseException | None,
    ) -> None:
        """A value the host sent (``count`` values recorded so far), or its close,
        is recorded; ``sent_at`` is the host clock when it was sent."""
        ...

    def run_ended(self, status: str, error: BaseException | None) -> None:
        """The run is over.

        ``status``: ``completed``, ``failed`` or ``cancelled`` when this run
        recorded the job's end; ``continued`` when it recorded the end of the
        run that continues as new (the next run is observed as a new run);
        ``replayed`` when the log already held it;
        ``stopped`` when the run stopped before the end (closed, or failed with
        ``error``: it resumes from its log).
        """
        ...


class Observer(Protocol):
    """Told about jobs as they are created and run (see the module docstring)."""

    def capture(self) -> dict[str, JSONValue] | None:
        """What travels with a job being created, stored in its job entry."""
        ...

    def run_started(self, run: RunStart) -> RunObserver | None:
        """A run begins; what to tell about it (``None``: nothing)."""
        ...


_observer: Observer | None = None


def install(observer: Observer | None) -> Observer | None:
    """Make ``observer`` the one runs report to (``None``: none); the previous one."""
    global _observer
    previous, _observer = _observer, observer
    return previous


def current() -> Observer | None:
    """The installed observer, if any."""
    return _observer
