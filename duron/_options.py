"""Options of a call: how a job or an effect runs, never what it gets.

A call's arguments are the durable function's, every one of them: a function may
well take a ``job_id`` or a ``queue`` parameter of its own. So options of the call
itself travel on the callable, ``fn.options(job_id="order-42")``, never among the
keyword arguments (as trio's ``start_soon`` takes none for the same reason):

```python
job_id = await store.submit(checkout.options(job_id="order-42"), order)
```

Effects are the same: their call options (a retry policy, timeouts) are set on the
decorator, ``@duron.effect(retry=...)``, or for some calls on the context,
``ctx.options(timeout=5).run(charge, order)`` (:class:`EffectOptions`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeGuard, TypeVar

from duron._errors import UsageError
from duron._retry import RetryPolicy

__all__ = [
    "DEFAULT_QUEUE",
    "JOB_ID_RULE",
    "QUEUE_NAME_RULE",
    "CallOptions",
    "EffectOptions",
    "Options",
    "deadline_at",
    "duration_seconds",
    "is_job_id",
    "is_queue_name",
]

_O = TypeVar("_O", bound="Options")

JOB_ID_RULE = "a non-empty string of at most 255 characters"
QUEUE_NAME_RULE = (
    "a non-empty string of at most 255 printable characters, without leading "
    "or trailing spaces"
)
DEFAULT_QUEUE = "default"
"""The queue of a job submitted without ``fn.options(queue=...)``."""
PRIORITY_MIN = -(2**31)
PRIORITY_MAX = 2**31 - 1
PRIORITY_RULE = f"a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}"


def is_job_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a job (see :data:`JOB_ID_RULE`)."""
    return isinstance(value, str) and 0 < len(value) <= 255


def _option(check: Callable[[object], bool], rule: str) -> Any:
    """A field of :class:`CallOptions`: unset (``None``) by default; a value
    must pass ``check``, which ``rule`` tells a user in words."""
    return field(default=None, metadata={"check": check, "rule": rule})


def _seconds(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def is_queue_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a queue (see :data:`QUEUE_NAME_RULE`)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 255
        and value.isprintable()
        and value == value.strip()
    )


def _priority(value: object) -> bool:
    return type(value) is int and PRIORITY_MIN <= value <= PRIORITY_MAX


def _aware(value: object) -> bool:
    return isinstance(value, datetime) and value.utcoffset() is not None


def _duration(value: object) -> bool:
    if isinstance(value, timedelta):
        return value >= timedelta(0)
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def duration_seconds(value: timedelta | float) -> float:
    """A checked duration option in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _deadline(value: object) -> bool:
    if isinstance(value, datetime):
        return value.tzinfo is not None and value.utcoffset() is not None
    if isinstance(value, timedelta):
        return value > timedelta(0)
    return _seconds(value)


def deadline_at(value: datetime | timedelta | float, now: float) -> float:
    """A ``deadline`` option as a time (seconds since the epoch): a datetime as
    it is, a duration (a timedelta or seconds) counted from ``now``."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, timedelta):
        return now + value.total_seconds()
    return now + float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What every kind of call options shares: set, merge, show."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def merged(self: _O, owner: str, **given: Any) -> _O:
        """These options with each ``given`` one that is not ``None`` set.

        Args:
            owner: The call that sets them, for the message
                (``"checkout.options"``, ``"ctx.options"``).
            **given: Option values; ``None`` leaves an option as it is.

        Raises:
            UsageError: An unknown option, or a bad value (naming both).
        """
        changes: dict[str, Any] = {}
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, value in given.items():
            if value is None:
                continue
            spec = known.get(name)
            if spec is None:
                raise UsageError(
                    f"{owner}() has no option {name!r} (options: {', '.join(known)})"
                )
            if not spec.metadata["check"](value):
                raise UsageError(
                    f"{owner}({name}=...): {name} must be "
                    f"{spec.metadata['rule']}, not {value!r}"
                )
            changes[name] = value
        return dataclasses.replace(self, **changes) if changes else self

    def given(self) -> dict[str, Any]:
        """The options that are set, by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.given().items())
        return f"{type(self).__name__}({given})"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CallOptions(Options):
    """The options a durable function carries for its calls (``fn.options(...)``).

    Unset options are ``None``: the store's default applies. Get them from a
    function with ``fn.call_options``; set them with ``fn.options(...)``.

    Attributes:
        job_id: The id of the job a ``store.submit()`` of it makes (default: a
            random one). Submitting again under the same id is idempotent.
        deadline: When the job is cancelled if it has not ended: an aware
            datetime, or a duration (a timedelta or seconds) from when the job
            is started or submitted. Recorded in the job's first entry.
        queue: The queue ``store.submit()`` puts the job in (default
            ``"default"``).
        priority: Within its queue, jobs of a higher priority start first
            (default 0; ties: the oldest first).
        start_at: ``store.submit()``: no worker starts the job before this
            time (an aware datetime).
        delay: ``store.submit()``: no worker starts the job before this long
            after its submission (a timedelta or seconds).
    """

    # One line per option: its name, its type and what checks its value (then a
    # keyword of the same name on DurableFn.options, for type checkers).
    job_id: str | None = _option(is_job_id, JOB_ID_RULE)
    deadline: datetime | timedelta | float | None = _option(  # noqa: RUF009 - inert
        _deadline,
        "a timezone-aware datetime, or a duration > 0 (a timedelta or seconds)",
    )
    queue: str | None = _option(is_queue_name, QUEUE_NAME_RULE)
    priority: int | None = _option(_priority, PRIORITY_RULE)
    start_at: datetime | None = _option(  # noqa: RUF009 - inert
        _aware, "a timezone-aware datetime"
    )
    delay: timedelta | float | None = _option(  # noqa: RUF009 - inert
        _duration, "a duration >= 0 (a timedelta or seconds)"
    )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class EffectOptions(Options):
    """The options of an effect's calls: ``@duron.effect(...)``, ``ctx.options(...)``.

    Attributes:
        retry: How a failed attempt is tried again (default: it is not).
        timeout: Seconds one attempt may run before it is cancelled and counts
            as failed (a ``TimeoutError``).
        total_timeout: Seconds the whole call may take, every attempt and wait
            included, from its first attempt's start: past it, the running
            attempt is cancelled and no other starts.
    """

    retry: RetryPolicy | None = _option(  # noqa: RUF009 - inert
        lambda v: isinstance(v, RetryPolicy), "a duron.RetryPolicy"
    )
    timeout: float | None = _option(_seconds, "a number of seconds > 0")
    total_timeout: float | None = _option(_seconds, "a number of seconds > 0")
