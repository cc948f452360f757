"""``duron verify TARGET LOG...``: does today's code still replay these logs?

Each log is replayed against the durable function without running any effect and
without writing anything (see :mod:`duron._verify`); one line per log says ``ok``,
``INCOMPATIBLE`` with the first difference, or ``NOT CHECKABLE`` with the reason.

Exit status: 0 when every log is ok; 1 when any is incompatible; 2 when none is
incompatible but some could not be checked (damaged, empty, unreadable, another
function's log), and for usage errors (a target that does not import, no log given).
A build fails either way; 1 says "the code changed", 2 says "fix the inputs".
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import anyio

from duron._durable import DurableFn
from duron._errors import DuronError, UsageError
from duron._redact import redact

if TYPE_CHECKING:
    from duron._cli._sources import LogRef, Stores
    from duron._verify import VerifyReport

__all__ = ["load_target", "register", "run"]

_STATUSES = ("pending", "running", "suspended", "completed", "failed", "cancelled")

HELP = """\
Replay job logs against the current code without running any effect, and report
for each log: ok, INCOMPATIBLE (the first difference: position, what the log
recorded, what the code now asks for; or a recorded payload that no longer
validates), or NOT CHECKABLE (damaged, empty, or another function's log).

TARGET is MODULE:FUNCTION (a @duron.durable function) or MODULE (every durable
function defined in it; each log is checked against the one it names). The
current directory is put first on sys.path, as `python -m` does.

LOG is a file path, or a job in a store: sqlite:///jobs.db#job-id. A store URL
without #job-id (or --store URL) checks every job of the store that belongs to
the target's functions.

exit status: 0 all ok, 1 some log incompatible, 2 some log not checkable (and
none incompatible) or a usage error.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="check that the current code still replays job logs",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="TARGET", help="MODULE:FUNCTION or MODULE")
    p.add_argument(
        "logs", metavar="LOG", nargs="*", help="log files or sqlite:///DB#JOB_ID"
    )
    p.add_argument(
        "--store",
        metavar="URL",
        action="append",
        default=[],
        help="a job store (sqlite:///jobs.db); with --job, only those jobs",
    )
    p.add_argument(
        "--job",
        metavar="ID",
        action="append",
        default=[],
        help="a job id in --store (repeat for several)",
    )
    p.add_argument(
        "--status",
        action="append",
        choices=_STATUSES,
        default=[],
        help="with a whole store: only jobs with this status (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print only the logs that fail"
    )
    p.add_argument(
        "--no-progress", action="store_true", help="never show a progress bar"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        functions = load_target(args.target)
    except UsageError as err:
        print(f"duron verify: {redact(str(err))}", file=sys.stderr)
        return 2
    if args.job and len(args.store) != 1:
        print("duron verify: --job needs exactly one --store URL", file=sys.stderr)
        return 2
    if not (args.logs or args.store):
        print(
            "duron verify: no log to check: give LOG paths or --store URL",
            file=sys.stderr,
        )
        return 2
    try:
        reports = anyio.run(_verify_all, functions, args)
    except DuronError as err:
        print(f"duron verify: {redact(str(err))}", file=sys.stderr)
        return 2
    code = exit_code(reports)
    if args.json:
        doc = {
            "target": args.target,
            "functions": sorted(functions),
            "exit_code": code,
            "counts": _counts(reports),
            "logs": [r.to_json() for r in reports],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif len(reports) > 1:
        print(_summary(reports))
    return code


def exit_code(reports: list[VerifyReport]) -> int:
    """0 all ok, 1 any incompatible, 2 any not checkable (and none incompatible)."""
    if any(r.status == "incompatible" for r in reports):
        return 1
    if any(r.status == "uncheckable" for r in reports):
        return 2
    return 0


def load_target(target: str) -> dict[str, DurableFn[..., Any]]:
    """Import ``MODULE:FUNCTION`` (or every durable function of ``MODULE``).

    Returns:
        The durable functions by recorded name.

    Raises:
        UsageError: The module does not import, or holds no such durable function.
    """
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise UsageError(f"{target!r} is not MODULE:FUNCTION")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does: the project's modules import
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UsageError(
                f"cannot import {module_name}: no module named {missing!r} "
                f"(looked in {cwd} and the installed packages)"
            ) from None
        raise UsageError(
            f"importing {module_name} failed:\n{traceback.format_exc()}"
        ) from err
    except Exception as err:
        raise UsageError(
            f"importing {module_name} failed:\n{traceback.format_exc()}"
        ) from err
    if not attr:
        found: dict[str, DurableFn[..., Any]] = {}
        for key, value in vars(module).items():
            if not isinstance(value, DurableFn):
                continue
            other = found.setdefault(value.name, value)
            if other.fn is not value.fn:  # fn.options(...) is the same function
                raise UsageError(
                    f"module {module_name} holds several durable functions recorded "
                    f"as {value.name!r} ({other.__name__}, {key}): name the one to "
                    f"check, e.g. {module_name}:{key}"
                )
        if not found:
            raise UsageError(f"module {module_name} defines no @duron.durable function")
        return found
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"module {module_name} has no attribute {attr!r}"
            ) from None
    if not isinstance(obj, DurableFn):
        raise UsageError(
            f"{target} is not a @duron.durable function (it is "
            f"{type(obj).__qualname__})"
        )
    return {obj.name: obj}


async def _verify_all(
    functions: dict[str, DurableFn[..., Any]], args: argparse.Namespace
) -> list[VerifyReport]:
    from duron._cli._progress import progress_bar
    from duron._cli._sources import Stores
    from duron._verify import verify_log

    stores = Stores()
    try:
        refs = await _refs(stores, functions, args)
        width = max((len(r.label) for r in refs), default=0)
        progress = progress_bar(
            "verifying", [r.size for r in refs], enabled=not args.no_progress
        )
        reports = []
        color = not args.json and _color(sys.stdout)
        try:
            for i, ref in enumerate(refs):
                progress.log_started(i, ref.size)
                report = await verify_log(
                    functions, ref.storage, on_entry=progress.entry
                )
                if report.log != ref.label:
                    report = dataclasses.replace(report, log=ref.label)
                reports.append(report)
                if args.json or (args.quiet and report.ok):
                    continue
                progress.close()
                print(format_report(report, width, color=color), flush=True)
        finally:
            progress.close()
        return reports
    finally:
        await stores.aclose()


async def _refs(
    stores: Stores, functions: dict[str, DurableFn[..., Any]], args: argparse.Namespace
) -> list[LogRef]:
    from duron._cli._sources import is_store_url, split_job

    refs = []
    whole: list[str] = []
    for arg in args.logs:
        if is_store_url(arg) and split_job(arg)[1] is None:
            whole.append(arg)
        else:
            refs.append(stores.log(arg))
    if args.job:
        refs += [stores.job(args.store[0], job) for job in args.job]
    else:
        whole += args.store
    for url in whole:
        for info in await stores.jobs(url, args.status):
            if info.function in functions:
                refs.append(stores.job(url, info.id))
    if not refs:
        raise UsageError(
            "no log to check: the store holds no job of "
            + " or ".join(sorted(functions))
        )
    return refs


def format_report(report: VerifyReport, width: int = 0, *, color: bool = False) -> str:
    """One log's verdict: ``label  VERDICT  detail``, continuation lines aligned."""
    verdict = report.verdict
    shown = verdict
    if color:
        code = {"ok": "32", "incompatible": "1;31", "uncheckable": "1;33"}[
            report.status
        ]
        shown = f"\033[{code}m{verdict}\033[0m"
    head = f"{report.log:<{width}}  {shown}"
    if not report.detail:
        return head.rstrip()
    pad = " " * (max(width, len(report.log)) + 2 + len(verdict) + 2)
    first, *rest = report.detail.split("\n")
    return "\n".join([f"{head}  {first}", *(pad + line for line in rest)])


def _counts(reports: list[VerifyReport]) -> dict[str, int]:
    counts = {"ok": 0, "incompatible": 0, "uncheckable": 0}
    for r in reports:
        counts[r.status] += 1
    return counts


def _summary(reports: list[VerifyReport]) -> str:
    c = _counts(reports)
    parts = [f"{c['ok']} ok"]
    if c["incompatible"]:
        parts.append(f"{c['incompatible']} incompatible")
    if c["uncheckable"]:
        parts.append(f"{c['uncheckable']} not checkable")
    return f"{len(reports)} logs: {', '.join(parts)}"


def _color(stream: Any) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
