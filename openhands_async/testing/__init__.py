"""A fake OpenHands Cloud for tests, examples, benchmarks and demos.

`FakeCloud` is a real HTTP server on 127.0.0.1 that answers the V1 API the way the real
server does (same JSON shapes, stream framing, status codes and known quirks), with knobs
for timings, limits and injected faults. It speaks raw JSON and never imports the SDK's
models, so it catches SDK bugs instead of sharing them.

    from openhands_async.testing import FakeCloud, Fault

    async with FakeCloud(time_scale=0.1) as cloud:
        cloud.add_fault(Fault(route="start", status=503, times=2))
        ...  # point a client at cloud.base_url with api_key=cloud.api_key
        assert cloud.requests["start"] == 3

Run one from a shell with `python -m openhands_async.testing --port 3000`.

Inside (imports run down this list; nothing here imports the SDK): `_cloud` (FakeCloud:
lifecycle, knobs, counters, snapshots) -> `_app` (the route groups in order, the request
pipeline) -> `_routes/*` (one module per endpoint group) -> `_routing` (RouteGroup, @route),
`_context` (what handlers may touch), `_responses` (json, errors, paging), `_timeline`
(pause/resume/re-run) -> `_events`, `_render`, `_state`, `_plan`, `_faults`,
`_validation`, `_ratelimit`, `_wire`, `_constants` (the wire's own vocabulary).
"""

from __future__ import annotations

from ._cloud import FakeCloud
from ._context import RequestRecord
from ._faults import Fault, FaultAction
from ._plan import DEFAULT_START_TIMELINE, StreamBehavior

__all__ = [
    "DEFAULT_START_TIMELINE",
    "FakeCloud",
    "Fault",
    "FaultAction",
    "RequestRecord",
    "StreamBehavior",
]
