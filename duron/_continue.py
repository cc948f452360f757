"""Continue as new: a job ends its current log and goes on in a fresh one.

A job that runs for months (a polling loop, a chat agent) would grow its log
forever, and every resume would replay all of it. Durable code calls
``ctx.continue_as_new(*args, **kwargs)`` instead: the current run ends, and the
same job goes on from the durable function's start, with these arguments, in a
new log holding nothing but its job entry. A resumed job replays only its current
run's log, however many runs came before.

The switch is one write: the current run's ``end`` entry carries ``next``, the
job entry of the next run (:mod:`duron._entries`). Once that entry is stored the
job has continued; a storage that cannot create the next log in the same
transaction (a file) finishes the switch when the log is next opened, from that
entry (:mod:`duron._chain`). A crash therefore leaves the old run going on (its
end not written) or the new one started, never both, never neither.

This module holds what durable code raises and how the next run's job entry is
made: the arguments are bound, encoded and checked exactly as ``job.start()``
checks them, in durable code, so a bad argument is an error at the call.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from duron._entries import JobStarted
from duron._json import format_call

if TYPE_CHECKING:
    from duron._durable import DurableFn

__all__ = ["ContinueAsNew", "next_run_entry", "next_seed"]


class ContinueAsNew(BaseException):
    """The job continues as new: raised by ``ctx.continue_as_new(...)``.

    It ends the current run of the job and starts the next one, with new
    arguments, in a fresh log. It derives from :class:`BaseException`, like
    :class:`asyncio.CancelledError`, so that an ``except Exception`` in durable
    code does not stop it; let it propagate out of the durable function. Do not
    construct it yourself: call :meth:`Context.continue_as_new
    <duron.Context.continue_as_new>`.

    Attributes:
        job: The job's label (its log path or job id).
        function: The durable function's name.
        arguments: The next run's arguments, encoded as its job entry records
            them.
        run: The next run's number (the first run is 0).
    """

    def __init__(self, job: str, entry: JobStarted) -> None:
        self.job: str = job
        self.function: str = entry.fn
        self.arguments: dict[str, Any] = entry.args
        self.run: int = entry.run
        self.entry: JobStarted = entry
        super().__init__(
            f"job {job} continues as new: {format_call(entry.fn, entry.args)} "
            f"(run {entry.run})"
        )


def next_seed(seed: str, run: int) -> str:
    """The seed of run ``run`` of a job whose previous run had ``seed``: derived,
    not drawn, so that replaying the previous run composes the same entry."""
    return hashlib.sha256(f"{seed}:run:{run}".encode()).hexdigest()[:16]


def next_run_entry(
    dfn: DurableFn[..., Any],
    current: JobStarted,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    t: float,
    job: str,
    max_entry_size: int,
) -> JobStarted:
    """The job entry of the run after ``current``, calling ``dfn`` with these
    arguments at job clock ``t``.

    The job keeps its context (a trace context) and its deadline: they are the
    job's, not a run's.

    Raises:
        UsageError: Bad arguments for ``dfn``.
        PayloadError: An argument cannot be encoded or would not decode back, or
            the entry is larger than ``max_entry_size``.
    """
    encoded = dfn.checked_arguments(args, kwargs, via="continue_as_new()", job=job)
    run = current.run + 1
    entry = JobStarted(
        dfn.name,
        encoded,
        next_seed(current.seed, run),
        t,
        dfn.module,
        context=current.context,
        deadline=current.deadline,
        run=run,
    )
    # The end entry that carries it is about 40 bytes larger: leave room for it.
    dfn.check_writable(entry, job=job, max_entry_size=max_entry_size - 64)
    return entry
