"""A progress bar on stderr for long runs: rich's when installed, else one plain line.

It appears only on a terminal, and only once a run has lasted half a second, so
short runs and piped output stay clean. Updates are cheap: the bar is redrawn at
most ten times a second whatever the number of entries read.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

__all__ = ["Progress", "progress_bar"]

_DELAY = 0.5
_INTERVAL = 0.1


class Progress(Protocol):
    def log_started(self, index: int, size: int | None) -> None:
        """Log ``index`` (0-based) begins; ``size`` in bytes when known."""
        ...

    def entry(self, offset: int) -> None:
        """An entry at ``offset`` of the current log was read."""
        ...

    def close(self) -> None:
        """Remove the bar."""
        ...


class _Silent:
    def log_started(self, index: int, size: int | None) -> None:
        return None

    def entry(self, offset: int) -> None:
        return None

    def close(self) -> None:
        return None


class _Bar:
    """Tracks progress as a fraction: by bytes when every log's size is known."""

    def __init__(
        self, what: str, sizes: list[int | None], stream: TextIO, use_rich: bool
    ) -> None:
        self.what = what
        self.sizes = sizes
        self.stream = stream
        self.use_rich = use_rich
        self.by_bytes = (
            all(s is not None for s in sizes) and sum(s or 0 for s in sizes) > 0
        )
        self.total = sum(s or 0 for s in sizes) if self.by_bytes else len(sizes)
        self.base = 0.0  # progress of the logs already done
        self.size: int | None = None
        self.index = 0
        self.started = time.monotonic()
        self.next_draw = self.started + _DELAY
        self._rich: Any = None
        self._task: Any = None
        self._drawn = False

    def log_started(self, index: int, size: int | None) -> None:
        self.index = index
        if self.by_bytes:
            self.base = float(sum(s or 0 for s in self.sizes[:index]))
        else:
            self.base = float(index)
        self.size = size
        self._maybe_draw(self.base)

    def entry(self, offset: int) -> None:
        now = time.monotonic()
        if now < self.next_draw:
            return
        size = self.size
        if self.by_bytes:
            done = self.base + offset
        elif size:
            done = self.base + min(offset / size, 1.0)
        else:
            done = self.base
        self._draw(done, now)

    def _maybe_draw(self, done: float) -> None:
        now = time.monotonic()
        if now >= self.next_draw:
            self._draw(done, now)

    def _draw(self, done: float, now: float) -> None:
        self.next_draw = now + _INTERVAL
        count = f"{min(self.index + 1, len(self.sizes))}/{len(self.sizes)} logs"
        if self.use_rich:
            if self._rich is None:
                self._start_rich()
            self._rich.update(self._task, completed=done, count=count)
            return
        pct = int(100 * done / self.total) if self.total else 100
        width = 30
        filled = width * pct // 100
        line = (
            f"\r{self.what} [{'#' * filled}{'.' * (width - filled)}] {pct:3d}% {count}"
        )
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self._rich = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[count]}"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=True,
        )
        self._task = self._rich.add_task(self.what, total=self.total, count="")
        self._rich.start()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self._drawn:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()
            self._drawn = False


def progress_bar(
    what: str,
    sizes: list[int | None],
    *,
    enabled: bool = True,
    stream: TextIO | None = None,
    force: bool = False,
) -> Progress:
    """A progress bar over logs of these sizes, or a silent one off a terminal.

    Args:
        what: The label (``"verifying"``).
        sizes: Each log's size in bytes, ``None`` when unknown (a store's log).
        enabled: False for ``--no-progress``.
        stream: Where to draw (stderr).
        force: Draw even off a terminal (tests).
    """
    out = stream if stream is not None else sys.stderr
    if not enabled or not (force or _isatty(out)):
        return _Silent()
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        use_rich = False
    else:
        use_rich = not force
    return _Bar(what, sizes, out, use_rich)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
