"""The wire's fixed vocabulary, FakeCloud's own copy: statuses, enums, sort orders, limits.

FakeCloud serves the wire and never imports the SDK, so these are written out here rather
than read from `openhands_async.models`. tests/test_fake_cloud_constants.py checks each
list against the OpenAPI spec's enum and against the SDK's, so none can drift silently.
"""

from __future__ import annotations

# In the order a start goes through them (the spec's AppConversationStartTaskStatus).
START_STATUSES = (
    "WORKING",
    "WAITING_FOR_SANDBOX",
    "PREPARING_REPOSITORY",
    "RUNNING_SETUP_SCRIPT",
    "SETTING_UP_GIT_HOOKS",
    "SETTING_UP_SKILLS",
    "STARTING_CONVERSATION",
    "READY",
    "ERROR",
)
# How a start task can end (the terminal START_STATUSES).
START_OUTCOMES = ("READY", "ERROR")
# The spec's SandboxStatus; FakeCloud's sandboxes show all but MISSING.
SANDBOX_STATUSES = ("STARTING", "RUNNING", "PAUSED", "ERROR", "MISSING")
# The spec's ConversationExecutionStatus.
EXECUTION_STATUSES = (
    "idle",
    "running",
    "paused",
    "waiting_for_confirmation",
    "finished",
    "error",
    "stuck",
    "deleting",
)
# Where a FakeCloud run can end (`run_outcome`, the `outcome=` marker): EXECUTION_STATUSES
# a finished run settles in.
RUN_OUTCOMES = ("finished", "error", "stuck", "waiting_for_confirmation")
# The spec's AppConversationStartTaskSortOrder and EventSortOrder.
START_TASK_SORTS = ("CREATED_AT", "CREATED_AT_DESC", "UPDATED_AT", "UPDATED_AT_DESC")
EVENT_SORTS = ("TIMESTAMP", "TIMESTAMP_DESC")
#: `kind__eq` is an enum on the real server (openhands-ai 1.11.0): anything else is a 422.
EVENT_KINDS = (
    "ServerErrorEvent",
    "ACPToolCallEvent",
    "Condensation",
    "CondensationRequest",
    "CondensationSummaryEvent",
    "ConversationErrorEvent",
    "ConversationStateUpdateEvent",
    "HookExecutionEvent",
    "LLMCompletionLogEvent",
    "ActionEvent",
    "MessageEvent",
    "AgentErrorEvent",
    "ObservationEvent",
    "UserRejectObservation",
    "SystemPromptEvent",
    "StreamingDeltaEvent",
    "TokenEvent",
    "InterruptEvent",
    "PauseEvent",
)

# Batch reads: more ids than this answer 400 "Too many ids requested" (the server asserts
# len(ids) < 100, except for start tasks, where it allows 100).
MAX_CONVERSATION_IDS = 99
MAX_START_TASK_IDS = 100
MAX_SANDBOX_IDS = 99
MAX_EVENT_IDS = 99
# The largest `limit` a V1 search accepts.
MAX_PAGE_SIZE = 100
