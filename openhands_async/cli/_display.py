"""What a person (or, with --json, a program) reads: output lines, tables, status texts.

On a terminal, with the `cli` extra (rich) installed, lines go through a rich console: cut
to the terminal's width (never wrapped), and printed above a live display when one runs.
Otherwise they are plain lines: no carriage returns, no ANSI codes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

try:  # the optional `cli` extra
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
except ImportError:  # pragma: no cover - exercised by a test that hides rich
    Console = None  # type: ignore[assignment,misc]

MISSING = "-"
NO_REPLY = "no reply yet"


def show(value: object) -> str:
    """A value for people: "-" where there is none."""
    return MISSING if value is None or value == "" else str(value)


def one_line(text: str) -> str:
    """Line breaks and tabs as spaces (a message's newlines would break a row apart)."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")


def fit(text: str, width: int | None) -> str:
    """`text` on one line of at most `width` characters ("…" marks a cut)."""
    text = one_line(text)
    if width is None or len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def terminal_console(stream: TextIO) -> Console | None:
    """A rich console when `stream` is a terminal and rich is installed, else None."""
    if Console is None or not stream.isatty() or os.environ.get("TERM") == "dumb":
        return None
    return Console(file=stream, highlight=False, emoji=False)


class Out:
    """Human lines or, with --json, one JSON object per line."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.json = as_json
        self.stream = stream or sys.stdout
        self.console = None if as_json else terminal_console(self.stream)
        self.t0 = time.monotonic()
        #: Ids the command follows, named in the Ctrl-C message (the agent keeps running).
        self.following: list[str] = []
        #: Or, for a batch, what to say on Ctrl-C.
        self.interrupt_hint: str | None = None

    @property
    def width(self) -> int | None:
        """The terminal's width, or None when the output is not a terminal."""
        if self.console is not None:
            return self.console.width
        if self.stream.isatty():
            return shutil.get_terminal_size().columns
        return None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def line(self, text: str) -> None:
        """One or more lines for people; each cut to the terminal's width."""
        if self.console is not None:
            for part in text.split("\n"):
                # Cut here too: rich wraps a Text whose own no_wrap is set.
                self.console.print(
                    Text(fit(part, self.console.width)), no_wrap=True, overflow="ellipsis"
                )
            return
        width = self.width
        for part in text.split("\n"):
            print(part if width is None else fit(part, width), file=self.stream, flush=True)

    def emit(self, obj: dict[str, Any], text: str) -> None:
        if self.json:
            print(json.dumps(obj, default=str), file=self.stream, flush=True)
        else:
            self.line(text)

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        keep: Sequence[int] = (),
        middle: Sequence[int] = (),
    ) -> None:
        """A table no wider than the terminal: columns in `keep` are never cut, the others
        shrink to fit (cut in the middle for columns in `middle`, so keys that differ at
        their end stay apart; at the end otherwise)."""
        # Not on a terminal: 80 columns (or $COLUMNS), so a file or a pager shows it whole.
        widths = _layout(headers, rows, keep, self.width or _columns())
        cut = [
            [(cut_middle if n in middle else fit)(cell, widths[n]) for n, cell in enumerate(row)]
            for row in rows
        ]
        if self.console is not None:
            table = Table(box=None, padding=(0, _GAP, 0, 0), pad_edge=False, header_style="bold")
            for n, header in enumerate(headers):
                table.add_column(header, width=widths[n], no_wrap=True, overflow="ellipsis")
            for row in cut:
                table.add_row(*(Text(cell) for cell in row))
            self.console.print(table)
            return
        for row in [[fit(h, w) for h, w in zip(headers, widths, strict=True)], *cut]:
            cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
            self.line((" " * _GAP).join(cells).rstrip())


_GAP = 2  # spaces between table columns
_MIN_CELL = 6


def _layout(
    headers: Sequence[str], rows: Sequence[Sequence[str]], keep: Sequence[int], width: int | None
) -> list[int]:
    """Column widths: natural ones, the shrinkable columns narrowed (widest first) until
    the table fits `width`."""
    widths = [max([len(h)] + [len(r[n]) for r in rows]) for n, h in enumerate(headers)]
    if width is None:
        return widths
    room = width - _GAP * (len(widths) - 1) - 1  # the last column never reaches the edge
    while sum(widths) > room:
        n = max((n for n in range(len(widths)) if n not in keep), key=lambda n: widths[n])
        if widths[n] <= _MIN_CELL:
            break
        widths[n] -= 1
    return widths


def _columns() -> int:
    try:
        return int(os.environ.get("COLUMNS", "")) or 80
    except ValueError:
        return 80


def cut_middle(text: str, width: int) -> str:
    """`text` in at most `width` characters, the middle replaced by "…"."""
    text = one_line(text)
    if len(text) <= width:
        return text
    head = (width - 1 + 1) // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def conv_ok(conv: Any) -> bool:
    return conv is not None and str(conv.execution_status or "").lower() == "finished"


def conv_status(conv: Any) -> str:
    if conv is None:
        return "MISSING"
    s = str(conv.sandbox_status)
    return f"{s}/{conv.execution_status}" if conv.execution_status is not None else s


def arrow(change: Any) -> str:
    """`old -> new`, or just `new` on the first read (there is no old status yet)."""
    return change.new if change.old is None else f"{change.old} -> {change.new}"


def clock(seconds: float) -> str:
    """0:05, 12:34, 1:02:03."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
