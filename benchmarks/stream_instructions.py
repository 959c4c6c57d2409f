"""Instructions per stream-start element, counted by callgrind (not a test; not timed).

The shared VM's wall times swing by 2x; instruction counts do not. One process parses the
benchmark body (`bench_stream.body`, elements shaped like the real capture) held in memory,
in 64 KB reads: a warm-up, then N1 and N2 elements, with `os.getppid()` between the phases.
callgrind dumps its counters at each (`--dump-before=getppid`), so (phase N2 - phase N1) /
(N2 - N1) is one element's cost, with start-up, imports and per-stream costs left out.

    PYTHONPATH=. python benchmarks/stream_instructions.py --valgrind sdk ijson

runs valgrind once per mode and prints instructions per element and the ratio to raw
ijson. Modes: `sdk` (`StartTaskStream`: every layer `conversations.stream_start` iterates,
with an in-memory response in place of the HTTP one), `parser` (`iter_start_tasks`
alone), `ijson` (raw `ijson.items_async`, what `bench_stream.py` compares with).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_stream

N1, N2 = 500, 1500


class Reads:
    """An in-memory response body: `read(n)` hands out up to n bytes (64 KB at most)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    async def read(self, n: int = -1, /) -> bytes:
        if n == 0 or self._at >= len(self._data):
            return b""
        size = 65536 if n < 0 else min(n, 65536)
        part = self._data[self._at : self._at + size]
        self._at += size
        return part

    def release(self) -> None:
        pass


class _Timeouts:
    stream_idle = 60.0


class _Client:
    """What `StartTaskStream` uses of the client on the way to its first element."""

    timeouts = _Timeouts()

    def __init__(self, data: bytes) -> None:
        self._data = data

    def url(self, path: str) -> str:
        return "http://bench" + path

    async def open_stream(self, *args: Any, **kwargs: Any) -> Reads:
        return Reads(self._data)


class _SafeStart:
    conversation_id = "bench"


async def run(mode: str, data: bytes) -> int:
    count = 0
    if mode == "sdk":
        from openhands_async._start_request import make_start_request
        from openhands_async.lib.streaming import StartTaskStream

        stream = StartTaskStream(
            _Client(data),  # type: ignore[arg-type]
            make_start_request("bench"),
            start_tasks=None,  # type: ignore[arg-type]
            safe_start=_SafeStart(),  # type: ignore[arg-type]
        )
        async for _ in stream:
            count += 1
    elif mode == "parser":
        from openhands_async.lib._stream_parser import CountingReader, iter_start_tasks

        async for _ in iter_start_tasks(CountingReader(Reads(data))):
            count += 1
    else:
        import ijson

        async for _ in ijson.items_async(Reads(data), "item", use_float=True):
            count += 1
    return count


def phases(mode: str) -> None:
    import openhands_async.lib.streaming  # noqa: F401  (imports before the first phase)

    bodies = {n: bench_stream.body(n) for n in (50, N1, N2)}
    assert asyncio.run(run(mode, bodies[50])) == 50  # warm-up: caches, specialisation
    for n in (N1, N2):
        os.getppid()  # callgrind dumps here
        assert asyncio.run(run(mode, bodies[n])) == n
    os.getppid()


def count(mode: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-before=getppid",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                mode,
            ],
            check=True,
            capture_output=True,
        )

        def total(part: int) -> int:
            text = Path(f"{out}.{part}").read_text()
            return int(
                next(line for line in text.splitlines() if line.startswith("summary:")).split()[1]
            )

        # Dump 1 is start-up and warm-up, 2 the N1 phase, 3 the N2 phase.
        return (total(3) - total(2)) // (N2 - N1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--valgrind", action="store_true", help="run each mode under callgrind")
    ap.add_argument("modes", nargs="+", choices=["sdk", "parser", "ijson"])
    args = ap.parse_args()
    if not args.valgrind:
        for mode in args.modes:
            phases(mode)
        return
    counts = {mode: count(mode) for mode in args.modes}
    for mode, per in counts.items():
        line = f"{mode:<8}{per:>10,} instructions an element"
        if "ijson" in counts and mode != "ijson":
            line += f"   raw ijson / {mode}: {counts['ijson'] / per:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
