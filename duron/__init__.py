"""Duron: replayable async Python.

A ``@duron.durable`` function orchestrates; ``@duron.effect`` functions touch the
world. Every effect's result goes into an append-only log, so a job that crashed, was
stopped or is simply run again replays what it already did and carries on live from
where the log ends.
"""

# No `from __future__ import annotations` here: it would export a name `annotations`.
from duron._child_jobs import ChildJob
from duron._codec import UNANNOTATED, Codec, JSONValue, PydanticCodec
from duron._context import Context, PatchQuery
from duron._continue import ContinueAsNew
from duron._driver import Waiting
from duron._durable import DurableFn, Provided, durable
from duron._durable_logger import DurableLogger
from duron._effect import Reducer, effect
from duron._errors import (
    CorruptLogError,
    DivergenceKind,
    DuplicateJobError,
    DuronError,
    EffectError,
    InternalError,
    JobCancelledError,
    JobMismatchError,
    JobNotFoundError,
    JobNotStartedError,
    LeaseLostError,
    LogLockedError,
    NonDeterminismError,
    NondeterministicCallError,
    OperationCall,
    PayloadDecodeError,
    PayloadEncodeError,
    PayloadError,
    PayloadTooLargeError,
    SchemaError,
    StorageError,
    StoreUnavailableError,
    UnknownFunctionError,
    UsageError,
)
from duron._host_streams import HostReader, HostWriter
from duron._identity import Operation, current_operation
from duron._job import Job
from duron._job_query import FunctionActivity, JobList
from duron._jobstore import Claim, Heartbeat, JobInfo, JobStatus, JobStore
from duron._limits import LogLimits, LogSize
from duron._options import CallOptions
from duron._retry import Attempt, NonRetryableError, RetryPolicy, failed_attempts
from duron._signal import Signal, SignalInterrupt, SignalWriter
from duron._storage import LogStorage
from duron._store_streams import StoreReader, StoreWriter
from duron._stream import Stream, StreamClosed, StreamWriter
from duron._worker import Worker

__version__ = "0.1.0"

__all__ = [
    "UNANNOTATED",
    "Attempt",
    "CallOptions",
    "ChildJob",
    "Claim",
    "Codec",
    "Context",
    "ContinueAsNew",
    "CorruptLogError",
    "DivergenceKind",
    "DuplicateJobError",
    "DurableFn",
    "DurableLogger",
    "DuronError",
    "EffectError",
    "FunctionActivity",
    "Heartbeat",
    "HostReader",
    "HostWriter",
    "InternalError",
    "JSONValue",
    "Job",
    "JobCancelledError",
    "JobInfo",
    "JobList",
    "JobMismatchError",
    "JobNotFoundError",
    "JobNotStartedError",
    "JobStatus",
    "JobStore",
    "LeaseLostError",
    "LogLimits",
    "LogLockedError",
    "LogSize",
    "LogStorage",
    "NonDeterminismError",
    "NonRetryableError",
    "NondeterministicCallError",
    "Operation",
    "OperationCall",
    "PatchQuery",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "PayloadTooLargeError",
    "Provided",
    "PydanticCodec",
    "Reducer",
    "RetryPolicy",
    "SchemaError",
    "Signal",
    "SignalInterrupt",
    "SignalWriter",
    "StorageError",
    "StoreReader",
    "StoreUnavailableError",
    "StoreWriter",
    "Stream",
    "StreamClosed",
    "StreamWriter",
    "UnknownFunctionError",
    "UsageError",
    "Waiting",
    "Worker",
    "__version__",
    "current_operation",
    "durable",
    "effect",
    "failed_attempts",
]
