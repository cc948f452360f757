"""``duron schedules`` (add, list, pause, resume, remove) and ``duron queues``
(list, set): a store's schedules and queue limits, by the store URL of
``duron jobs``.

``duron schedules add`` has no code to encode arguments with: it takes the
function's name and its arguments as a JSON object by parameter name, as the
job's log records them (``duron jobs show`` prints them); a tick's job checks
them when it runs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson

from duron._cli.jobs import open_store
from duron._errors import DuronError, UsageError
from duron._queues import Queue, RateLimit
from duron._redact import redact
from duron._schedules import Schedule, ScheduleInfo

if TYPE_CHECKING:
    import argparse

    from duron.contrib._sqlstore import SQLStore

__all__ = ["register"]

_T = TypeVar("_T")
_URL_HELP = (
    "the store: sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://user@host/dbname"
)


def _run(url: str, action: Callable[[SQLStore], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        store: Any = open_store(url)
        try:
            return await action(store)
        finally:
            await store.close()

    return anyio.run(main)


def _command(
    what: str,
) -> Callable[
    [Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]
]:
    """Report a Duron error as one line, exit code 2."""

    def wrap(
        fn: Callable[[argparse.Namespace], int],
    ) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(fn)
        def run(args: argparse.Namespace) -> int:
            try:
                return fn(args)
            except (DuronError, ImportError) as exc:
                print(f"duron {what}: error: {redact(str(exc))}", file=sys.stderr)
                return 2

        return run

    return wrap


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schedules",
        help="add, list, pause, resume and remove the cron schedules of a store",
        description="Manage the cron schedules of a job store (workers start "
        "their ticks' jobs). URL names the store as for `duron jobs`.",
    )
    sub = parser.add_subparsers(
        dest="schedules_command", metavar="ACTION", required=True
    )
    p = sub.add_parser("add", help="add a schedule, or update the one of that name")
    p.add_argument("url", help=_URL_HELP)
    p.add_argument("name", help="the schedule's name")
    p.add_argument("function", help="the durable function's name")
    p.add_argument("cron", help="a cron expression: '0 3 * * *' (quote it)")
    p.add_argument(
        "--args",
        default="{}",
        metavar="JSON",
        help='the arguments, a JSON object by parameter name: \'{"region": "emea"}\'',
    )
    p.add_argument("--timezone", default="UTC", help="an IANA time zone (default UTC)")
    p.add_argument(
        "--missed",
        choices=("latest", "skip"),
        default="latest",
        help="ticks missed while no worker ran: run the latest once, or skip them",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="--missed skip: seconds late a tick still runs",
    )
    p.add_argument("--queue", default="default", help="the queue of its jobs")
    p.add_argument("--priority", type=int, default=0, help="their priority")
    p.set_defaults(func=_add)
    p = sub.add_parser("list", help="list the schedules")
    p.add_argument("url", help=_URL_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_list)
    for action, help_text in (
        ("pause", "stop a schedule's ticks"),
        ("resume", "start a paused schedule's ticks again, from the next one"),
        ("remove", "delete a schedule (its jobs stay)"),
    ):
        p = sub.add_parser(action, help=help_text)
        p.add_argument("url", help=_URL_HELP)
        p.add_argument("name", help="the schedule's name")
        p.set_defaults(func=_change, action=action)

    parser = subparsers.add_parser(
        "queues",
        help="list and set the limits of a store's queues",
        description="Manage the limits of a job store's queues, kept by the "
        "store for every worker. URL names the store as for `duron jobs`.",
    )
    sub = parser.add_subparsers(dest="queues_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list the queues that have limits set")
    p.add_argument("url", help=_URL_HELP)
    p.set_defaults(func=_queues)
    p = sub.add_parser("set", help="set a queue's limits (none given: no limits)")
    p.add_argument("url", help=_URL_HELP)
    p.add_argument("name", help="the queue's name")
    p.add_argument(
        "--concurrency", type=int, help="at most this many of its jobs at once"
    )
    p.add_argument(
        "--rate",
        metavar="N/SECONDS",
        help="at most N of its jobs start within SECONDS: 10/60",
    )
    p.set_defaults(func=_set_queue)


def _info_json(info: ScheduleInfo) -> dict[str, Any]:
    s = info.schedule
    return {
        "name": s.name,
        "cron": s.cron,
        "timezone": s.timezone,
        "missed": s.missed,
        "grace": s.grace,
        "function": info.function,
        "args": info.args,
        "queue": info.queue,
        "priority": info.priority,
        "paused": info.paused,
        "next_at": info.next_at.isoformat(),
        "last_tick": None if info.last_tick is None else info.last_tick.isoformat(),
    }


@_command("schedules")
def _add(args: argparse.Namespace) -> int:
    try:
        call_args = orjson.loads(args.args)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--args is not JSON: {exc}") from None
    schedule = Schedule(args.name, args.cron, args.timezone, args.missed, args.grace)

    async def run(store: SQLStore) -> ScheduleInfo:
        return await store.add_schedule_call(
            schedule, args.function, call_args, queue=args.queue, priority=args.priority
        )

    print(_run(args.url, run))
    return 0


@_command("schedules")
def _list(args: argparse.Namespace) -> int:
    async def run(store: SQLStore) -> list[ScheduleInfo]:
        return await store.schedules()

    for info in _run(args.url, run):
        print(orjson.dumps(_info_json(info)).decode() if args.json else info)
    return 0


@_command("schedules")
def _change(args: argparse.Namespace) -> int:
    async def run(store: SQLStore) -> None:
        calls = {
            "pause": store.pause_schedule,
            "resume": store.resume_schedule,
            "remove": store.remove_schedule,
        }
        await calls[args.action](args.name)

    _run(args.url, run)
    done = {"pause": "paused", "resume": "resumed", "remove": "removed"}[args.action]
    print(f"schedule {args.name} {done}")
    return 0


@_command("queues")
def _queues(args: argparse.Namespace) -> int:
    async def run(store: SQLStore) -> list[Queue]:
        return await store.queues()

    for queue in _run(args.url, run):
        print(queue)
    return 0


@_command("queues")
def _set_queue(args: argparse.Namespace) -> int:
    rate = None
    if args.rate is not None:
        starts, sep, per = args.rate.partition("/")
        try:
            rate = RateLimit(int(starts), float(per))
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--rate takes N/SECONDS (10/60), not {args.rate!r}")
    queue = Queue(args.name, args.concurrency, rate)

    async def run(store: SQLStore) -> None:
        await store.set_queue(queue)

    _run(args.url, run)
    print(queue)
    return 0
