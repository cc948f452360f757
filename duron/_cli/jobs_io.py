"""``duron jobs send``, ``complete`` and ``tail``: a job's input and output, by job id.

They go through the store like any process would (``store.open_stream``,
``store.complete_future``): the value is checked against the job's durable
function, which the CLI finds by importing the module the job entry records
(from the current directory, or name it with ``--import MODULE``).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson

from duron._errors import DuronError, UsageError
from duron._redact import redact

if TYPE_CHECKING:
    import argparse

    from duron._jobstore import JobStore

__all__ = ["add_imports", "register_io"]

_T = TypeVar("_T")


def register_io(sub: Any, url_help: str) -> None:
    """Add ``send``, ``complete`` and ``tail`` to ``duron jobs``."""
    p = sub.add_parser(
        "send",
        help="send a value to a job's Stream or Signal parameter (or close it)",
        description="Store a value for a job's Stream[T] or Signal[T] parameter; "
        "the job records it when it receives it. The value is JSON, checked "
        "against the parameter's type.",
    )
    p.add_argument("url", help=url_help)
    p.add_argument("job_id")
    p.add_argument("name", help="the parameter's name")
    p.add_argument("value", nargs="?", help="the value, as JSON ('\"text\"', 3, {...})")
    p.add_argument("--close", action="store_true", help="close the stream instead")
    p.add_argument(
        "--error", metavar="MSG", help="with --close: readers raise RuntimeError(MSG)"
    )
    _import_option(p)
    p.set_defaults(func=_send)

    p = sub.add_parser(
        "complete",
        help="complete a job's durable future (ctx.create_future) with a result or error",
    )
    p.add_argument("url", help=url_help)
    p.add_argument("job_id")
    p.add_argument("future_id", help="the id ctx.create_future returned")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--result", metavar="JSON", help="the result, as JSON")
    group.add_argument(
        "--error",
        metavar="MSG",
        help="fail the future: its await raises RuntimeError(MSG)",
    )
    _import_option(p)
    p.set_defaults(func=_complete)

    p = sub.add_parser(
        "tail",
        help="print what a job sends on a StreamWriter parameter, one JSON value a line",
    )
    p.add_argument("url", help=url_help)
    p.add_argument("job_id")
    p.add_argument("name", help="the StreamWriter parameter's name")
    p.add_argument(
        "--from",
        dest="start",
        type=int,
        default=0,
        help="the index of the first value to print (default 0)",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="wait for more until the stream or the job ends",
    )
    _import_option(p)
    p.set_defaults(func=_tail)


def _import_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        default=[],
        help="import this module first (where the job's durable function is "
        "defined; repeat for several)",
    )


# -- helpers ------------------------------------------------------------------------


def _on_store(url: str, action: Callable[[JobStore], Awaitable[_T]]) -> _T:
    from duron._cli.jobs import open_store

    async def main() -> _T:
        store = open_store(url)
        try:
            return await action(store)
        finally:
            await store.close()

    return anyio.run(main)


def _command(
    fn: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A Duron error as one line on stderr, exit code 2; never a traceback."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            add_imports(args.imports)
            return fn(args)
        except DuronError as exc:
            print(f"duron jobs: error: {redact(str(exc))}", file=sys.stderr)
            return 2

    return run


def add_imports(modules: list[str]) -> None:
    """The current directory on the path (as ``python -m`` has it), then import
    the modules the user named."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise UsageError(f"--import {name}: {type(exc).__name__}: {exc}") from None


def _json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(
            f'{what} must be JSON (\'"text"\', 3, true, {{"k": 1}}): {text!r} is not '
            f"({exc})"
        ) from None


def _store_api(store: JobStore) -> Any:
    """The store's input and output verbs (the SQL stores have them)."""
    if not hasattr(store, "open_stream"):  # pragma: no cover - both stores do
        raise UsageError(f"store {store.label} takes no input by job id")
    return store


# -- actions ------------------------------------------------------------------------


@_command
def _send(args: argparse.Namespace) -> int:
    if args.close == (args.value is not None):
        raise UsageError("give a VALUE to send, or --close (not both)")
    if args.error is not None and not args.close:
        raise UsageError("--error goes with --close")
    value = None if args.close else _json(args.value, "VALUE")

    async def run(store: JobStore) -> None:
        writer = await _store_api(store).open_stream(args.job_id, args.name, "w")
        if args.close:
            error = RuntimeError(args.error) if args.error is not None else None
            await writer.close(error)
        else:
            await writer.send(value)

    _on_store(args.url, run)
    what = "close" if args.close else "value"
    print(f"job {args.job_id}: {what} for {args.name!r} stored; the job records it")
    return 0


@_command
def _complete(args: argparse.Namespace) -> int:
    result = None if args.result is None else _json(args.result, "--result")
    error = RuntimeError(args.error) if args.error is not None else None

    async def run(store: JobStore) -> None:
        await _store_api(store).complete_future(
            args.job_id, args.future_id, result=result, exception=error
        )

    _on_store(args.url, run)
    print(
        f"job {args.job_id}: result of future {args.future_id} stored; the job records it"
    )
    return 0


@_command
def _tail(args: argparse.Namespace) -> int:
    if args.start < 0:
        raise UsageError(f"--from takes an index >= 0, not {args.start}")

    async def run(store: JobStore) -> None:
        reader = await _store_api(store).open_stream(
            args.job_id, args.name, "r", start=args.start, follow=args.follow
        )
        async for value in reader:
            data = orjson.dumps(value, default=_plain)
            sys.stdout.write(data.decode() + "\n")
            sys.stdout.flush()

    try:
        _on_store(args.url, run)
    except DuronError:
        raise
    except Exception as exc:  # a stream the job closed with an error
        print(
            f"duron jobs: the stream ended with an error: {type(exc).__name__}: "
            f"{redact(str(exc))}",
            file=sys.stderr,
        )
        return 1
    return 0


def _plain(value: Any) -> Any:
    """A decoded value orjson cannot write by itself (a pydantic model...)."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"{type(value).__qualname__} has no JSON form")
