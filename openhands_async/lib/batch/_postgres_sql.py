"""The shared journal's statements (PostgreSQL 12+), kept apart from the code; the schema
they run on is `_postgres_schema`.

Times are the database's own clock (`now()`): workers on several machines never compare
their clocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import LiteralString

# The columns a row is read with (times as seconds since the epoch, like the SQLite journal).
COLUMNS: LiteralString = """
    key, seq, job, source, state, account, worker, conversation_id, start_task_id, sandbox_status,
    execution_status, error, attempts, history,
    extract(epoch FROM created_at)::float8 AS created_at,
    extract(epoch FROM sent_at)::float8 AS sent_at,
    extract(epoch FROM running_at)::float8 AS running_at,
    extract(epoch FROM ended_at)::float8 AS ended_at,
    extract(epoch FROM lease_until)::float8 AS lease_until
"""

REGISTER_WORKER: LiteralString = """
WITH account AS (
    INSERT INTO openhands_batch_accounts (batch_name, account) VALUES (%(batch)s, %(account)s)
    ON CONFLICT DO NOTHING
)
INSERT INTO openhands_batch_workers (batch_name, worker, account, host, pid, max_running)
VALUES (%(batch)s, %(worker)s, %(account)s, %(host)s, %(pid)s, %(max_running)s)
ON CONFLICT (batch_name, worker) DO UPDATE
    SET seen_at = now(), stopped_at = NULL, max_running = EXCLUDED.max_running
"""

# One job, and its row as the database has it (new, or what a key already held), in one
# round trip; a reject recorded at its source goes (the line is a job now).
ADD_ONE: LiteralString = (
    """
WITH ins AS (
    INSERT INTO openhands_batch_jobs (batch_name, key, seq, job, source)
    VALUES (%(batch)s, %(key)s, %(seq)s, %(job)s::jsonb, %(source)s)
    ON CONFLICT (batch_name, key) DO NOTHING
    RETURNING *
), dropped AS (
    DELETE FROM openhands_batch_rejects
     WHERE batch_name = %(batch)s AND source = %(source)s
)
SELECT """
    + COLUMNS
    + """ FROM ins
UNION ALL
SELECT """
    + COLUMNS
    + """ FROM openhands_batch_jobs
 WHERE batch_name = %(batch)s AND key = %(key)s AND NOT EXISTS (SELECT 1 FROM ins)
"""
)

ADD: LiteralString = """
INSERT INTO openhands_batch_jobs (batch_name, key, seq, job)
SELECT %(batch)s, k, s, j FROM unnest(%(keys)s::text[], %(seqs)s::bigint[], %(jobs)s::jsonb[])
    AS t(k, s, j)
ORDER BY k
ON CONFLICT (batch_name, key) DO NOTHING
"""

# Many jobs in one round trip (a worker feeding ahead), and their rows as the database has
# them: new, or what a key already held. Rows in key order, so two workers feeding
# overlapping lists take the keys' locks in one order (no deadlock). A key another worker
# inserted after this statement's snapshot is missing from the answer (read it apart).
FEED: LiteralString = (
    """
WITH ins AS (
    INSERT INTO openhands_batch_jobs (batch_name, key, seq, job, source)
    SELECT %(batch)s, k, s, j, src FROM unnest(
        %(keys)s::text[], %(seqs)s::bigint[], %(jobs)s::jsonb[], %(sources)s::text[]
    ) AS t(k, s, j, src)
    ORDER BY k
    ON CONFLICT (batch_name, key) DO NOTHING
    RETURNING *
), dropped AS (
    DELETE FROM openhands_batch_rejects
     WHERE batch_name = %(batch)s AND source = ANY(%(sources)s::text[])
)
SELECT """
    + COLUMNS
    + """ FROM ins
UNION ALL
SELECT """
    + COLUMNS
    + """ FROM openhands_batch_jobs
 WHERE batch_name = %(batch)s AND key = ANY(%(keys)s::text[])
   AND key NOT IN (SELECT key FROM ins)
"""
)

ROWS_OF: LiteralString = (
    "SELECT " + COLUMNS + " FROM openhands_batch_jobs"
    " WHERE batch_name = %(batch)s AND key = ANY(%(keys)s::text[])"
)

CLAIM: LiteralString = (
    "SELECT "
    + COLUMNS
    + " FROM openhands_batch_claim(%(batch)s, %(account)s, %(worker)s, %(max_running)s,"
    " %(conversation_id)s, %(lease)s, %(key)s)"
)

# Several claims in one round trip (one transaction): `openhands_batch_claim` once per
# minted id, in order; each call sees the ones before it (a VOLATILE function reads a fresh
# snapshot per statement), so the slot count holds. Ends when nothing is pending or the
# account's slots are taken: fewer rows than ids.
CLAIM_MANY: LiteralString = (
    "SELECT " + COLUMNS + " FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS c(id, n)"
    " CROSS JOIN LATERAL openhands_batch_claim(%(batch)s, %(account)s, %(worker)s,"
    " %(max_running)s, c.id, %(lease)s, NULL) ORDER BY c.n"
)

# Jobs of this account whose holder's lease lapsed (dead or cut off): now this worker's.
ADOPT: LiteralString = (
    """
WITH lapsed AS (
    SELECT batch_name AS b, key AS k FROM openhands_batch_jobs
     WHERE batch_name = %(batch)s AND account = %(account)s
       AND state IN ('starting', 'running') AND lease_until < now()
       FOR UPDATE SKIP LOCKED
)
UPDATE openhands_batch_jobs AS j
   SET worker = %(worker)s, lease_until = now() + make_interval(secs => %(lease)s)
  FROM lapsed
 WHERE j.batch_name = lapsed.b AND j.key = lapsed.k
RETURNING """
    + COLUMNS
)

RENEW: LiteralString = """
WITH seen AS (
    UPDATE openhands_batch_workers SET seen_at = now()
     WHERE batch_name = %(batch)s AND worker = %(worker)s
)
UPDATE openhands_batch_jobs SET lease_until = now() + make_interval(secs => %(lease)s)
 WHERE batch_name = %(batch)s AND worker = %(worker)s AND state IN ('starting', 'running')
RETURNING key
"""

# On a clean stop: what this worker still follows is up for adoption at once.
RELEASE: LiteralString = """
WITH stopped AS (
    UPDATE openhands_batch_workers SET stopped_at = now(), seen_at = now()
     WHERE batch_name = %(batch)s AND worker = %(worker)s
)
UPDATE openhands_batch_jobs SET lease_until = now()
 WHERE batch_name = %(batch)s AND worker = %(worker)s AND state IN ('starting', 'running')
"""

# Every transition below is fenced by `worker`: a worker that lost a job's lease cannot
# write over its new owner's record. Ends and refusals free a slot: tell the waiters.
MARK_RUNNING: LiteralString = (
    """
UPDATE openhands_batch_jobs SET state = 'running', start_task_id = %(start_task_id)s,
       running_at = now()
 WHERE batch_name = %(batch)s AND key = %(key)s AND worker = %(worker)s
   AND state IN ('starting', 'running')
RETURNING """
    + COLUMNS
)

MARK_PENDING: LiteralString = """
WITH freed AS (
    UPDATE openhands_batch_jobs
       SET state = 'pending', conversation_id = NULL, sent_at = NULL, worker = NULL,
           account = NULL, lease_until = NULL
     WHERE batch_name = %(batch)s AND key = %(key)s AND worker = %(worker)s
       AND state = 'starting'
    RETURNING key
)
SELECT key, pg_notify('openhands_batch', %(batch)s) FROM freed
"""

MARK_ENDED: LiteralString = """
WITH ended AS (
    UPDATE openhands_batch_jobs
       SET state = %(state)s, sandbox_status = %(sandbox_status)s,
           execution_status = %(execution_status)s, error = %(error)s, ended_at = now(),
           lease_until = NULL
     WHERE batch_name = %(batch)s AND key = %(key)s AND worker = %(worker)s
       AND state IN ('starting', 'running')
    RETURNING key
)
SELECT key, pg_notify('openhands_batch', %(batch)s) FROM ended
"""

MARK_ENDED_MANY: LiteralString = """
WITH ended AS (
    UPDATE openhands_batch_jobs AS j
       SET state = e.state, sandbox_status = e.sandbox, execution_status = e.execution,
           error = e.error, ended_at = now(), lease_until = NULL
      FROM unnest(%(keys)s::text[], %(states)s::text[], %(sandbox)s::text[],
                  %(execution)s::text[], %(errors)s::text[])
           AS e(key, state, sandbox, execution, error)
     WHERE j.batch_name = %(batch)s AND j.key = e.key AND j.worker = %(worker)s
       AND j.state IN ('starting', 'running')
    RETURNING j.key
)
SELECT key, pg_notify('openhands_batch', %(batch)s) FROM ended
"""

# A failed job goes back to pending for another attempt; the attempt's fields move to
# `history` (its conversation id stays this job's in openhands_batch_conversations).
_RETRY_SET: LiteralString = """
   SET state = 'pending',
       history = history || jsonb_build_array(jsonb_build_object(
           'state', state, 'conversation_id', conversation_id, 'start_task_id', start_task_id,
           'sandbox_status', sandbox_status, 'execution_status', execution_status,
           'error', error, 'sent_at', extract(epoch FROM sent_at)::float8,
           'running_at', extract(epoch FROM running_at)::float8,
           'ended_at', extract(epoch FROM ended_at)::float8)),
       conversation_id = NULL, start_task_id = NULL, sandbox_status = NULL,
       execution_status = NULL, error = NULL, sent_at = NULL, running_at = NULL,
       ended_at = NULL, worker = NULL, account = NULL
"""

RETRY_FAILED: LiteralString = (
    "UPDATE openhands_batch_jobs"
    + _RETRY_SET
    + " WHERE batch_name = %(batch)s AND state = 'failed' RETURNING key"
)

RETRY: LiteralString = (
    "UPDATE openhands_batch_jobs"
    + _RETRY_SET
    + " WHERE batch_name = %(batch)s AND key = %(key)s AND state = 'failed' RETURNING "
    + COLUMNS
)

KEY_OF: LiteralString = """
SELECT batch_name, key FROM openhands_batch_conversations WHERE conversation_id = %(cid)s
"""

REJECT: LiteralString = """
INSERT INTO openhands_batch_rejects (batch_name, source, seq, state, key, job, error)
VALUES (%(batch)s, %(source)s, %(seq)s, %(state)s, %(key)s, %(job)s::jsonb, %(error)s)
ON CONFLICT (batch_name, source) DO UPDATE
    SET seq = EXCLUDED.seq, state = EXCLUDED.state, key = EXCLUDED.key, job = EXCLUDED.job,
        error = EXCLUDED.error, recorded_at = now()
"""

REJECTS: LiteralString = """
SELECT source, seq, state, key, job, error, extract(epoch FROM recorded_at)::float8
  FROM openhands_batch_rejects WHERE batch_name = %(batch)s ORDER BY seq, source
"""

GET: LiteralString = (
    "SELECT "
    + COLUMNS
    + " FROM openhands_batch_jobs WHERE batch_name = %(batch)s AND key = %(key)s"
)

ROWS: LiteralString = (
    "SELECT " + COLUMNS + " FROM openhands_batch_jobs WHERE batch_name = %(batch)s"
    " AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[])) ORDER BY seq, key"
)

COUNTS: LiteralString = """
SELECT state, count(*) FROM openhands_batch_jobs WHERE batch_name = %(batch)s GROUP BY state
"""

# What keeps a worker of this account from being done: pending jobs (anyone's to claim),
# and this account's jobs other workers hold (adopted here if their lease lapses).
REMAINING: LiteralString = """
SELECT count(*) FILTER (WHERE state = 'pending'),
       count(*) FILTER (WHERE state IN ('starting', 'running') AND account = %(account)s
                        AND worker IS DISTINCT FROM %(worker)s),
       extract(epoch FROM min(lease_until - now()) FILTER (
           WHERE state IN ('starting', 'running') AND account = %(account)s
             AND worker IS DISTINCT FROM %(worker)s))::float8
  FROM openhands_batch_jobs WHERE batch_name = %(batch)s
"""

STATUS_WORKERS: LiteralString = """
SELECT w.worker, w.account, w.host, w.pid, w.max_running,
       extract(epoch FROM w.started_at)::float8, extract(epoch FROM w.seen_at)::float8,
       extract(epoch FROM w.stopped_at)::float8,
       extract(epoch FROM now() - w.seen_at)::float8
  FROM openhands_batch_workers AS w WHERE w.batch_name = %(batch)s ORDER BY w.started_at
"""

STATUS_JOBS: LiteralString = """
SELECT worker, state, count(*) FROM openhands_batch_jobs WHERE batch_name = %(batch)s
 GROUP BY worker, state
"""
