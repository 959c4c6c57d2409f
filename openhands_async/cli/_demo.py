"""The demo: every feature against an embedded FakeCloud, no account needed."""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

from ._display import NO_REPLY, Out, show
from ._display import arrow as _arrow
from ._parser import EXIT_OK
from ._progress import BatchDisplay


async def cmd_demo(args: argparse.Namespace, out: Out) -> int:
    from .. import OpenHandsClient
    from ..testing import FakeCloud

    def say(text: str, **obj: Any) -> None:
        out.emit(
            {"elapsed": round(out.elapsed(), 3), **obj, "text": text},
            f"[{out.elapsed():6.2f}s] {text}",
        )

    async with (
        FakeCloud(time_scale=0.2) as cloud,
        OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        say(f"FakeCloud serving on {cloud.base_url} (no account needed)", step="fakecloud")
        say("1) streaming start: every status as the server writes it", step="stream_start")
        cid = None
        async for task in client.conversations.stream_start(
            "Demo: fix the README", repository="demo/repo"
        ):
            say(f"   start task {task.status}", step="stream_start", status=str(task.status))
            cid = task.app_conversation_id or cid
        say(f"   conversation {cid}", step="stream_start", conversation_id=cid)
        say("2) the poller: one batch read per cycle for every tracked item", step="poller")
        poller = client.poller(0.2)
        assert cid is not None
        poller.track_conversation(cid)
        async for change in poller.changes():
            say(
                f"   {change.id[:8]} {_arrow(change)}",
                step="poller",
                new=change.new,
            )
            if change.terminal:
                break
        await poller.aclose()
        reply = await client.events.last_agent_message(cid)
        say(f"   agent said: {reply or NO_REPLY}", step="poller")
        say(f"3) the batch runner: {args.jobs} jobs, at most 2 running", step="batch")
        jobs = [
            {"message": f"Demo job {n}", "repository": "demo/repo"} for n in range(args.jobs - 1)
        ]
        jobs.append({"message": "Demo job that fails [fake:outcome=error]"})
        display = BatchDisplay(out, len(jobs), out.stream)
        scratch = tempfile.TemporaryDirectory(prefix="openhands-async-demo-")
        run = client.run_batch(
            jobs,
            max_running=2,
            poll_interval=0.2,
            on_progress=display,
            journal=os.path.join(scratch.name, "journal.db"),
        )
        with display:
            async with run:
                async for r in run:
                    say(
                        f"   {r.state:<8} {show(r.conversation_id)} {show(r.execution_status)}",
                        step="batch",
                        state=r.state,
                    )
                    display(run.progress)
        scratch.cleanup()
        p = run.progress
        say(
            f"done: batch finished {p.finished}, failed {p.failed} (one fails on purpose); "
            f"{sum(cloud.requests.values())} requests",
            step="done",
        )
    return EXIT_OK
