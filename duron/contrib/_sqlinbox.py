"""What the SQL job stores share of input and output by job id: the verbs ``Job``
has (``open_stream``, ``complete_future``, ``is_future_pending``), addressed by job
id and working from any process, written once over a few statements each store
supplies (see :mod:`duron._inbox` for the inbox and its checks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Literal, overload

from duron._errors import JobNotFoundError, UsageError
from duron._inbox import (
    Sending,
    future_sending,
    is_pending_future,
    resolve_durable,
)
from duron._jobstore import check_job_id, parse_job_entry
from duron._store_streams import StoreReader, StoreWriter

if TYPE_CHECKING:
    from duron._durable import DurableFn

__all__ = ["JobHead", "StoreInbox"]

JobHead = tuple[str, "str | None", "bytes | None"]
"""A job's status, function and first log entry (its job entry, if written)."""


class StoreInbox(ABC):
    """Input to a job by its id (the inbox), and its output streams (a mixin of
    :class:`~duron.contrib._sqlstore.SQLStore`)."""

    label: str

    @overload
    async def open_stream(
        self,
        job_id: str,
        name: str,
        mode: Literal["w"],
        *,
        fn: DurableFn[..., Any] | None = None,
    ) -> StoreWriter[Any]: ...
    @overload
    async def open_stream(
        self,
        job_id: str,
        name: str,
        mode: Literal["r"],
        *,
        start: int = 0,
        follow: bool = True,
        fn: DurableFn[..., Any] | None = None,
    ) -> StoreReader[Any]: ...
    async def open_stream(
        self,
        job_id: str,
        name: str,
        mode: Literal["r", "w"],
        *,
        start: int = 0,
        follow: bool = True,
        fn: DurableFn[..., Any] | None = None,
    ) -> StoreWriter[Any] | StoreReader[Any]:
        """Open a job's injected stream or signal parameter by its name, from any
        process: what ``job.open_stream`` does, through the store.

        * ``"w"`` for a ``Stream[T]`` or ``Signal[T]`` parameter: a
          :class:`~duron.StoreWriter` whose ``send(value)`` validates the value and
          returns once it is stored; the job records it in its log when it
          receives it (running now, or when a worker next runs it).
        * ``"r"`` for a ``StreamWriter[T]`` parameter: a :class:`~duron.StoreReader`
          of what the durable code sent, from value ``start`` on, read from the
          job's log; with ``follow`` it waits for more until the stream or the
          job ends.

        The parameter types come from the job's durable function: ``fn`` if
        given, else the one decorated under the job's function name in this
        process, else the one found by importing the module the job entry
        records.

        Args:
            job_id: The job.
            name: The injected parameter's name.
            mode: ``"w"`` to write into the job, ``"r"`` to read what it sends.
            start: For ``"r"``: the index of the first value to yield.
            follow: For ``"r"``: wait for more values (else stop at the end of
                what the log holds now).
            fn: The job's durable function.

        Returns:
            A :class:`~duron.StoreWriter` (``"w"``) or :class:`~duron.StoreReader`
            (``"r"``).

        Raises:
            JobNotFoundError: No such job.
            UsageError: No such parameter, the wrong direction for it, a job
                with no job entry yet, or a durable function not known here.
        """
        if mode not in ("r", "w"):
            raise UsageError(f"open_stream mode must be 'r' or 'w', not {mode!r}")
        check_job_id(job_id)
        dfn = await self._durable_of(job_id, fn, required=True)
        assert dfn is not None
        injections = {inj.name: inj for inj in dfn.injections}
        inj = injections.get(name)
        if inj is None:
            known = ", ".join(sorted(injections)) or "none"
            raise UsageError(
                f"durable function {dfn.name} has no provided parameter {name!r} "
                f"(provided parameters: {known})"
            )
        if mode == "w":
            if inj.kind == "writer":
                raise UsageError(
                    f"{name!r} is a StreamWriter the durable code writes to; read "
                    f"it: open_stream(job_id, {name!r}, 'r')"
                )
            return StoreWriter(dfn, job_id, name, self._put_checked)
        if inj.kind != "writer":
            raise UsageError(
                f"{name!r} is a {inj.kind} the durable code reads; write it: "
                f"open_stream(job_id, {name!r}, 'w')"
            )
        if type(start) is not int or start < 0:
            raise UsageError(f"start must be an integer >= 0, not {start!r}")
        return StoreReader(self._output(job_id, dfn, name, start, follow), start)

    async def complete_future(
        self,
        job_id: str,
        future_id: str,
        *,
        result: Any = None,
        exception: BaseException | None = None,
        fn: DurableFn[..., Any] | None = None,
    ) -> None:
        """Complete a future of a job (made by ``ctx.create_future``) from any
        process; returns once the result is stored for the job.

        The future's type lives in the running code only: ``result`` is encoded
        here (with the codec of ``fn`` or of the function found as
        :meth:`open_stream` finds it, else the default one) and validated when
        the job receives it. A result that does not validate then is recorded as
        the future's error: the durable code's ``await`` raises
        :class:`~duron.PayloadEncodeError`.

        Args:
            job_id: The job.
            future_id: The id ``ctx.create_future`` returned.
            result: The value.
            exception: Raise this in the durable code instead.
            fn: The job's durable function (for its codec).

        Raises:
            JobNotFoundError: No such job.
            UsageError: The job ended; ``future_id`` is not a future id, names
                another kind of operation, or a future already completed (as
                far as the log and the inbox show).
            PayloadEncodeError: ``result`` has no JSON form.
        """
        check_job_id(job_id)
        dfn = await self._durable_of(job_id, fn, required=False)
        await self._put_checked(
            future_sending(dfn, job_id, future_id, result, exception)
        )

    async def is_future_pending(self, job_id: str, future_id: str) -> bool:
        """Whether the job's log shows the future waiting, and no result for it
        is stored yet (a future created in the last moments may not show yet:
        the log records it with the job's next write, or within 50 ms).

        Raises:
            JobNotFoundError: No such job.
        """
        check_job_id(job_id)
        fid = str(future_id)
        if not fid.isdigit() or not fid.isascii():
            return False
        status, entries, queued = await self._op_facts(job_id, int(fid), fid)
        return is_pending_future(status, entries, queued, job_id)

    # -- shared ------------------------------------------------------------------------

    async def _durable_of(
        self, job_id: str, fn: DurableFn[..., Any] | None, *, required: bool
    ) -> DurableFn[..., Any] | None:
        head = await self._job_head(job_id)
        if head is None:
            raise JobNotFoundError(job=job_id, store=self.label)
        status, function, first = head
        entry = parse_job_entry(first, job_id) if first is not None else None
        if entry is None or function is None:
            if not required:
                return fn
            raise UsageError(
                f"job {job_id} has no job entry yet (its log was opened and not "
                f"started; status {status}): its parameters are not known"
            )
        try:
            return resolve_durable(job_id, entry.fn, entry.module, fn)
        except UsageError:
            if required:
                raise
            return None

    async def _put_checked(self, sending: Sending) -> None:
        await self._inbox_put(sending)

    # -- what each store supplies ----------------------------------------------------

    @abstractmethod
    async def _job_head(self, job_id: str) -> JobHead | None:
        """The job's status, function and first entry (``None``: no such job)."""

    @abstractmethod
    async def _inbox_put(self, sending: Sending) -> int:
        """In one transaction: check ``sending`` with
        :func:`~duron._inbox.refusal` (raise what it returns), store it as the
        job's next inbox item, ring the job's feed; the item's ``seq``."""

    @abstractmethod
    async def _op_facts(
        self, job_id: str, op_id: int, target: str
    ) -> tuple[str, list[tuple[int, str]], list[str]]:
        """The job's status, its log's ``start``/``done`` entries of ``op_id``,
        and the kinds of its inbox items for ``target``."""

    @abstractmethod
    def _output(
        self,
        job_id: str,
        dfn: DurableFn[..., Any],
        name: str,
        start: int,
        follow: bool,
    ) -> Any:
        """The values of output stream ``name`` from ``start`` (an async iterator)."""
