"""Duron: replayable async Python.

A ``@duron.durable`` function orchestrates; ``@duron.effect`` functions touch the
world. Every effect's result goes into an append-only log, so a job that crashed, was
stopped or is simply run again replays what it already did and carries on live from
where the log ends.
"""

# No `from __future__ import annotations` here: it would export a name `annotations`.
from duron._codec import UNANNOTATED, Codec, JSONValue, PydanticCodec
from duron._context import Context
from duron._durable import DurableFn, Provided, durable
from duron._effect import Reducer, effect
from duron._errors import (
    CorruptLogError,
    DuronError,
    EffectError,
    InternalError,
    JobCancelledError,
    JobMismatchError,
    JobNotStartedError,
    LeaseLostError,
    LogLockedError,
    NonDeterminismError,
    PayloadError,
    StorageError,
    UsageError,
)
from duron._host import HostReader, HostWriter
from duron._job import Job
from duron._signal import Signal, SignalInterrupt, SignalWriter
from duron._storage import LogStorage
from duron._stream import Stream, StreamClosed, StreamWriter

__version__ = "0.1.0"

__all__ = [
    "UNANNOTATED",
    "Codec",
    "Context",
    "CorruptLogError",
    "DurableFn",
    "DuronError",
    "EffectError",
    "HostReader",
    "HostWriter",
    "InternalError",
    "JSONValue",
    "Job",
    "JobCancelledError",
    "JobMismatchError",
    "JobNotStartedError",
    "LeaseLostError",
    "LogLockedError",
    "LogStorage",
    "NonDeterminismError",
    "PayloadError",
    "Provided",
    "PydanticCodec",
    "Reducer",
    "Signal",
    "SignalInterrupt",
    "SignalWriter",
    "StorageError",
    "Stream",
    "StreamClosed",
    "StreamWriter",
    "UsageError",
    "__version__",
    "durable",
    "effect",
]
