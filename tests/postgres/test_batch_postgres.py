"""Issue 18: shared batches end to end. Worker PROCESSES run one batch through a real
PostgreSQL journal against FakeCloud over loopback: each job started exactly once (the
server's record of conversation ids), the running cap held per account across workers, and
a SIGKILLed worker's jobs adopted by a survivor and followed to their end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import openhands_async as oh
from openhands_async.lib.batch import account_label
from openhands_async.lib.batch.postgres import PostgresJournal
from openhands_async.testing import FakeCloud

# A worker: runs the batch of `n` jobs (the same JSONL-like list every worker feeds) and
# prints each job it ended. Short client timeouts keep the in-flight wait of an adopted
# start (the start timeout) short; the lease is an argument.
_WORKER = """
import asyncio, sys
import openhands_async as oh
dsn, batch, key, url, n, cap, lease = sys.argv[1:8]
async def main():
    policy = oh.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.05)
    async with oh.OpenHandsClient(
        api_key=key, base_url=url, retry_policy=policy, timeout=oh.Timeouts(total=1.0)
    ) as c:
        jobs = [oh.Job(f"job {i}", key=f"k{i:03}") for i in range(int(n))]
        async for r in c.run_batch(
            jobs, journal=dsn, batch_name=batch, max_running=int(cap),
            lease_seconds=float(lease), poll_interval=0.05,
        ):
            print("done", r.job.key, r.state, flush=True)
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """`asyncio.timeout` for Python 3.10 too: the block is cancelled after `seconds`, and
    that is a TimeoutError (a hang fails the test instead of stalling the suite)."""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def fire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(seconds, fire)
    try:
        yield
    except asyncio.CancelledError:
        if fired:
            raise TimeoutError(f"not done within {seconds}s") from None
        raise
    finally:
        handle.cancel()


def sent_ids(cloud: FakeCloud) -> list[str]:
    """The conversation id of every start the server took."""
    return [
        uuid.UUID(t.request["conversation_id"]).hex
        for t in cloud._store.tasks.values()
        if t.request.get("conversation_id")
    ]


async def spawn(dsn: str, cloud: FakeCloud, n: int, cap: int, lease: float) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WORKER, dsn, "b", cloud.api_key or "", cloud.base_url,
        str(n), str(cap), str(lease),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def db_rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(sql, args)
        return list(await cursor.fetchall())


async def until(check: Any, *, steps: int = 6000, step: float = 0.02) -> None:
    for _ in range(steps):
        if await check():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition never became true")


async def test_three_workers_one_killed_every_job_started_once_cap_held(pg_dsn: str) -> None:
    n, cap = 60, 6
    async with FakeCloud(max_running=cap, cap_mode="pause", run_seconds=0.6) as cloud:
        workers = [await spawn(pg_dsn, cloud, n, cap, lease=1.5) for _ in range(3)]
        victim = workers[0]
        like = f"%/{victim.pid}/%"

        async def victim_mid_run() -> bool:
            import psycopg

            try:
                held = await db_rows(
                    pg_dsn,
                    "SELECT count(*) FILTER (WHERE worker LIKE %s AND state = 'running'),"
                    " count(*) FILTER (WHERE state = 'finished') FROM openhands_batch_jobs",
                    like,
                )
            except psycopg.errors.UndefinedTable:  # no worker has opened the journal yet
                return False
            running, finished = held[0]
            return bool(running >= 1 and finished >= cap)

        async with deadline(180):
            await until(victim_mid_run)
            os.kill(victim.pid, signal.SIGKILL)
            await victim.wait()
            # What the dead worker held: a survivor must adopt and follow each to its end.
            orphans = dict(
                await db_rows(
                    pg_dsn,
                    "SELECT key, conversation_id FROM openhands_batch_jobs"
                    " WHERE worker LIKE %s AND state IN ('starting', 'running')",
                    like,
                )
            )
            outputs = [(await w.communicate())[0].decode() for w in workers[1:]]
        assert orphans
        assert all(w.returncode == 0 for w in workers[1:])
        ids = sent_ids(cloud)
        assert len(ids) == len(set(ids)) == n  # every job started exactly once
        assert cloud.starts_received == n
        assert cloud.duplicate_starts == 0
        assert cloud.peak_running <= cap  # the cap held across the three workers
        assert cloud.paused_by_cap == 0  # so nothing was paused
    rows = await db_rows(
        pg_dsn, "SELECT key, state, worker, conversation_id FROM openhands_batch_jobs"
    )
    assert Counter(state for _, state, _, _ in rows) == {"finished": n}
    by_key = {key: (worker, cid) for key, _, worker, cid in rows}
    for key, cid in orphans.items():
        worker, now = by_key[key]
        assert now == cid  # adopted, never started again with another id
        assert f"/{victim.pid}/" not in worker
    reported = Counter(
        line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("done")
    )
    assert set(orphans) <= set(reported)  # the survivors followed them to their end
    assert max(reported.values()) == 1  # and each job was reported by one worker


async def test_two_accounts_run_three_each_six_at_once(pg_dsn: str) -> None:
    n, cap = 24, 3
    async with (
        FakeCloud(api_key="key-a", max_running=cap, run_seconds=0.5) as a,
        FakeCloud(api_key="key-b", max_running=cap, run_seconds=0.5) as b,
    ):
        together = 0

        async def watch() -> None:
            nonlocal together
            while True:
                together = max(together, a.running + b.running)
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        workers = [await spawn(pg_dsn, cloud, n, cap, lease=5.0) for cloud in (a, b)]
        async with deadline(180):
            for w in workers:
                await w.communicate()
        watcher.cancel()
        assert all(w.returncode == 0 for w in workers)
        ids_a, ids_b = sent_ids(a), sent_ids(b)
        assert len(set(ids_a) | set(ids_b)) == len(ids_a) + len(ids_b) == n
        assert a.peak_running == b.peak_running == cap  # 3 per account, never more
        assert a.paused_by_cap == b.paused_by_cap == 0
        assert together == 2 * cap  # 6 at once across the two accounts
    accounts = await db_rows(
        pg_dsn, "SELECT account, count(*) FROM openhands_batch_jobs GROUP BY 1"
    )
    labels = {account_label(c.api_key or "", c.base_url) for c in (a, b)}
    assert {acct for acct, _ in accounts} == labels
    assert sum(count for _, count in accounts) == n


async def test_run_batch_on_a_dsn_in_process_and_its_journal_protocol(
    pg_dsn: str, tmp_path: Path
) -> None:
    # One worker in this process: results, summary, out= and the rejects of bad inputs.
    async with (
        FakeCloud(time_scale=0.1) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        batch: list[Any] = [oh.Job(f"job {i}", key=f"k{i}") for i in range(4)]
        batch += [{"message": ""}, oh.Job("job 0", key="k0"), oh.Job("other", key="k1")]
        out = tmp_path / "out.jsonl"
        run = client.run_batch(
            batch, journal=pg_dsn, batch_name="evals", max_running=2, poll_interval=0.05, out=out
        )
        results = [r async for r in run]
        assert sorted(r.state for r in results) == [
            "failed", "failed", "finished", "finished", "finished", "finished", "skipped",
        ]  # fmt: skip
        assert run.summary is not None
        assert len(out.read_text().splitlines()) == len(batch)
        assert cloud.starts_received == 4
        # A second run of the same batch starts nothing.
        again = [
            r
            async for r in client.run_batch(
                batch[:4], journal=pg_dsn, batch_name="evals", poll_interval=0.05
            )
        ]
        assert again == []
        assert cloud.starts_received == 4
    journal = PostgresJournal(pg_dsn, batch_name="evals", account="acct-x", max_running=1)
    async with journal:
        assert (await journal.counts())["finished"] == 4
        assert len(await journal.rejects()) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"journal": "postgresql://u@127.0.0.1:1/db"}, "batch_name"),
        ({"journal": "run.db", "batch_name": "b"}, "postgresql"),
        ({"journal": None, "lease_seconds": 1.0}, "postgresql"),
    ],
)
def test_shared_arguments_are_checked_up_front(kwargs: dict[str, Any], message: str) -> None:
    client = oh.OpenHandsClient(api_key="k", base_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match=message):
        client.run_batch([oh.Job("x")], **kwargs)


async def test_an_adopted_start_is_found_or_sent_again_once_with_its_id(pg_dsn: str) -> None:
    from openhands_async._start_request import make_start_request

    async with FakeCloud(time_scale=0.1) as cloud:
        label = account_label(cloud.api_key or "", cloud.base_url)
        dead = PostgresJournal(pg_dsn, batch_name="b", account=label, max_running=5)
        await dead.open()
        taken, lost = uuid.uuid4().hex, uuid.uuid4().hex
        for key, cid in (("A", taken), ("B", lost)):
            await dead.add(key, ord(key), {"message": f"job {key}"}, source=f"item {key}")
            assert await dead.mark_starting(key, cid) is not None
        # A's start reached the server, then the worker died (no answer recorded); B's
        # never left. Dying: no renewal, no hand-over; the leases lapse.
        async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as c:
            await c.conversations.send_start(make_start_request("job A", conversation_id=taken))
        assert dead._heartbeat is not None
        dead._heartbeat.cancel()
        await db_rows(
            pg_dsn,
            "UPDATE openhands_batch_jobs SET lease_until = now() - interval '1 second'"
            " RETURNING key",
        )
        policy = oh.RetryPolicy(max_retries=0)
        async with oh.OpenHandsClient(
            api_key=cloud.api_key,
            base_url=cloud.base_url,
            retry_policy=policy,
            timeout=oh.Timeouts(total=0.3),  # the in-flight wait before B is sent again
        ) as c:
            jobs = [oh.Job("job A", key="A"), oh.Job("job B", key="B")]
            results = [
                r
                async for r in c.run_batch(
                    jobs, journal=pg_dsn, batch_name="b", lease_seconds=5, poll_interval=0.05
                )
            ]
        assert sorted((r.job.key, r.state, r.conversation_id) for r in results) == [
            ("A", "finished", taken),
            ("B", "finished", lost),
        ]
        assert sent_ids(cloud) == [taken, lost]  # A followed, B sent once, with its id
        assert cloud.duplicate_starts == 0
        await dead.close()


async def test_the_cli_runs_a_shared_batch_and_shows_its_status(
    pg_dsn: str, tmp_path: Path
) -> None:
    from tests.test_cli import run as cli

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(f'{{"message": "job {i}", "key": "k{i}"}}\n' for i in range(3)))
    async with FakeCloud(time_scale=0.1) as cloud:
        auth = ["--base-url", cloud.base_url, "--api-key", cloud.api_key or "", "--json"]
        shared = ["--journal", pg_dsn, "--batch-name", "cli"]
        code, out, err = await cli("batch", str(jobs), *shared, "--interval", "0.05", *auth)
        assert code == 0, err
        assert cloud.starts_received == 3
        code, out, err = await cli("batch", "status", *shared, *auth)
    assert code == 0, err
    (status,) = [json.loads(line) for line in out.splitlines()]
    assert status["counts"]["finished"] == 3
    (worker,) = status["workers"]
    assert worker["counts"] == {"finished": 3}
    assert worker["alive"] is False  # it stopped cleanly
    code, out, err = await cli("batch", "status", "--journal", "run.db", "--batch-name", "x")
    assert code == 2
    assert "postgresql://" in err
