"""A bar per stage on the terminal, redrawn in place; silent when not enabled.

    encode given state  [###########.........]  11/20
    rebase (serial)     [####................]   4/20

Drawn on stderr only when it is a terminal, so logs and pipes get no control characters.
Redraws are limited to about ten a second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_BAR_WIDTH = 24
_MIN_INTERVAL = 0.1


class Progress:
    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._drawn_lines = 0
        self._last_draw = 0.0

    def add_stage(self, label: str, total: int) -> None:
        if total > 0:
            self._totals[label] = total
            self._done[label] = 0
            self._draw(force=True)

    def advance(self, label: str) -> None:
        if label in self._done:
            self._done[label] += 1
            self._draw(force=self._done[label] == self._totals[label])

    def update(self, label: str, done: int, total: int) -> None:
        """Set a stage's count outright (one polled from elsewhere), adding it if new."""
        if total <= 0:
            return
        finished = done >= total and self._done.get(label) != done
        new = label not in self._totals
        self._totals[label], self._done[label] = total, min(done, total)
        self._draw(force=new or finished)

    def close(self) -> None:
        """Draw the final state and leave it; later stages are drawn below it."""
        self._draw(force=True)
        self._totals.clear()
        self._drawn_lines = 0

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < _MIN_INTERVAL:
            return
        self._last_draw = now
        width = max(map(len, self._totals), default=0)
        lines = [self._line(label, width) for label in self._totals]
        # Move up over the previous drawing, then rewrite every line (erasing its rest).
        up = f"\x1b[{self._drawn_lines}F" if self._drawn_lines else ""
        self.stream.write(up + "".join(f"{line}\x1b[K\n" for line in lines))
        self.stream.flush()
        self._drawn_lines = len(lines)

    def _line(self, label: str, width: int) -> str:
        total, done = self._totals[label], self._done[label]
        filled = _BAR_WIDTH * done // total
        digits = len(str(total))
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        return f"{label:<{width}}  [{bar}]  {done:>{digits}}/{total}"
