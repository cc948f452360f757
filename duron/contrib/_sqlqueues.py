"""The queue and schedule API of the SQL stores, written once over each store's
statements (:mod:`._sqlite_queues`, :mod:`._postgres_queues`): queue limits
(:mod:`duron._queues`) and schedules (:mod:`duron._schedules`)."""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from duron._entries import JobStarted
from duron._errors import UsageError
from duron._jobstore import Placement
from duron._log import encode_entry
from duron._options import DEFAULT_QUEUE, CallOptions
from duron._queues import Queue
from duron._schedules import Schedule, ScheduleInfo, due_tick, next_tick, tick_job_id
from duron.contrib._queue_claims import queue_from_row

if TYPE_CHECKING:
    from duron._durable import DurableFn
    from duron._json import JSONValue
    from duron._limits import LogLimits

__all__ = ["QueueAPI", "ScheduleRow", "TickJob"]

ScheduleRow = tuple[Any, ...]
"""``(name, function, args, cron, timezone, missed, grace, queue, priority,
paused, next_at, last_tick)``."""
TickJob = tuple[str, str, str, str, Placement]
"""What a tick submits: ``(job id, function, job entry, args, placement)``."""

SCHEDULE_COLUMNS = (
    "name, function, args, cron, timezone, missed, grace, queue, priority, "
    "paused, next_at, last_tick"
)


class QueueAPI(ABC):
    """Queues and schedules: a base of :class:`~duron.contrib._sqlstore.SQLStore`."""

    label: str
    limits: LogLimits

    @staticmethod
    @abstractmethod
    def _when(value: Any) -> datetime | None: ...

    @staticmethod
    def _seconds(value: Any) -> float:
        """A time column's value as seconds since the epoch."""
        return value.timestamp() if isinstance(value, datetime) else float(value)

    # -- queues ------------------------------------------------------------------------

    async def set_queue(self, queue: Queue) -> None:
        """Set a queue's limits, for every worker of this store (replacing the
        ones set before; ``Queue(name)`` without limits removes them).

        Args:
            queue: The queue and its limits.

        Raises:
            UsageError: ``queue`` is not a :class:`~duron.Queue`.
        """
        if not isinstance(queue, Queue):
            raise UsageError(
                f"set_queue() takes a duron.Queue(name, concurrency=..., "
                f"rate_limit=...), not {queue!r}"
            )
        await self._set_queue(queue)

    async def queues(self) -> list[Queue]:
        """The queues whose limits were set (:meth:`set_queue`), by name."""
        return [queue_from_row(row) for row in await self._queue_rows()]

    # -- schedules ---------------------------------------------------------------------

    async def add_schedule(
        self, schedule: Schedule, fn: DurableFn[..., Any], /, *args: Any, **kwargs: Any
    ) -> ScheduleInfo:
        """Create a schedule that starts ``fn(*args, **kwargs)`` at each tick, or
        update the one of that name.

        Safe to call at every start of the application: a schedule whose cron
        expression and time zone did not change keeps its next tick, and a
        paused one stays paused. The jobs go to the queue, at the priority,
        that ``fn.options(queue=..., priority=...)`` gives.

        Args:
            schedule: Its name, cron expression, time zone and missed-tick policy.
            fn: The ``@duron.durable`` function each tick starts.
            *args: Its arguments (after the context), the same at every tick.
            **kwargs: Its keyword arguments.

        Returns:
            The schedule as stored.

        Raises:
            UsageError: ``schedule`` is not a :class:`~duron.Schedule`, or bad
                arguments for ``fn``.
            PayloadError: An argument cannot be encoded for the log.
        """
        from duron._durable import DurableFn

        if not isinstance(fn, DurableFn):
            raise UsageError(
                f"add_schedule() takes a @duron.durable function, not {fn!r}"
            )
        entry = fn.job_entry(
            args,
            kwargs,
            via="add_schedule()",
            max_entry_size=self.limits.max_entry_size,
        )
        options = fn.call_options
        return await self.add_schedule_call(
            schedule,
            fn.name,
            entry.args,
            queue=options.queue or DEFAULT_QUEUE,
            priority=options.priority or 0,
        )

    async def add_schedule_call(
        self,
        schedule: Schedule,
        function: str,
        args: dict[str, JSONValue],
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
    ) -> ScheduleInfo:
        """:meth:`add_schedule` of a call given by name and encoded arguments
        (what ``duron schedules add`` uses: it has no code). The arguments are
        checked when a tick's job runs.

        Raises:
            UsageError: A bad argument (the message names it).
        """
        if not isinstance(schedule, Schedule):
            raise UsageError(
                f"add_schedule() takes a duron.Schedule(name, cron, ...), "
                f"not {schedule!r}"
            )
        name: object = function
        if not isinstance(name, str) or not name:
            raise UsageError(
                f"a schedule's function is a durable function's name, not {function!r}"
            )
        if type(args) is not dict:
            raise UsageError(
                f"a schedule's args are an object of encoded arguments by "
                f"parameter name, not {args!r}"
            )
        placement = Placement.of(
            CallOptions().merged("add_schedule_call", queue=queue, priority=priority)
        )
        await self._put_schedule(
            schedule,
            function,
            orjson.dumps(args).decode(),
            placement.queue,
            placement.priority,
            next_tick(schedule, time.time()),
        )
        return await self.get_schedule(schedule.name)

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule of the store, by name."""
        return [self._schedule_info(row) for row in await self._schedule_rows(None)]

    async def get_schedule(self, name: str) -> ScheduleInfo:
        """One schedule.

        Raises:
            UsageError: No schedule has that name.
        """
        rows = await self._schedule_rows(name)
        if not rows:
            raise self._no_schedule(name)
        return self._schedule_info(rows[0])

    async def pause_schedule(self, name: str) -> None:
        """Stop a schedule's ticks until :meth:`resume_schedule`.

        Raises:
            UsageError: No schedule has that name.
        """
        if not await self._pause(name, True, None):
            raise self._no_schedule(name)

    async def resume_schedule(self, name: str) -> None:
        """Start a paused schedule's ticks again, from the next one after now
        (the ticks that fell while it was paused do not run).

        Raises:
            UsageError: No schedule has that name.
        """
        info = await self.get_schedule(name)
        if not await self._pause(name, False, next_tick(info.schedule, time.time())):
            raise self._no_schedule(name)

    async def remove_schedule(self, name: str) -> None:
        """Delete a schedule (the jobs it started stay).

        Raises:
            UsageError: No schedule has that name.
        """
        if not await self._remove_schedule(name):
            raise self._no_schedule(name)

    async def run_due_schedules(
        self, functions: Mapping[str, DurableFn[..., Any]]
    ) -> list[str]:
        """Start the job of each due tick of the schedules of these functions.

        What a :class:`~duron.Worker` calls, a few times a second; any number
        of workers may: a tick starts one job (see :mod:`duron._schedules`).

        Returns:
            The ids of the jobs this call started.
        """
        started: list[str] = []
        for row in await self._due_rows(tuple(functions)):
            info = self._schedule_info(row)
            fn = functions.get(info.function)
            if fn is None:
                continue
            expected = row[10]
            tick, new_next = due_tick(
                info.schedule, self._seconds(expected), time.time()
            )
            job: TickJob | None = None
            if tick is not None:
                job_id = tick_job_id(info.schedule.name, tick)
                now = time.time()
                entry = JobStarted(
                    fn.name, info.args, secrets.token_hex(8), now, fn.module
                )
                job = (
                    job_id,
                    fn.name,
                    encode_entry(entry).decode(),
                    orjson.dumps(info.args).decode(),
                    Placement(info.queue, info.priority),
                )
            fired = await self._fire(info.schedule.name, expected, new_next, tick, job)
            if fired and job is not None:
                started.append(job[0])
        return started

    def _no_schedule(self, name: str) -> UsageError:
        return UsageError(f"{self.label}: no schedule named {name!r}")

    def _schedule_info(self, row: ScheduleRow) -> ScheduleInfo:
        (name, function, args, cron, tz, missed, grace, queue, priority) = row[:9]
        paused, next_at, last_tick = row[9:]
        next_moment = self._when(next_at)
        assert next_moment is not None
        return ScheduleInfo(
            Schedule(name, cron, tz, missed, float(grace)),
            function,
            orjson.loads(args),
            queue,
            int(priority),
            bool(paused),
            next_moment,
            self._when(last_tick),
        )

    # -- what each store supplies ----------------------------------------------------

    @abstractmethod
    async def _set_queue(self, queue: Queue) -> None:
        """Insert or replace the queue's row."""

    @abstractmethod
    async def _queue_rows(self) -> list[tuple[Any, ...]]:
        """``(name, concurrency, rate_starts, rate_per)`` of every queue row."""

    @abstractmethod
    async def _put_schedule(
        self,
        schedule: Schedule,
        function: str,
        args: str,
        queue: str,
        priority: int,
        next_at: float,
    ) -> None:
        """Insert the schedule, or update it: its next tick becomes ``next_at``
        only if its cron expression or time zone changed; ``paused`` stays."""

    @abstractmethod
    async def _schedule_rows(self, name: str | None) -> list[ScheduleRow]:
        """The schedule's row (``name``), or every one, by name."""

    @abstractmethod
    async def _pause(self, name: str, paused: bool, next_at: float | None) -> bool:
        """Set ``paused`` (and the next tick, if given); whether it exists."""

    @abstractmethod
    async def _remove_schedule(self, name: str) -> bool:
        """Delete the schedule; whether it existed."""

    @abstractmethod
    async def _due_rows(self, functions: tuple[str, ...]) -> list[ScheduleRow]:
        """The schedules of these functions, not paused, whose next tick is due."""

    @abstractmethod
    async def _fire(
        self,
        name: str,
        expected: Any,
        next_at: float,
        tick: float | None,
        job: TickJob | None,
    ) -> bool:
        """In one transaction: if the schedule's next tick still is
        ``expected`` (as read), move it to ``next_at`` (and its last tick to
        ``tick``) and submit ``job`` (nothing if its id exists); whether it
        moved."""
