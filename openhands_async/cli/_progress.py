"""The live progress of a batch.

On a terminal with rich: a two-line live display redrawn on a timer (so the rate and the
clock stay current), lines printed meanwhile appear above it, and it never draws wider
than the terminal. Otherwise: a plain line when the counts change (at most one every
2 s) and a last one at the end; no carriage returns, no ANSI codes.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, TextIO

from ._display import Out, clock, fit

try:  # the optional `cli` extra
    from rich.console import Group, RenderableType
    from rich.live import Live
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text
except ImportError:  # pragma: no cover - exercised by a test that hides rich
    pass

_PLAIN_EVERY = 2.0


class BatchDisplay:
    """Use as a context manager; pass the instance as the batch's `on_progress`.

    `total` is the number of jobs when known (a file or a list): the bar measures against
    it and `queued` counts the jobs not started yet. Unknown, the bar pulses.
    """

    def __init__(self, out: Out, total: int | None, plain: TextIO) -> None:
        self.out, self.total, self.plain = out, total, plain
        self.progress: Any = None
        self.t0 = time.monotonic()
        self._live: Live | None = None
        self._last_plain: tuple[int, ...] | None = None
        self._last_plain_at = 0.0

    # ------------------------------------------------------------------ counts

    def counts(self) -> dict[str, int]:
        p = self.progress
        names = ("starting", "running", "paused", "finished", "failed", "skipped")
        c = {name: int(getattr(p, name, 0) or 0) for name in names}
        accounted = sum(c.values())
        if self.total is not None:
            # Jobs are read lazily, so the batch's own `queued` only counts jobs read but
            # not started; with the total known, everything not yet accounted for waits.
            queued = max(0, self.total - accounted)
        else:
            queued = int(getattr(p, "queued", 0) or 0)
        return {"queued": queued, **c}

    def _completed(self, c: dict[str, int]) -> int:
        completed = c["finished"] + c["failed"] + c["skipped"]
        # Never past the total: a resumed run may count a recovered job both as skipped
        # (seen in the journal) and as finished (followed to its end).
        return min(completed, self.total) if self.total is not None else completed

    def _texts(self) -> tuple[str, str]:
        c = self.counts()
        done = c["finished"] + c["failed"]
        elapsed = time.monotonic() - self.t0
        rate = done / elapsed * 60 if elapsed > 0 else 0.0
        of = f"{self._completed(c)}/{self.total if self.total is not None else '?'}"
        head = f"{of} done  {rate:.1f}/min  {clock(elapsed)}"
        shown = [
            f"{name} {n}"
            for name, n in c.items()
            if n or name in ("queued", "running", "finished", "failed")
        ]
        return head, "  ".join(shown)

    # ------------------------------------------------------------------ live display

    def _render(self) -> RenderableType:
        head, counts = self._texts()
        assert self.out.console is not None
        width = self.out.console.width
        c = self.counts()
        completed = self._completed(c)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        bar = ProgressBar(
            total=float(self.total) if self.total else None,
            completed=float(completed),
            width=max(10, width - len(head) - 2),
        )
        grid.add_row(bar, Text(fit(head, width - 12)))
        return Group(grid, Text(fit(counts, width - 1)))

    def __enter__(self) -> BatchDisplay:
        if self.out.console is not None:
            self._live = Live(
                console=self.out.console,
                get_renderable=self._render,
                refresh_per_second=4,
            )
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()  # draws once more: the last counts stay on screen
        elif not self.out.json and exc_type is None:
            self._plain(final=True)

    # ------------------------------------------------------------------ updates

    def __call__(self, progress: Any) -> None:
        self.progress = progress  # read again at each redraw: the live display is on a timer
        if self._live is None and not self.out.json:
            self._plain(final=False)

    def _plain(self, final: bool) -> None:
        state = tuple(self.counts().values())
        now = time.monotonic()
        if not final and (state == self._last_plain or now - self._last_plain_at < _PLAIN_EVERY):
            return
        self._last_plain, self._last_plain_at = state, now
        head, counts = self._texts()
        print(f"progress: {head}; {counts}", file=self.plain, flush=True)
