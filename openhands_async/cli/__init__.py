"""The `openhands-async` command: start, watch, batch, list, events, send, and a demo that
runs against an embedded FakeCloud (no account needed).

Modules: `_parser` (options, help texts, exit codes), `_main` (running a command, mapping
errors to exit codes and messages), `_commands` (start, watch, list, events, send),
`_batch` (the batch command), `_demo`, `_display` (lines, tables, missing values for
people) and `_progress` (the live batch display: rich on a terminal, plain lines otherwise).
"""

from __future__ import annotations

from ._main import main
from ._parser import build_parser

__all__ = ["build_parser", "main"]
