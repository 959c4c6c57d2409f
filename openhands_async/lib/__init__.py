"""Hand-written helpers on top of the resources: the streamed start (`streaming`, its
parser `_stream_parser`), the `Conversations` resource with `stream_start`, the poller
(`poller`, `_polling`), the batch runner (`batch/`) and `helpers`.

lib uses the resources and the base client, never `client.OpenHandsClient`, and nothing
below it imports lib.
"""

from __future__ import annotations

from ._stream_parser import IJSON_BACKEND, iter_start_tasks
from .conversations import Conversations
from .streaming import StartTaskStream

__all__ = ["IJSON_BACKEND", "Conversations", "StartTaskStream", "iter_start_tasks"]
