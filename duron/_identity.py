"""Who is running: the job a piece of code belongs to, and an effect's operation.

Durable code reads its job's id from ``ctx.job_id``. An effect reads its
operation from :func:`current_operation`: the job, the position, the attempt, and
a key stable for that operation across attempts, crashes, restarts on other
workers and replays, and different for every operation of every job: the value to
give a payment or email API as its idempotency key.

Nothing is built until an effect asks, and a plain ``async def`` effect (the hot
path) pays nothing to be found: the effect runner sets :data:`CURRENT_OPERATION`
(the running :class:`Op`) in the context of the effects it runs inside a
coroutine of its own (threads, retries, streams, any trio host), and on an asyncio
host the job's effect launcher is :data:`CURRENT_JOB` in the context of every task
it starts, which knows the operation of the task asking (:class:`Launcher`).
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from duron._errors import UsageError

if TYPE_CHECKING:
    from duron._operations import Op

__all__ = [
    "CURRENT_JOB",
    "CURRENT_OPERATION",
    "JobIdentity",
    "Launcher",
    "Operation",
    "current_operation",
    "operation_key",
]


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """What names one job for good: its id (a store's job id, a log's path) and
    the random seed its job entry recorded (two logs of the same name, or a job
    id used again after a prune, never share it)."""

    job_id: str
    seed: str


class Launcher(Protocol):
    """What starts a job's effects, as :func:`current_operation` asks it."""

    identity: JobIdentity

    def running(self) -> Op | None:
        """The operation of the effect task asking (None: not one of mine)."""
        ...


CURRENT_OPERATION: ContextVar[Op | None] = ContextVar(
    "duron_current_operation", default=None
)
"""The operation whose effect runs in this context (its ``origin`` is the job's
identity)."""

CURRENT_JOB: ContextVar[Launcher | None] = ContextVar("duron_current_job", default=None)
"""The launcher of the job whose effect tasks run in this context."""


@dataclass(frozen=True, slots=True)
class Operation:
    """The operation an effect is running for (see :func:`current_operation`).

    Attributes:
        job_id: The job's id: its id in a job store, or its log's label (a file
            log's path).
        position: The operation's position in the job (0, 1, 2...).
        name: The effect's recorded name.
        attempt: The number of the attempt running now, from 1 (see
            :class:`~duron.RetryPolicy`).
        key: A key stable for this operation across attempts, crashes, restarts
            (on this worker or another) and replays, and different for every
            operation of every job: 32 hexadecimal characters, fit for an API's
            idempotency key. Made from the job's id, its recorded random seed and
            the position.
    """

    job_id: str
    position: int
    name: str
    attempt: int
    key: str


def operation_key(identity: JobIdentity, position: int) -> str:
    """The idempotency key of the operation at ``position`` of a job."""
    text = f"{identity.job_id}\0{identity.seed}\0{position}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def current_operation() -> Operation:
    """The operation the running effect was called for.

    Call it inside an effect (an ``async def``, a plain ``def`` in its worker
    thread, or a streaming effect) run by ``ctx.run``; pass its ``key`` to an API
    that deduplicates requests, so that an attempt run again (a retry, or a job
    resumed after a crash in the middle of the call) is not done twice.

    Example:
        ```python
        @duron.effect
        async def charge(order_id: int, amount: int) -> str:
            key = duron.current_operation().key
            return await payments.charge(order_id, amount, idempotency_key=key)
        ```

    Returns:
        The job, position, attempt and idempotency key of the running operation.

    Raises:
        UsageError: Not called from inside an effect that a Duron job runs.
    """
    op = CURRENT_OPERATION.get()
    if op is not None:
        identity: JobIdentity = op.origin
    else:
        launcher = CURRENT_JOB.get()
        op = launcher.running() if launcher is not None else None
        if launcher is None or op is None:
            raise UsageError(
                "duron.current_operation() was called outside an effect; call it "
                "inside an effect that durable code runs with ctx.run"
            )
        identity = launcher.identity
    return Operation(
        identity.job_id,
        op.id,
        op.name,
        len(op.attempts) + 1 if op.attempts else 1,
        operation_key(identity, op.id),
    )
