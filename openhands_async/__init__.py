"""openhands-async: an async-first Python SDK for the OpenHands Cloud API (V1)."""

from __future__ import annotations

from ._http import Timeouts
from ._retry import RetryPolicy
from ._version import __version__
from .batch import BatchProgress, BatchRun, Job, JobResult
from .client import OpenHandsClient
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ConflictError,
    GoneError,
    InternalServerError,
    NotFoundError,
    OpenHandsError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServiceUnavailableError,
    StartTaskFailed,
    StartUnconfirmedError,
    StreamError,
    UnprocessableEntityError,
)
from .helpers import wait_until_ready
from .models import (
    Conversation,
    Event,
    ExecutionStatus,
    ExposedUrl,
    ImageContent,
    Message,
    Page,
    Sandbox,
    SandboxStatus,
    SendMessageResult,
    StartRequest,
    StartTask,
    StartTaskStatus,
    TextContent,
    User,
)
from .pagination import AsyncPager
from .poller import ConversationPoller, PollerStats, StatusChange
from .streaming import StartTaskStream

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncPager",
    "AuthenticationError",
    "BadRequestError",
    "BatchProgress",
    "BatchRun",
    "ConcurrencyLimitError",
    "ConflictError",
    "Conversation",
    "ConversationPoller",
    "Event",
    "ExecutionStatus",
    "ExposedUrl",
    "GoneError",
    "ImageContent",
    "InternalServerError",
    "Job",
    "JobResult",
    "Message",
    "NotFoundError",
    "OpenHandsClient",
    "OpenHandsError",
    "Page",
    "PermissionDeniedError",
    "PollerStats",
    "RateLimitError",
    "ResponseValidationError",
    "RetryPolicy",
    "Sandbox",
    "SandboxStatus",
    "SendMessageResult",
    "ServiceUnavailableError",
    "StartRequest",
    "StartTask",
    "StartTaskFailed",
    "StartTaskStatus",
    "StartTaskStream",
    "StartUnconfirmedError",
    "StatusChange",
    "StreamError",
    "TextContent",
    "Timeouts",
    "UnprocessableEntityError",
    "User",
    "__version__",
    "wait_until_ready",
]
