"""What a person (or, with --json, a program) reads: output lines and status texts."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Out:
    """Human lines or, with --json, one JSON object per line."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.json = as_json
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def emit(self, obj: dict[str, Any], text: str) -> None:
        if self.json:
            print(json.dumps(obj, default=str), file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)


def conv_ok(conv: Any) -> bool:
    return conv is not None and str(conv.execution_status or "").lower() == "finished"


def conv_status(conv: Any) -> str:
    if conv is None:
        return "MISSING"
    s = str(conv.sandbox_status)
    return f"{s}/{conv.execution_status}" if conv.execution_status is not None else s
