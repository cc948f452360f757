"""``Job``: the host's handle on one durable function running over one log."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

import anyio

from duron._codec import decode_recorded
from duron._context import root_call
from duron._driver import Driver, Waiting
from duron._errors import (
    JobMismatchError,
    JobNotStartedError,
    NonDeterminismError,
    StoreUnavailableError,
    UsageError,
)
from duron._host_streams import HostReader, HostWriter
from duron._limits import limits_of
from duron._log import JobStarted, decode_entry, encode_entry
from duron._signature import format_call
from duron._storage import chain_of

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import TaskGroup

    from duron._durable import DurableFn
    from duron._job_end import JobOutcome
    from duron._storage import LogStorage

__all__ = ["Job"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Job(Generic[_P, _T]):
    """A durable function running over one log. Get one from ``fn.invoke(storage)``.

    Use it as an async context manager: entering takes the log's writer lease,
    leaving stops the job at a safe point (live effects are cancelled; their results
    were not recorded, so a later ``resume()`` runs them again) and releases the log.
    :meth:`close` does the same from any task.

    Do not construct it yourself.
    """

    def __init__(
        self,
        dfn: DurableFn[_P, _T],
        storage: LogStorage,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dfn = dfn
        self._storage = storage
        self._clock = clock
        self._tg: TaskGroup | None = None
        self._owner: int | None = None  # the task that entered the job's task group
        self._driver: Driver | None = None
        self._state = "new"
        self._done = anyio.Event()  # the run is over (or never started)
        self._stopping = False
        self._closed = anyio.Event()  # the run stopped and the log was released
        self._run_scope: anyio.CancelScope | None = None
        self._starting: anyio.Event | None = None  # set once start()/resume() ends
        self._outcome: JobOutcome | None = None
        self._failure: BaseException | None = None

    @property
    def id(self) -> str:
        """The job's label: its log path or job id."""
        return self._storage.label

    @property
    def state(self) -> str:
        """``new``, ``open``, ``running``, ``finished``, ``failed``, ``interrupted``
        or ``closed``.

        ``interrupted``: the storage could not be reached (a
        :class:`~duron.StoreUnavailableError`, which :meth:`wait` raises); nothing
        was recorded about it, and ``resume()`` later carries on from the log.
        """
        return self._state

    async def __aenter__(self) -> Job[_P, _T]:
        if self._state != "new":
            raise UsageError(
                f"job {self.id} was already opened; invoke() again for a new one"
            )
        await self._storage.acquire()
        try:
            tg = anyio.create_task_group()
            await tg.__aenter__()
        except BaseException:
            await self._storage.release()
            raise
        self._tg = tg
        self._owner = anyio.get_current_task().id
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
        tg, self._tg = self._tg, None
        if tg is not None:  # only the task that entered the block leaves it
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    async def start(self, *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Start the job with these arguments, or continue it if the log has it.

        On a new log the job entry is written first. On a log that already holds
        this job, the logged run is replayed and continued: the arguments must be
        the logged ones (for a job that continued as new, the ones its first run
        was started with; its current run is the one replayed). Returns once the
        job is running; :meth:`wait` for its end.

        Args:
            *args: The durable function's arguments, after the context.
            **kwargs: Its keyword arguments (not the ``= duron.Provided`` ones).

        Raises:
            JobMismatchError: The log holds another function or other arguments.
            PayloadError: An argument cannot be encoded.
        """
        wanted = self._dfn.job_entry(
            args,
            kwargs,
            via="start()",
            job=self.id,
            t=self._clock(),
            max_entry_size=limits_of(self._storage).max_entry_size,
        )
        await self._begin(wanted)

    async def resume(self) -> None:
        """Continue the job recorded in the log: replay it, then carry on live.

        Raises:
            JobNotStartedError: The log is empty.
            JobMismatchError: The log was written by another durable function.
        """
        await self._begin(None)

    async def _begin(self, wanted: JobStarted | None) -> None:
        if self._state != "open" or self._starting is not None or self._stopping:
            state = "closed" if self._stopping else self._state
            raise UsageError(
                f"job {self.id} is {state}: start()/resume() once, inside "
                "`async with fn.invoke(storage) as job`"
            )
        self._starting = starting = anyio.Event()
        try:
            await self._open_run(wanted)
        except BaseException:
            self._starting = None  # nothing started: the job may be tried again
            raise
        finally:
            starting.set()

    async def _open_run(self, wanted: JobStarted | None) -> None:
        """Read the log's job entry (or write it), then start the run."""
        dfn = self._dfn
        label = self._storage.label
        records = self._storage.read().__aiter__()
        first = await read_job_entry(records, label)
        if first is None:
            await _aclose(records)
            if wanted is None:
                raise JobNotStartedError(job=label)
            # The builder checked that the arguments decode back and that the entry
            # can be written: durable code gets them as replay will rebuild them.
            first = wanted
            await self._storage.append([encode_entry(first)])
            replay: AsyncIterator[tuple[int, bytes]] | None = None
        else:
            if first.fn != dfn.name:
                await _aclose(records)
                raise JobMismatchError(
                    job=label, field="function", recorded=first.fn, requested=dfn.name
                )
            started = first if first.run == 0 else await self._first_run(first)
            if wanted is not None and not dfn.sig.same_call(
                dfn.codec, started.args, wanted.args
            ):
                await _aclose(records)
                raise JobMismatchError(
                    job=label,
                    field="arguments",
                    recorded=format_call(dfn.name, started.args),
                    requested=format_call(dfn.name, wanted.args),
                )
            replay = records
        args = self._decode_args(first.args)
        driver = self._new_driver(first, replaying=replay is not None)
        self._driver = driver
        self._state = "running"
        assert self._tg is not None
        self._tg.start_soon(
            self._drive, self._tg, driver, args, replay, name=f"duron job {label}"
        )

    async def _first_run(self, current: JobStarted) -> JobStarted:
        """The job entry of the job's first run (what ``start()`` was given),
        or ``current`` when the storage no longer keeps it."""
        chained = chain_of(self._storage)
        if chained is None:
            return current
        records = chained.read_run(0).__aiter__()
        try:
            first = await read_job_entry(records, self._storage.label)
        finally:
            await _aclose(records)
        return current if first is None else first

    def _decode_args(self, encoded: dict[str, Any]) -> dict[str, Any]:
        return decode_job_args(self._dfn, encoded, self.id)

    async def _drive(
        self,
        tg: TaskGroup,
        driver: Driver,
        args: dict[str, Any],
        records: AsyncIterator[tuple[int, bytes]] | None,
    ) -> None:
        try:
            while True:
                following = await self._run_one(tg, driver, args, records)
                if following is None or self._stopping:
                    return
                # The job continued as new: its next run starts live, in the
                # fresh log the storage began with the run's job entry.
                records = None
                try:
                    args = self._decode_args(following.args)
                except Exception as exc:  # pragma: no cover - checked when made
                    self._failure = exc
                    self._state = "failed"
                    return
                driver = self._new_driver(following, replaying=False)
                self._driver = driver
        finally:
            self._done.set()

    async def _run_one(
        self,
        tg: TaskGroup,
        driver: Driver,
        args: dict[str, Any],
        records: AsyncIterator[tuple[int, bytes]] | None,
    ) -> JobStarted | None:
        """Run one run of the job; the next run's job entry if it continued as new."""
        main = root_call(self._dfn, driver, args)
        following = None
        try:
            with anyio.CancelScope() as scope:
                self._run_scope = scope
                if self._stopping:  # close() came first: start nothing
                    driver.stop_effects()
                    scope.cancel()
                outcome = await driver.run(tg, main, records)
                following = outcome.continued
                if following is None:
                    self._outcome = outcome
                    self._state = "failed" if outcome.error is not None else "finished"
        except Exception as exc:
            self._failure = exc
            unavailable = isinstance(exc, StoreUnavailableError)
            self._state = "interrupted" if unavailable else "failed"
        finally:
            driver.shutdown(self._failure)
            with anyio.CancelScope(shield=True):
                await driver.aclose()  # effects still running stop here
                if records is not None:
                    await _aclose(records)
        return following

    def _new_driver(self, first: JobStarted, *, replaying: bool) -> Driver:
        return Driver(
            self._dfn,
            self._storage,
            seed=first.seed,
            started=first.t,
            replaying=replaying,
            clock=self._clock,
            context=first.context,
            deadline=first.deadline,
            run=first.run,
        )

    # -- live input and output --------------------------------------------------------

    async def _running(self, what: str) -> Driver:
        if self._driver is None:
            raise UsageError(
                f"job {self.id}: {what} needs a started job: call start() or resume() first"
            )
        return self._driver

    @overload
    async def open_stream(self, name: str, mode: Literal["w"]) -> HostWriter[Any]: ...
    @overload
    async def open_stream(
        self, name: str, mode: Literal["r"], *, start: int = 0
    ) -> HostReader[Any]: ...
    async def open_stream(
        self, name: str, mode: Literal["r", "w"], *, start: int = 0
    ) -> HostWriter[Any] | HostReader[Any]:
        """Open the host's end of an injected parameter, by its name.

        * ``"w"`` for a ``Stream[T]`` or ``Signal[T]`` parameter: a writer whose
          ``send(value)`` returns once the value is in the log;
        * ``"r"`` for a ``StreamWriter[T]`` parameter: an async iterator of what the
          durable code sends. It yields once replay is over, from value ``start``
          (every value again after a restart, so a UI can redraw).

        Args:
            name: The injected parameter's name.
            mode: ``"w"`` to write into the job, ``"r"`` to read what it sends.
            start: For ``"r"``: the index of the first value to yield.

        Returns:
            A :class:`~duron.HostWriter` (``"w"``) or :class:`~duron.HostReader` (``"r"``).

        Raises:
            UsageError: No such parameter, or the wrong direction for it.
        """
        driver = await self._running(f"open_stream({name!r})")
        injections = {inj.name: inj for inj in self._dfn.injections}
        inj = injections.get(name)
        if inj is None:
            known = ", ".join(sorted(injections)) or "none"
            raise UsageError(
                f"durable function {self._dfn.name} has no provided parameter "
                f"{name!r} (provided parameters: {known})"
            )
        if mode == "w":
            if inj.kind == "writer":
                raise UsageError(
                    f"{name!r} is a StreamWriter the durable code writes to; the host "
                    f"reads it: open_stream({name!r}, 'r')"
                )
            return HostWriter(
                name,
                inj.annotation,
                self._dfn.codec,
                driver.host_input.submit_input,
                driver.host_input.recorded_count,
            )
        if mode == "r":
            if inj.kind != "writer":
                raise UsageError(
                    f"{name!r} is a {inj.kind} the durable code reads; the host writes "
                    f"it: open_stream({name!r}, 'w')"
                )
            return HostReader(driver.outputs[name], driver, start)
        raise UsageError(f"open_stream mode must be 'r' or 'w', not {mode!r}")

    async def complete_future(
        self,
        future_id: str,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Complete a future made by ``ctx.create_future``; returns once it is logged.

        Args:
            future_id: The id ``ctx.create_future`` returned.
            result: The value, validated against the future's type.
            exception: Raise this in the durable code instead of giving a result.

        Raises:
            UsageError: Unknown, already completed, or abandoned future.
            PayloadError: ``result`` does not validate as the future's type.
        """
        driver = await self._running("complete_future")
        await driver.host_input.complete_future(future_id, result, exception)

    def is_future_pending(self, future_id: str) -> bool:
        """Whether durable code still waits on this future (exact once replay is over)."""
        driver = self._driver
        return (
            driver is not None
            and not driver.ended
            and driver.host_input.find_future(future_id) is not None
        )

    def waiting(self) -> Waiting | None:
        """What the job waits for, when it waits only on durable things.

        A job whose durable code waits on a durable timer, a future, a stream or
        a signal, with no effect running and nothing left to write, can be stopped
        (:meth:`close`) and resumed later without losing anything: a
        :class:`~duron.Worker` gives such a job's slot back (suspends it).

        Returns:
            ``None`` while the job replays, runs an effect, has something to write
            or has ended; else a :class:`~duron.Waiting` saying when its next
            timer is due and since when it has waited so.
        """
        driver = self._driver
        if driver is None or self._state != "running":
            return None
        return driver.waiting()

    async def wait_idle(self) -> Waiting | None:
        """Wait until the job waits only on durable things (see :meth:`waiting`).

        Returns:
            What it waits for, or ``None`` once the job ended or was closed.
        """
        while True:
            driver = self._driver
            if driver is None or self._state != "running" or driver.ended:
                if self._state in ("new", "open"):
                    raise UsageError(
                        f"job {self.id}: wait_idle() needs a started job: call "
                        "start() or resume() first"
                    )
                return None
            waiting = driver.waiting()
            if waiting is not None:
                return waiting
            await driver.wait_quiet()

    def suspend(self) -> Waiting | None:
        """Begin stopping the job if it waits only on durable things.

        Decided and done in one step, with no await in between: if
        :meth:`waiting` says the job waits only on durable things, no effect
        starts from now on and the job stops at its next safe point; finish with
        :meth:`close` (or by leaving ``async with``). Resumed later, it replays
        and waits again, its timers due at the same times.

        Returns:
            What the job waits for (see :meth:`waiting`), or ``None``: it was not
            waiting only on durable things, and nothing was done.
        """
        waiting = self.waiting()
        if waiting is not None:
            driver = self._driver
            assert driver is not None
            driver.stop_effects()
        return waiting

    async def cancel(self) -> None:
        """Cancel the job: recorded, then delivered as cancellation at its next await.

        If the durable code lets the cancellation end it, :meth:`wait` raises
        :class:`~duron.JobCancelledError`; the log records that end.
        """
        driver = await self._running("cancel")
        await driver.host_input.cancel()

    async def wait(self) -> _T:
        """Wait for the job to end and return its result (recorded or fresh).

        Returns:
            The durable function's return value, decoded into its annotated type.

        Raises:
            Exception: What the durable function raised (its own type when it can be
                rebuilt, else :class:`~duron.EffectError`).
            NonDeterminismError: The code no longer replays the log.
            PayloadError: A recorded payload no longer validates.
        """
        if self._state in ("new", "open"):
            raise UsageError(
                f"job {self.id} was not started: call start() or resume() first"
            )
        await self._done.wait()
        if self._failure is not None:
            raise self._failure
        if self._outcome is None:
            raise UsageError(
                f"job {self.id} was closed before it finished; resume() it later"
            )
        if self._outcome.error is not None:
            raise self._outcome.error
        return self._outcome.result  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Stop the job at a safe point and release the log (idempotent).

        Any task may call it, in any cancel scope: it asks the run to stop, waits
        until it has (live effects cancelled, nothing more written; a ``start()``
        or ``resume()`` under way first reaches the point where the run begins)
        and releases the log. The job's task group is left by the task that
        entered ``async with``, when it leaves the block.
        """
        if self._state == "new":
            self._state = "closed"
            return
        await self._stop()

    async def _stop(self) -> None:
        """Stop the run and release the log, once, whichever task asks first."""
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        try:
            with anyio.CancelScope(shield=True):
                if self._starting is not None:
                    await self._starting.wait()  # start()/resume() reaches the run
                driver = self._driver
                if driver is not None:
                    driver.stop_effects()
                    scope = self._run_scope
                    if scope is not None:
                        scope.cancel()
                    await self._done.wait()
                await self._storage.release()
        finally:
            if self._state in ("open", "running"):
                self._state = "closed"
            self._done.set()
            self._closed.set()

    def __repr__(self) -> str:
        driver = self._driver
        position = driver.position if driver is not None else 0
        return f"<Job {self._dfn.name} id={self.id} state={self._state} position={position}>"


async def read_job_entry(
    records: AsyncIterator[tuple[int, bytes]], label: str
) -> JobStarted | None:
    """Read a log's first entry, which must be its job entry (``None``: empty log).

    Shared by :class:`Job` and ``duron verify``, which replays a log without a job.

    Raises:
        NonDeterminismError: The log begins with another kind of entry.
        CorruptLogError: The first entry is damaged.
    """
    try:
        offset, raw = await records.__anext__()
    except StopAsyncIteration:
        return None
    entry = decode_entry(raw, job=label, offset=offset)
    if not isinstance(entry, JobStarted):
        raise NonDeterminismError(
            job=label,
            position=0,
            kind="no-job-entry",
            recorded=f"{'an' if entry.type[0] in 'aeiou' else 'a'} {entry.type} entry",
            requested="the job entry",
            offset=offset,
            hint="a log must begin with its job entry",
        )
    return entry


def decode_job_args(
    dfn: DurableFn[..., Any], encoded: dict[str, Any], label: str
) -> dict[str, Any]:
    """Validate a job's recorded arguments into the durable function's parameter
    types, by parameter name (``*args`` as a tuple, ``**kwargs`` as a dict).

    Raises:
        JobMismatchError: An argument names no parameter of the function.
        PayloadDecodeError: An argument no longer validates.
    """
    out: dict[str, Any] = {}
    for name, data in encoded.items():
        try:
            annotation = dfn.sig.stored_as(name)
        except KeyError:
            raise JobMismatchError(
                job=label,
                field="arguments",
                recorded=format_call(dfn.name, encoded),
                requested=f"{dfn.name} without a parameter {name!r}",
            ) from None
        out[name] = decode_recorded(
            dfn.codec,
            data,
            annotation,
            what=f"argument {name!r} of {dfn.name}",
            job=label,
        )
    return out


async def _aclose(it: AsyncIterator[Any]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()
