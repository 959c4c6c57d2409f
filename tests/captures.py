"""Read the real-server captures in ../shared/captures as test fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# ../shared beside the checkout; a git worktree one level deeper (wt/<name>) finds it too.
CAPTURES = next(
    (
        d / "shared" / "captures"
        for d in Path(__file__).resolve().parents[1:]
        if (d / "shared" / "captures").is_dir()
    ),
    Path(__file__).resolve().parents[2] / "shared" / "captures",
)


def body(name: str) -> Any:
    """The JSON body of a capture: a `curl -i` file (body on the last line) or a .json file."""
    text = (CAPTURES / name).read_text()
    if name.endswith(".json"):
        return json.loads(text)
    return json.loads(text.strip().splitlines()[-1])


def raw(name: str) -> bytes:
    return (CAPTURES / name).read_bytes()
