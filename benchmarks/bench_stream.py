"""Benchmark streaming start (not a test). Run: python benchmarks/bench_stream.py [--quick]

1. First-event latency: an in-process aiohttp.web server writes stream-start elements on a
   schedule, each carrying its send time; we measure send -> the SDK yields it, for
   `client.conversations.stream_start` and for `await resp.json()` (which only returns at
   the end of the body).
2. Parse throughput: a 100,000-element stream-start body (elements shaped like the real
   capture) served over loopback by a server subprocess; elements/s through the SDK's
   `stream_start`, through raw `ijson.items_async` on the same bytes, and `json.loads` of
   the whole body; peak RSS at 1,000 vs 100,000 elements. Each client run is its own
   subprocess so its RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import ijson
from aiohttp import web

HERE = Path(__file__).resolve().parent
CAPTURE = HERE.parent.parent / "shared" / "captures" / "stream-start.raw"
STREAM_PATH = "/api/v1/app-conversations/stream-start"


def template() -> dict[str, Any]:
    # The real element's size and shape decide the numbers: no made-up fallback.
    elements: list[dict[str, Any]] = json.loads(CAPTURE.read_bytes())
    return elements[0]


def element(base: dict[str, Any], status: str, detail: str | None = None) -> bytes:
    return json.dumps({**base, "status": status, "detail": detail}, separators=(",", ":")).encode()


def body(n: int) -> bytes:
    base = template()
    mid = element(base, "WORKING")
    parts = [mid] * (n - 1) + [element(base, "READY")]
    return b"[\n" + b",\n".join(parts) + b"]"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# ---------------------------------------------------------------- 1. first-event latency


async def latency(elements: int, interval: float, reps: int) -> dict[str, list[float]]:
    import openhands_async as oh

    base = template()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"[\n")
        for k in range(elements):
            status = "READY" if k == elements - 1 else "WORKING"
            data = element(base, status, repr(time.perf_counter()))
            await resp.write(data if k == 0 else b",\n" + data)
            await asyncio.sleep(interval)
        await resp.write(b"]")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post(STREAM_PATH, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    out: dict[str, list[float]] = {"stream_start": [], "resp.json()": []}
    try:
        async with oh.OpenHandsClient(base_url=url) as client:
            for _ in range(reps):
                async for task in client.conversations.stream_start("bench"):
                    now = time.perf_counter()
                    out["stream_start"].append(now - float(task.detail or "nan"))
                async with aiohttp.ClientSession() as s, s.post(url + STREAM_PATH, json={}) as r:
                    items = await r.json()
                    now = time.perf_counter()
                out["resp.json()"].extend(now - float(i["detail"]) for i in items)
    finally:
        await runner.cleanup()
    return out


# ---------------------------------------------------------------- 2. throughput (subprocesses)


def write_port(port_file: str, port: int) -> None:
    Path(port_file).write_text(str(port))


def serve(port_file: str, sizes: list[int]) -> None:
    bodies = {n: body(n) for n in sizes}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        data = bodies[int(request.match_info["n"])]
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(data), 65536):
            await resp.write(data[i : i + 65536])
        await resp.write_eof()
        return resp

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/n{n}" + STREAM_PATH, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        write_port(port_file, runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def client_run(mode: str, base: str, n: int) -> None:
    async def main() -> tuple[int, float, float]:
        url = f"{base}/n{n}"
        if mode == "stream_start":
            import openhands_async as oh

            async with oh.OpenHandsClient(base_url=url) as client:
                t0, c0 = time.perf_counter(), time.process_time()
                count = 0
                async for _ in client.conversations.stream_start("bench"):
                    count += 1
                return count, time.perf_counter() - t0, time.process_time() - c0
        async with aiohttp.ClientSession() as s:
            t0, c0 = time.perf_counter(), time.process_time()
            async with s.post(url + STREAM_PATH, json={}) as r:
                if mode == "ijson.items_async":
                    count = 0
                    async for _ in ijson.items_async(r.content, "item", use_float=True):
                        count += 1
                else:
                    count = len(json.loads(await r.read()))
            return count, time.perf_counter() - t0, time.process_time() - c0

    count, elapsed, cpu = asyncio.run(main())
    rss_mb = peak_rss_kb() / 1024
    print(json.dumps({"count": count, "elapsed": elapsed, "cpu": cpu, "rss_mb": rss_mb}))


def peak_rss_kb() -> int:
    """This process's peak RSS. ru_maxrss is not used: on Linux it survives fork+exec, so a
    child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_client(mode: str, base: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", mode, base, str(n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert result["count"] == n, result
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--serve", nargs=2)
    ap.add_argument("--client", nargs=3)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], [int(x) for x in args.serve[1].split(",")])
        return
    if args.client:
        client_run(args.client[0], args.client[1], int(args.client[2]))
        return

    reps = 2 if args.quick else 5
    big = 20_000 if args.quick else 100_000
    small = 1_000
    started = time.perf_counter()
    print(
        f"ijson backend: {ijson.backend_name}; python {sys.version.split()[0]}; "
        f"aiohttp {aiohttp.__version__}; {os.cpu_count()} CPUs"
    )

    lat = asyncio.run(latency(elements=200, interval=0.002, reps=reps))
    print("\n1) first-event latency, server write -> consumer sees the element (ms)")
    print(f"{'reader':<18}{'n':>6}{'median':>10}{'p99':>10}")
    for name, values in lat.items():
        ms = [v * 1000 for v in values]
        print(f"{name:<18}{len(ms):>6}{statistics.median(ms):>10.3f}{pct(ms, 99):>10.3f}")
    ratio = statistics.median(lat["resp.json()"]) / statistics.median(lat["stream_start"])
    print(f"resp.json() / stream_start median latency: {ratio:.0f}x")

    port_file = HERE / ".bench_port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port_file), f"{small},{big}"]
    )
    try:
        for _ in range(600):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        size_mb = len(body(big)) / 1e6
        modes = ["stream_start", "ijson.items_async", "json.loads"]
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(reps):
            for mode in modes:
                for n in (small, big):
                    results.setdefault((mode, n), []).append(run_client(mode, base, n))
    finally:
        server.terminate()
        server.wait()
        port_file.unlink(missing_ok=True)

    print(
        f"\n2) parse throughput, {big:,}-element body ({size_mb:.0f} MB) over loopback, "
        f"median of {reps}"
    )
    print(
        f"{'reader':<20}{'elements/s':>12}{'per CPU-s':>12}{'vs json.loads':>15}"
        f"{'RSS@1k MB':>11}{'RSS@' + str(big // 1000) + 'k MB':>12}"
    )
    runs = {m: results[(m, big)] for m in modes}
    rate = {m: statistics.median(big / r["elapsed"] for r in runs[m]) for m in modes}
    cpu_rate = {m: statistics.median(big / r["cpu"] for r in runs[m]) for m in modes}
    for m in modes:
        rss_small = statistics.median(r["rss_mb"] for r in results[(m, small)])
        rss_big = statistics.median(r["rss_mb"] for r in results[(m, big)])
        print(
            f"{m:<20}{rate[m]:>12,.0f}{cpu_rate[m]:>12,.0f}{rate[m] / rate['json.loads']:>14.2f}x"
            f"{rss_small:>11.0f}{rss_big:>12.0f}"
        )

    # Each round runs every reader once, back to back; the median of the rounds' ratios
    # cancels most of the drift a shared machine adds between rounds.
    def ratio(key: str) -> float:
        pairs = zip(runs["stream_start"], runs["ijson.items_async"], strict=True)
        return statistics.median(raw[key] / sdk[key] for sdk, raw in pairs)

    print(
        f"stream_start / raw ijson: {ratio('elapsed'):.2f}x by wall time, "
        f"{ratio('cpu'):.2f}x by client CPU time (median of {reps} rounds)"
    )
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
