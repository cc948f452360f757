"""``ctx.logger``: logging from durable code that replay does not repeat.

Durable code runs again from the top on every replay; a plain ``logging`` call in
it prints its line again each time. :class:`DurableLogger` drops a record while the
run replays what its log recorded, and tags every record it lets through with the
job's id, function and position (``record.duron_job``, ``record.duron_function``,
``record.duron_position``: the position of the next operation the code issues).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:  # LoggerAdapter is subscriptable at runtime only from Python 3.11
    _Adapter = logging.LoggerAdapter

__all__ = ["DurableLogger"]


class DurableLogger(_Adapter):
    """A logger for durable code: silent while the job replays (``ctx.logger``).

    It is a :class:`logging.LoggerAdapter` of the ``duron.job`` logger (or the one
    given to ``ctx.logger_for``): ``ctx.logger.info("charged %s", order)``. A record
    is dropped while the run replays entries its log holds, and during ``duron
    verify``; once the code runs past the end of its log, records go through.
    Each carries ``duron_job``, ``duron_function`` and ``duron_position`` (use
    them in a format: ``%(duron_job)s``).

    A line logged just before a crash, after the last entry the log received, is
    logged again when the job resumes: the log cannot tell whether it was.

    Do not construct it yourself.
    """

    def __init__(
        self,
        logger: logging.Logger,
        job: str,
        function: str,
        replaying: Callable[[], bool],
        position: Callable[[], int],
    ) -> None:
        super().__init__(logger, {"duron_job": job, "duron_function": function})
        self._replaying = replaying
        self._position = position

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra: Mapping[str, object] = self.extra or {}
        given = kwargs.get("extra")
        kwargs["extra"] = {
            **extra,
            "duron_position": self._position(),
            **(given if given is not None else {}),
        }
        return msg, kwargs

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self._replaying() or not self.isEnabledFor(level):
            return
        msg, processed = self.process(msg, kwargs)
        # Name the durable code's line as the caller, not this method.
        processed["stacklevel"] = processed.get("stacklevel", 1) + 1
        self.logger.log(level, msg, *args, **processed)

    def __repr__(self) -> str:
        extra = self.extra or {}
        return f"<DurableLogger {self.logger.name} job={extra.get('duron_job')}>"
