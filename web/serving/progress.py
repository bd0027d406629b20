"""Progress of a long command-line operation (snapshot export, download): a bar redrawn in
place on a terminal, a plain line every ``LINE_INTERVAL_S`` seconds otherwise (a log, a pipe,
systemd's journal), always with units, totals when known, and a rate.

Recovery inside the server reports through ``logging`` instead (``snapshots/store.py``): the
server's stderr is a log, never a terminal to redraw.
"""

from __future__ import annotations

import sys
import time
from typing import Literal, TextIO

Unit = Literal["bytes", "entities", "instants"]

#: A terminal bar is redrawn at most this often (a fast copy would otherwise spend its time
#: writing escape codes).
REDRAW_INTERVAL_S = 0.1
#: Off a terminal, a line at most this often (the same pace as recovery's lines).
LINE_INTERVAL_S = 2.0
BAR_WIDTH = 24
MIB = 1024 * 1024


def amount(value: float, unit: Unit) -> str:
    """``12.3 MiB``, ``1,234 entities`` or ``1,234 instants``."""
    return f"{value / MIB:,.1f} MiB" if unit == "bytes" else f"{int(value):,} {unit}"


class Progress:
    """Counts work done (``update(n)``) against an optional ``total``; ``estimated`` marks a
    total the server guessed (``~``). Use as a context manager: the last state is written
    when it ends."""

    def __init__(
        self, label: str, *, unit: Unit, total: int | None = None, estimated: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.unit: Unit = unit
        self.total = total if total else None
        self.estimated = estimated
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self._t0 = self._last = time.perf_counter()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._write(final=True)

    def set_total(self, total: int) -> None:
        """The total, once known (after work began)."""
        self.total = total if total else None

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= (REDRAW_INTERVAL_S if self.tty else LINE_INTERVAL_S):
            self._last = now
            self._write(final=False)

    def describe(self) -> str:
        """``downloading: 45.1 of ~120.3 MiB (37%), 12.3 MiB/s``."""
        rate = self.done / max(time.perf_counter() - self._t0, 1e-9)
        text = f"{self.label}: {amount(self.done, self.unit)}"
        if self.total:
            whole = amount(self.total, self.unit)
            text = f"{self.label}: {amount(self.done, self.unit).split()[0]} of {'~' if self.estimated else ''}{whole}"
            text += f" ({min(100, 100 * self.done // self.total)}%)"
        return f"{text}, {amount(rate, self.unit)}/s"

    def _write(self, *, final: bool) -> None:
        if self.tty:
            bar = ""
            if self.total:
                filled = min(BAR_WIDTH, BAR_WIDTH * self.done // self.total)
                bar = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "] "
            self.stream.write("\r\x1b[K" + bar + self.describe() + ("\n" if final else ""))
        elif not final or self.done:
            self.stream.write(self.describe() + "\n")
        self.stream.flush()
