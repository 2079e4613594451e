"""One progress-bar helper (rich) with a global off switch.

``set_progress(False)`` or ``LAYERLAKE_PROGRESS=0`` turns bars off, ``with
override(False):`` for a block; by default they show only when stderr is a terminal. Library code never prints otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Iterator

_ENABLED: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on/off; ``None`` restores the default (stderr is a TTY)."""
    global _ENABLED
    _ENABLED = enabled


@contextlib.contextmanager
def override(enabled: bool | None) -> Iterator[None]:
    """``with override(False): ...`` forces bars on/off inside the block (``None``: leave as is)."""
    global _ENABLED
    previous = _ENABLED
    if enabled is not None:
        _ENABLED = enabled
    try:
        yield
    finally:
        _ENABLED = previous


def progress_enabled() -> bool:
    if _ENABLED is not None:
        return _ENABLED
    env = os.environ.get("LAYERLAKE_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


class Tracker:
    """Counts work done and (optionally) draws it; rates are always computed."""

    def __init__(self, description: str, total: float | None, unit: str, bar: Any = None, task: Any = None) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0.0
        self.tokens = 0
        self.bytes = 0
        self.start = time.monotonic()
        self._bar = bar
        self._task = task

    def advance(self, n: float = 1, *, tokens: int = 0, nbytes: int = 0) -> None:
        self.done += n
        self.tokens += tokens
        self.bytes += nbytes
        if self._bar is not None:
            el = max(time.monotonic() - self.start, 1e-9)
            self._bar.update(self._task, advance=n,
                             rate=f"{self.tokens / el:,.0f} tok/s  {self.bytes / el / 1e6:,.1f} MB/s")

    def add_bytes(self, nbytes: int) -> None:
        self.advance(0, nbytes=nbytes)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


@contextlib.contextmanager
def track(description: str, total: float | None = None, unit: str = "docs") -> Iterator[Tracker]:
    """``with track("ingest", total=n) as t: t.advance(k, tokens=..)``."""
    if not progress_enabled():
        yield Tracker(description, total, unit)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn(unit), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False)
    with bar:
        task = bar.add_task(description, total=total, rate="")
        yield Tracker(description, total, unit, bar, task)
