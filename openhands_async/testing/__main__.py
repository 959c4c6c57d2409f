"""`python -m openhands_async.testing`: serve a FakeCloud on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

from ._cloud import FakeCloud


def _rate(text: str) -> tuple[int, float]:
    requests, _, seconds = text.partition("/")
    try:
        return int(requests), float(seconds or "1")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected REQUESTS/SECONDS, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m openhands_async.testing",
        description="Serve a fake OpenHands Cloud (V1 API) on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port (default 3000)")
    parser.add_argument("--api-key", default="test-key", help="the key clients must send")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without a key")
    parser.add_argument("--auth", choices=["bearer", "session"], default="bearer")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every delay")
    parser.add_argument("--max-running", type=int, default=None)
    parser.add_argument("--cap-mode", choices=["pause", "refuse"], default="pause")
    parser.add_argument("--rate-limit", type=_rate, default=None, metavar="N/SECONDS")
    parser.add_argument("--latency", type=float, default=0.0)
    return parser


async def _serve(options: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Also where a shell started us with SIGINT ignored; Windows keeps KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with FakeCloud(**options) as cloud:
        header = "X-Session-API-Key:" if cloud.auth == "session" else "Authorization: Bearer"
        auth = f"{header} {cloud.api_key}" if cloud.api_key else "no auth"
        print(f"FakeCloud serving on {cloud.base_url} ({auth}); Ctrl-C to stop", flush=True)
        await stop.wait()
    print("FakeCloud stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options: dict[str, Any] = {
        "api_key": None if args.no_auth else args.api_key,
        "auth": args.auth,
        "port": args.port,
        "time_scale": args.time_scale,
        "max_running": args.max_running,
        "cap_mode": args.cap_mode,
        "rate_limit": args.rate_limit,
        "latency": args.latency,
    }
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
