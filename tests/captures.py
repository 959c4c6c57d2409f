"""Read the real-server captures in ../shared/captures as test fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# OPENHANDS_ASYNC_SHARED as in tests/integration/harness.py (a worktree has no ../shared).
SHARED = Path(
    os.environ.get("OPENHANDS_ASYNC_SHARED") or Path(__file__).resolve().parents[2] / "shared"
)
CAPTURES = SHARED / "captures"


def body(name: str) -> Any:
    """The JSON body of a capture: a `curl -i` file (body on the last line) or a .json file."""
    text = (CAPTURES / name).read_text()
    if name.endswith(".json"):
        return json.loads(text)
    return json.loads(text.strip().splitlines()[-1])


def raw(name: str) -> bytes:
    return (CAPTURES / name).read_bytes()
