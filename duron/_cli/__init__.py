"""The ``duron`` command line: ``duron inspect``, ``duron verify``, ``duron jobs``,
``duron db``, ``duron ui``.

Each subcommand lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``func`` (``(args) -> int`` exit code) as the default.
Exit codes: 0 success, 1 a check failed (e.g. an incompatible log), 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Subcommand modules, imported lazily so that ``duron --help`` stays fast and an
# optional driver is only imported by the command that needs it.
_COMMANDS = ("inspect", "verify", "jobs", "schedules", "db", "ui")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duron",
        description="Inspect, verify and manage Duron job logs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"duron._cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"duron._cli.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    code = func(args)
    return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
