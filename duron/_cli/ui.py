"""``duron ui TARGET``: serve a local web view of the jobs TARGET holds.

TARGET is a store URL (``sqlite:///jobs.db``, ``postgresql://...``), a log file or
a directory of logs. The server listens on 127.0.0.1 unless ``--host`` names
another address (which prints a warning: whoever reaches it reads every job's
arguments and results). The page is read-only unless ``--allow-actions``.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, Any

from duron._errors import DuronError
from duron._redact import redact

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]

_MISSING = "duron ui needs Starlette and uvicorn: pip install 'duron[ui]'"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ui",
        help="serve a local web view of jobs and their timelines",
        description=(
            "Serve a local web page of the jobs of TARGET: a store URL "
            "(sqlite:///jobs.db, postgresql://user@host/dbname), a log file or a "
            "directory of *.jsonl logs. It listens on 127.0.0.1 and prints its URL; "
            "the page is read-only unless --allow-actions."
        ),
    )
    p.add_argument(
        "target", metavar="TARGET", help="a store URL, a log file or a directory"
    )
    p.add_argument(
        "--port",
        type=int,
        default=8765,
        help="the port (default 8765; 0: any free one)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1; any other prints a "
        "warning: whoever reaches it reads every job)",
    )
    p.add_argument(
        "--allow-actions",
        action="store_true",
        help="offer cancel, requeue, complete a future and send input (each "
        "confirmed first); a store's jobs only",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        default=[],
        help="import this module first (where the jobs' durable functions are "
        "defined: sending input checks the value against them)",
    )
    p.set_defaults(func=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from duron._ui.app import make_app
    except ImportError:
        print(f"duron ui: {_MISSING}", file=sys.stderr)
        return 2
    from duron._cli.jobs_io import add_imports
    from duron._ui.sources import open_source

    if not 0 <= args.port <= 65535:
        print(f"duron ui: --port takes 0 to 65535, not {args.port}", file=sys.stderr)
        return 2
    try:
        add_imports(args.imports)
        source = open_source(args.target)
    except DuronError as exc:
        print(f"duron ui: {redact(str(exc), dsn=args.target)}", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        print(
            f"duron ui: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    sock.listen(128)  # connections wait from the moment the URL is printed
    port = sock.getsockname()[1]
    hosts = ["127.0.0.1", "localhost", "::1"]
    if not _loopback(args.host):
        hosts = ["*"]
        print(
            f"duron ui: warning: listening on {args.host}, not on this machine "
            "alone: whoever reaches it reads every job's arguments and results"
            + (" and can act on them" if args.allow_actions else ""),
            file=sys.stderr,
        )
    app = make_app(source, allow_actions=args.allow_actions, allowed_hosts=hosts)
    shown = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    mode = "actions allowed" if args.allow_actions else "read-only"
    print(f"duron ui: {source.label} at http://{shown}:{port}/ ({mode})", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
