"""Retry policies: which failures of an effect are tried again, and when.

A policy is pure data plus two rules the effect runner
(:mod:`duron._attempts`) applies after each failed attempt: may this exception be
retried (:func:`retryable`), and how long to wait before the next attempt
(:meth:`RetryPolicy.delay`, its jitter drawn from the job's seed, the operation's
position and the attempt's number, so that a run and its re-runs agree).

Each failed attempt that is followed by another is recorded in the log (an
``attempt`` entry): replay takes the recorded attempts and waits for none of them,
and a job resumed in the middle of a backoff waits only what is left of it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from duron._errors import PayloadError, UsageError

if TYPE_CHECKING:
    from duron._entries import OpAttempted

__all__ = [
    "ATTEMPTS_ATTR",
    "Attempt",
    "NonRetryableError",
    "RetryPolicy",
    "attempts_view",
    "failed_attempts",
    "retryable",
]

ATTEMPTS_ATTR = "__duron_attempts__"
"""Where the failed attempts before an effect's last one are kept on its exception."""


class NonRetryableError(Exception):
    """Raised by an effect to say that trying again cannot help.

    No retry policy retries it (nor a subclass of it): the call fails at once
    with this exception, which durable code catches as its own type. Subclass it
    for errors of your own (``class CardDeclined(duron.NonRetryableError)``), or
    list other exception types in :attr:`RetryPolicy.non_retryable`.
    """


def _number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _check_seconds(name: str, value: Any) -> None:
    if not _number(value) or value < 0:
        raise UsageError(
            f"RetryPolicy({name}=...): {name} must be a number of seconds >= 0, "
            f"not {value!r}"
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How an effect that raises is tried again.

    Attempt *n* (from 1) that fails with a retryable exception is followed, after
    ``min(initial_interval * backoff ** (n - 1), max_interval)`` seconds (give or
    take ``jitter``), by attempt *n + 1*, until ``max_attempts`` attempts were
    made or the next one would start more than ``max_elapsed`` seconds after the
    first began. Then the call fails with the last attempt's exception.

    Example:
        ```python
        @duron.effect(retry=duron.RetryPolicy(max_attempts=5, initial_interval=2.0))
        async def charge(order_id: int, amount: Decimal) -> str: ...
        ```

    Attributes:
        max_attempts: How many attempts at most, the first included (``None``:
            no limit but ``max_elapsed``).
        initial_interval: Seconds between the first attempt's failure and the
            second attempt.
        backoff: What each interval is multiplied by for the next (>= 1).
        max_interval: The longest interval, in seconds (``None``: no cap).
        jitter: A fraction (0 to 1): each interval is moved by up to this much of
            itself, up or down, so that many jobs failing together do not all
            retry at the same moment. Drawn deterministically per attempt.
        non_retryable: Exception types never retried (nor their subclasses), on
            top of :class:`NonRetryableError` and Duron's own usage and payload
            errors.
        max_elapsed: Seconds after the first attempt began past which no new
            attempt starts (``None``: no limit but ``max_attempts``). The attempt
            running then is not cut short: for that, use the call's
            ``total_timeout``.
    """

    max_attempts: int | None = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float | None = 60.0
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException], ...] = ()
    max_elapsed: float | None = None

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if attempts is not None and (type(attempts) is not int or attempts < 1):
            raise UsageError(
                "RetryPolicy(max_attempts=...): max_attempts must be an integer "
                f">= 1 or None, not {attempts!r}"
            )
        _check_seconds("initial_interval", self.initial_interval)
        if not _number(self.backoff) or self.backoff < 1:
            raise UsageError(
                "RetryPolicy(backoff=...): backoff must be a number >= 1, not "
                f"{self.backoff!r}"
            )
        if self.max_interval is not None:
            _check_seconds("max_interval", self.max_interval)
            if self.max_interval < self.initial_interval:
                raise UsageError(
                    f"RetryPolicy(initial_interval={self.initial_interval!r}, "
                    f"max_interval={self.max_interval!r}): the first interval is "
                    "longer than the longest allowed; raise max_interval (or set "
                    "it to None)"
                )
        if not _number(self.jitter) or not 0 <= self.jitter <= 1:
            raise UsageError(
                "RetryPolicy(jitter=...): jitter must be a fraction from 0 to 1, "
                f"not {self.jitter!r}"
            )
        if self.max_elapsed is not None:
            _check_seconds("max_elapsed", self.max_elapsed)
        types: Any = self.non_retryable
        if not isinstance(types, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in types
        ):
            raise UsageError(
                "RetryPolicy(non_retryable=...): non_retryable must be a tuple of "
                f"exception types, not {types!r}"
            )

    def delay(self, attempt: int, seed: str = "") -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1).

        Args:
            attempt: The number of the attempt that failed.
            seed: Where the jitter is drawn from (the same seed, the same delay).
        """
        base = self.initial_interval * self.backoff ** (attempt - 1)
        if self.max_interval is not None:
            base = min(base, self.max_interval)
        if self.jitter and base:
            base *= 1 + random.Random(f"{seed}:{attempt}").uniform(
                -self.jitter, self.jitter
            )
        return max(base, 0.0)

    def allows(self, attempt: int, first_started: float, due: float) -> bool:
        """Whether attempt number ``attempt`` may start at ``due``, the first
        attempt having started at ``first_started``."""
        if self.max_attempts is not None and attempt > self.max_attempts:
            return False
        return self.max_elapsed is None or due - first_started <= self.max_elapsed


NO_RETRY = RetryPolicy(max_attempts=1)
"""What an effect without a policy does: one attempt."""


def retryable(policy: RetryPolicy, exc: BaseException) -> bool:
    """Whether ``policy`` may retry an attempt that raised ``exc``.

    Never an error that cannot succeed on another try: :class:`NonRetryableError`,
    Duron's :class:`~duron.UsageError` and :class:`~duron.PayloadError`, anything
    that is not an :class:`Exception` (a cancellation, a ``KeyboardInterrupt``).
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, (NonRetryableError, UsageError, PayloadError)):
        return False
    return not (policy.non_retryable and isinstance(exc, policy.non_retryable))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt of an effect call that was tried again, as recorded.

    Attributes:
        number: The attempt's number, from 1.
        error_type: The qualified type of the exception it raised
            (``"builtins.TimeoutError"`` for an attempt cut by its timeout).
        message: The exception's message.
        duration: Seconds the attempt ran.
        retry_at: When the next attempt was due (job clock, seconds since the
            epoch).
    """

    number: int
    error_type: str
    message: str
    duration: float
    retry_at: float


def attempts_view(recorded: list[OpAttempted]) -> tuple[Attempt, ...]:
    """The recorded ``attempt`` entries of one operation, as :class:`Attempt`."""
    return tuple(
        Attempt(a.attempt, a.error.type, a.error.message, a.duration, a.retry_at)
        for a in recorded
    )


def failed_attempts(exc: BaseException) -> tuple[Attempt, ...]:
    """The attempts an effect call made and retried before failing with ``exc``.

    ``ctx.run`` raises the exception of the call's last attempt; the attempts
    before it (each one failed and was followed by another) are kept on it, oldest
    first. Empty for an exception that did not come out of a retried call.

    Example:
        ```python
        try:
            await ctx.run(charge, order)
        except PaymentError as exc:
            tries = len(duron.failed_attempts(exc)) + 1
        ```

    Args:
        exc: An exception ``ctx.run`` raised.

    Returns:
        The failed attempts before the last one, oldest first.
    """
    found = getattr(exc, ATTEMPTS_ATTR, ())
    return found if isinstance(found, tuple) else ()
