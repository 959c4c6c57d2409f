"""Defaults and server limits, named once; every module reads its defaults from here."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://app.all-hands.dev"
ENV_API_KEY = "OPENHANDS_API_KEY"
ENV_SESSION_API_KEY = "OPENHANDS_SESSION_API_KEY"
ENV_BASE_URL = "OPENHANDS_BASE_URL"
# The organisation a key not bound to one acts in (sent as X-Org-Id on every request).
ENV_ORG_ID = "OPENHANDS_ORG_ID"
ORG_ID_HEADER = "X-Org-Id"

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_TOTAL_TIMEOUT = 120.0
# stream-start can be silent for minutes while a sandbox boots:
# this bounds one silence, not the whole stream.
DEFAULT_STREAM_IDLE_TIMEOUT = 600.0

DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# A Retry-After longer than this is not slept through: the error is raised instead.
MAX_RETRY_AFTER = 120.0

DEFAULT_MAX_CONNECTIONS = 100
DOWNLOAD_CHUNK_SIZE = 64 * 1024

# The server asserts len(ids) < 100 on batch reads.
MAX_BATCH_IDS = 99
MAX_PAGE_SIZE = 100
DEFAULT_BATCH_CONCURRENCY = 4

# Clock-skew margin when looking for a start task whose response was lost.
START_LOOKUP_SKEW = 120.0
# How many times to look for a start whose response was lost before sending it again:
# the server records the task as soon as it takes the request, but give it a moment.
START_LOOKUPS_BEFORE_RESEND = 3

# Seconds between reads of a start task once its stream broke (the stream's recovery).
DEFAULT_STREAM_POLL_INTERVAL = 1.0
# Once its stream broke, how long a start task may keep the same status and updated_at
# before the recovery gives up on it (StartStalledError). The open-source server drops a
# start whose stream connection closed, leaving its task frozen for good. The server bumps
# updated_at on each status change, and its slowest single steps are bounded: a sandbox
# start 120 s, a repository's setup script 600 s (openhands-ai 1.11.0). 15 minutes leaves
# room above them, so a healthy (if slow) start is never given up on.
DEFAULT_START_STALL_TIMEOUT = 900.0
# Conversations running at once in a batch (the Cloud's older documented account cap).
DEFAULT_MAX_RUNNING = 3

# Shared (PostgreSQL) batch journal: a worker's hold on the jobs it runs lasts this long
# unless renewed (every third of it); after it lapses, another worker of the same account
# adopts them. It must outlast one start request, retries included.
DEFAULT_LEASE_SECONDS = 60.0

# -- poller and batch runner (lib/poller.py, lib/batch/) --
# The poller's base seconds between two reads of one item (it reads changed items sooner
# and quiet ones later); the batch runner reads at this fixed period.
DEFAULT_POLLER_INTERVAL = 5.0
DEFAULT_BATCH_POLL_INTERVAL = 5.0
# Batch reads one poller may have in flight at once.
DEFAULT_POLLER_MAX_IN_FLIGHT = 4
# How long the batch runner waits before trying a refused start again when none of its
# own conversations is running (the slots are held by conversations outside the batch).
BATCH_CAP_RETRY_DELAY = 5.0

# -- live events (lib/follow.py) --
# Seconds between WebSocket pings to the agent server; a pong missing for half of it
# counts as a broken connection (an agent may rightly be silent for minutes).
DEFAULT_FOLLOW_HEARTBEAT = 20.0
# Reconnects in a row (with backoff) before a follow gives up (or, with
# transport="auto", falls back to polling).
DEFAULT_FOLLOW_MAX_RECONNECTS = 6
FOLLOW_RECONNECT_INITIAL_DELAY = 0.2
FOLLOW_RECONNECT_MAX_DELAY = 5.0
# Polling fallback (and waiting for a STARTING sandbox): seconds between reads.
DEFAULT_FOLLOW_POLL_INTERVAL = 1.0
# After a snapshot already showing a terminal status, how long a quiet socket means the
# replay is over (the real server sends the replay at once, then nothing more).
DEFAULT_FOLLOW_SETTLE = 1.0

# conversations.ask: how long to wait for the agent's reply, and how often to look.
DEFAULT_ASK_TIMEOUT = 600.0
DEFAULT_ASK_POLL_INTERVAL = 1.0

#: Seconds a SQLite journal may hold writes that need not be durable at once (a job's
#: add, running and end marks) before committing them; a start's mark commits at once.
JOURNAL_COMMIT_DELAY = 0.1
