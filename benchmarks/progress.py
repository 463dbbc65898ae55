"""A text progress bar on stderr: redrawn in place on a terminal, one line per case elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_WIDTH = 28


class Progress:
    """Progress over ``total`` cases, each advancing from 0 to 1 through ``update``."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self._index = 0
        self._title = ""
        self._drawn = 0.0
        self._width = 0
        self._started = time.monotonic()

    def start_case(self, index: int, title: str) -> None:
        """Case ``index`` (from 0) begins."""
        self._index, self._title = index, title
        if self.live:
            self.update(0.0, "", force=True)
        else:
            self.stream.write(f"{self._line(0.0, '')}\n")
            self.stream.flush()

    def update(self, fraction: float, detail: str, *, force: bool = False) -> None:
        """The current case is ``fraction`` done, doing ``detail`` (redrawn at most 10 times/s)."""
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        line = self._line(fraction, detail)
        pad = max(self._width - len(line), 0)
        self._width = len(line)
        self.stream.write(f"\r{line}{' ' * pad}")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (a warning), keeping the bar below it."""
        self.clear()
        self.stream.write(f"{text}\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bar (before the table is printed)."""
        if self.live and self._width:
            self.stream.write(f"\r{' ' * self._width}\r")
            self.stream.flush()
            self._width = 0

    def _line(self, fraction: float, detail: str) -> str:
        overall = (self._index + min(max(fraction, 0.0), 1.0)) / self.total
        filled = round(overall * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        elapsed = time.monotonic() - self._started
        text = f"[{bar}] {self._index + 1}/{self.total} {elapsed:4.0f}s {self._title}"
        if detail:
            text += f" - {detail}"
        return text[:160]
