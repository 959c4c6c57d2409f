"""The batch progress display."""

from __future__ import annotations

import time
from typing import Any, TextIO

from ._display import Out


class Progress:
    """One progress line: redrawn with \r on a terminal, a plain line every 2 s otherwise."""

    def __init__(self, out: Out, stream: TextIO) -> None:
        self.out, self.stream = out, stream
        self.tty = stream.isatty() and not out.json
        self.last = 0.0

    def __call__(self, p: Any, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        done = p.finished + p.failed
        rate = done / max(now - self.out.t0, 1e-6)
        total = done + p.queued + p.starting + p.running + p.paused
        if self.out.json:
            return
        width = 20
        # Before the first job is known the bar is empty, not full.
        fill = width * done // total if total else (width if final else 0)
        bar = "#" * fill + "-" * (width - fill)
        line = (
            f"[{bar}] queued {p.queued} starting {p.starting} running {p.running} "
            + (f"paused {p.paused} " if p.paused else "")
            + f"finished {p.finished} failed {p.failed} skipped {p.skipped} "
            f"{rate * 60:.1f}/min"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
