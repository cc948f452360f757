"""Child jobs: durable code starting another durable function as a job of its own.

On a job store, ``ctx.start_job(fn, ...)`` does two recorded things: it makes a
durable future for the child's result, then runs one effect that adds the child
to the store (idempotent: its id derives from the parent's id and the future's
position unless ``fn.options(job_id=...)`` names one, so a replayed or resumed
parent never starts it twice). When the child ends, the store puts its outcome in
the parent's inbox for that future, in the very transaction that ends the child
(a trigger), and wakes the parent if it was suspended: the parent's ``await``
gets the child's result, or its error as its own type (a cancelled child as
:class:`~duron.JobCancelledError`). The parent, waiting on a future, holds no
worker slot once suspended, so a parent and its children run on one slot.

On a log of its own (a file, memory) there is no store to hold a second job:
the child's durable function runs inline, as a task of the parent, its effects
recorded in the parent's log. That composes and replays like any other durable
code; a child function with injected parameters (``Stream``, ``Signal``,
``StreamWriter``) cannot run that way, and is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from duron._effect import effect
from duron._errors import UsageError

if TYPE_CHECKING:
    from duron._context import Context
    from duron._durable import DurableFn
    from duron._durable_calls import DurableCalls

__all__ = ["ChildJob", "start_job"]

_T = TypeVar("_T")


class ChildJob(Generic[_T]):
    """A job that durable code started with ``ctx.start_job``. Await it for its
    result (the child's error is raised as its own type).

    Do not construct it yourself.

    Attributes:
        id: The child's job id (on a log of its own, where the child runs
            inline: a label naming its place in the parent).
        function: The child's durable function.
    """

    __slots__ = ("_result", "function", "id")

    def __init__(self, job_id: str, function: str, result: Awaitable[_T]) -> None:
        self.id: str = job_id
        self.function: str = function
        self._result = result

    def __await__(self) -> Generator[Any, None, _T]:
        return self._result.__await__()

    def __repr__(self) -> str:
        return f"<ChildJob {self.function} id={self.id}>"


class _Starter:
    """The effect that adds a child job to its parent's store."""

    def __init__(self, store: Any, fn: DurableFn[..., Any]) -> None:
        self._store = store
        self._fn = fn

    @effect(name="duron.start_job")
    async def start_job(
        self,
        job_id: str,
        function: str,
        arguments: dict[str, Any],  # encoded already: JSON as it is
        parent: str,
        future: str,
    ) -> str:
        fn = self._fn
        await self._store.start_child(
            fn, job_id, fn.entry_from(arguments), parent=parent, future=future
        )
        return job_id


async def start_job(
    ctx: Context,
    calls: DurableCalls,
    fn: DurableFn[..., _T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> ChildJob[_T]:
    """What ``ctx.start_job(fn, *args, **kwargs)`` does (see the module docstring)."""
    from duron._durable import DurableFn

    if not isinstance(fn, DurableFn):
        raise UsageError(
            f"ctx.start_job takes a @duron.durable function, not {fn!r}; run an "
            "effect with ctx.run"
        )
    store = calls.job_store
    via = f"ctx.start_job({fn.name})"
    if store is None:
        if fn.injections:
            names = ", ".join(inj.name for inj in fn.injections)
            raise UsageError(
                f"{via}: on a log of its own the child runs inline, in the parent, "
                f"and cannot have injected parameters ({names}); use a job store "
                "(SQLiteStore, PostgresStore) to run it as a job of its own"
            )
        fn.encode_arguments(args, kwargs, via=via)  # the same checks as a job's
        label = f"{calls.label}.{calls.position()}"
        task = asyncio.ensure_future(fn.fn(ctx, *args, **kwargs))
        return ChildJob(label, fn.name, task)
    encoded = fn.encode_arguments(args, kwargs, via=via)
    future_id, result = calls.issue_future(fn.sig.return_annotation, f"job {fn.name}")
    # Positions start again at 0 in each run of a job that continues as new:
    # the run is part of the child's id and of the future its end completes.
    run = calls.run_number
    given = fn.call_options.job_id
    if given is not None:
        child_id = given
    elif run:
        child_id = f"{calls.label}.{run}.{future_id}"
    else:
        child_id = f"{calls.label}.{future_id}"
    await ctx.run(
        _Starter(store, fn).start_job,
        child_id,
        fn.name,
        encoded,
        calls.label,
        f"{run}:{future_id}",
    )
    return ChildJob(child_id, fn.name, result)
