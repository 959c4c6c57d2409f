"""FakeCloud against the V1 OpenAPI spec: schemathesis generates requests for every operation
FakeCloud serves and checks each answer. See docs/reliability.md for what is covered.

Valid requests (schemathesis' positive mode) must get a documented status and content type
and a body matching the spec's schema for that status, never a 5xx. Invalid requests
(negative mode) get the same checks, except that a 2xx body is not schema-checked: FakeCloud
validates the start request less strictly than the server's pydantic model and echoes some
fields it accepted (a 422's body is checked).
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from openhands_async.testing import FakeCloud
from openhands_async.testing._app import Api
from openhands_async.testing._context import Context

from .spec import load_spec

MAX_EXAMPLES = int(os.environ.get("OH_SPEC_EXAMPLES", "15"))
APP = "/api/v1/app-conversations"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Statuses the real server answers that the spec leaves undocumented for an operation. For
# these, and only these, status_code_conformance is skipped (the other checks still run).
# Evidence: ../shared/captures, or the openhands-ai 1.11.0 source the captures came from.
UNDOCUMENTED: dict[tuple[str, str], dict[int, str]] = {
    ("GET", APP): {400: "captures/app-conversations_batch_get_bad_id.txt: 400 on a bad id"},
    ("GET", f"{APP}/start-tasks"): {400: "app_conversation_router: 400 on > 100 ids"},
    ("PATCH", f"{APP}/{{}}"): {404: "app_conversation_router: 404 unknown_app_conversation"},
    ("DELETE", f"{APP}/{{}}"): {400: "app_conversation_router: 400 bad conversation id"},
    ("POST", f"{APP}/{{}}/send-message"): {
        404: "app_conversation_router: 404 unknown conversation / sandbox",
        409: "app_conversation_router: 409 sandbox not running",
        410: "app_conversation_router: 410 sandbox deleted",
    },
    ("GET", f"{APP}/{{}}/git/changes"): {404: "_get_agent_server_context: 404 unknown"},
    ("GET", f"{APP}/{{}}/git/diff"): {404: "_get_agent_server_context: 404 unknown"},
    ("GET", f"{APP}/{{}}/download"): {404: "export_conversation: 404 unknown"},
    ("GET", "/api/v1/sandboxes"): {400: "sandbox_router: 400 on > 100 ids"},
    ("GET", "/api/v1/conversation/{}/events"): {400: "event_router: 400 on > 100 ids"},
    # issue 20: the account's configuration and the server's offer
    ("GET", f"{APP}/{{}}/skills"): {404: "_get_agent_server_context: 404 unknown"},
    ("GET", f"{APP}/{{}}/hooks"): {404: "_get_agent_server_context: 404 unknown"},
    ("POST", "/api/v1/conversations/{}/pending-messages"): {
        400: "pending_message_router: 400 invalid body / content",
        429: "pending_message_router: 429 beyond 10 pending messages",
    },
    ("GET", "/api/v1/settings/profiles/{}"): {404: "settings_router.get_profile: 404"},
    ("POST", "/api/v1/settings/profiles/{}"): {409: "settings_router.save_profile: cap"},
    ("POST", "/api/v1/settings/profiles/{}/activate"): {404: "activate_profile: 404"},
    ("POST", "/api/v1/settings/profiles/{}/rename"): {
        404: "rename_profile: 404 unknown",
        409: "rename_profile: 409 new_name taken",
    },
    ("PUT", "/api/v1/secrets/{}"): {
        400: "secrets_router.update_custom_secret: 400 name taken",
        404: "secrets_router.update_custom_secret: 404 unknown",
    },
    ("DELETE", "/api/v1/secrets/{}"): {404: "secrets_router.delete_custom_secret: 404"},
    **{
        ("GET", f"/api/v1/git/{what}/search"): {403: "git_router: 403 token required"}
        for what in ("installations", "repositories", "branches", "suggested-tasks")
    },
    ("GET", "/api/v1/users/git-info"): {403: "user_router: 403 not connected"},
    ("GET", "/api/v1/users/git-organizations"): {403: "user_router: 403 not connected"},
    ("GET", "/api/v1/sandbox-specs"): {400: "FakeCloud: 400 on > 99 ids, as other batches"},
}
# Start tasks read back from the database carry naive timestamps, which the spec's
# `date-time` format refuses: captures/start-tasks_search.txt and
# start-tasks_batch_get_stream_task.txt ("created_at":"2026-11-22T22:59:19.655475"). Only
# schema failures on exactly such values are forgiven for these two operations.
NAIVE_TIMESTAMPS = {("GET", f"{APP}/start-tasks"), ("GET", f"{APP}/start-tasks/search")}
NAIVE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?")
# The export is a zip: the router sends `StreamingResponse(media_type="application/zip")`
# while the spec, generated without a response_class, says application/json.
ZIP_DOWNLOAD = ("GET", f"{APP}/{{}}/download")


def _template(path: str) -> str:
    # The spec and FakeCloud name some path parameters differently ({id} vs {sandbox_id}).
    return re.sub(r"\{[^}]*\}", "{}", path)


def _fake_routes() -> set[tuple[str, str]]:
    """(METHOD, path template) for every route FakeCloud's application registers."""
    app = Api(Context(FakeCloud())).application()  # built, never served
    return {
        (route.method, _template(route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None
    }


FAKE_ROUTES = _fake_routes()
RAW_SPEC = load_spec()


def _has_inputs(method: str, path: str) -> bool:
    operation = RAW_SPEC["paths"][path][method]
    return bool(operation.get("parameters") or operation.get("requestBody"))


# Invalid bodies schemathesis 4.32 cannot always generate: negating POSTProviderModel's
# schema sometimes needs a `not` it does not support (UnsupportedSchema, in some runs and not
# others). The route's 422s are tested by hand in tests/test_account_api.py.
NO_NEGATIVE = {("POST", "/api/v1/secrets/git-providers")}


def _schema(mode: GenerationMode) -> Any:
    def tested(ctx: Any) -> bool:
        method, path = ctx.operation.method, ctx.operation.path
        if (method.upper(), _template(path)) not in FAKE_ROUTES:
            return False
        if mode is GenerationMode.NEGATIVE and (method.upper(), path) in NO_NEGATIVE:
            return False
        # An operation with no parameter and no body (the probes) has no invalid request.
        return mode is GenerationMode.POSITIVE or _has_inputs(method, path)

    schema = schemathesis.openapi.from_dict(copy.deepcopy(RAW_SPEC)).include(tested)
    schema.config.generation.update(modes=[mode], max_examples=MAX_EXAMPLES)
    return schema


positive = _schema(GenerationMode.POSITIVE)
negative = _schema(GenerationMode.NEGATIVE)


class _Server:
    """A FakeCloud serving from its own event loop in a thread (schemathesis calls are sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.cloud = FakeCloud(time_scale=0.0)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeCloud:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.cloud.start(), self.loop).result(10)
        return self.cloud

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.cloud.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@attrs.frozen
class Target:
    cloud: FakeCloud
    # Finished conversations and their sandboxes: generated ids are almost never known ones.
    known: dict[str, list[str]]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with _Server() as cloud:
        # Seeded before any request, while the server thread is idle.
        conversations = cloud.seed_conversations(8, started_ago=60)
        sandboxes = [(cloud.conversation(c) or {})["sandbox_id"] for c in conversations]
        yield Target(cloud, {"conversation_id": conversations, "sandbox_id": sandboxes})


def _use_known_ids(case: Any, known: dict[str, list[str]]) -> None:
    """Point about half the valid cases at existing conversations / sandboxes, picked by a
    stable hash of the case so a failure replays the same way. Deletes get their own half of
    the seeded ids, so they do not leave the other operations nothing to find."""
    params = case.path_parameters or {}
    pick = zlib.crc32(repr(sorted(params.items())).encode())
    if not pick % 2:
        return
    deleting = case.operation.method.upper() == "DELETE"
    for name, ids in known.items():
        pool = ids[len(ids) // 2 :] if deleting else ids[: len(ids) // 2]
        for key in [k for k in params if k == name or (name == "sandbox_id" and k == "id")]:
            params[key] = pool[pick // 2 % len(pool)]


def _check(case: Any, cloud: FakeCloud, checks: list[Any], *, check_2xx_bodies: bool) -> None:
    response = case.call(
        base_url=cloud.base_url,
        headers={"Authorization": f"Bearer {cloud.api_key}"},
        timeout=10,
    )
    if not check_2xx_bodies and _refused_by_the_http_layer(response):
        return
    key = (case.operation.method.upper(), _template(case.operation.path))
    excluded = []
    if response.status_code in UNDOCUMENTED.get(key, {}):
        excluded.append(status_code_conformance)
    if not check_2xx_bodies and 200 <= response.status_code < 300:
        excluded.append(response_schema_conformance)
    if key == ZIP_DOWNLOAD and response.status_code == 200:
        assert response.headers["content-type"] == ["application/zip"]
        excluded += [content_type_conformance, response_schema_conformance]
    try:
        case.validate_response(response, checks=checks, excluded_checks=excluded)
    except FailureGroup as group:
        left = [f for f in group.exceptions if not (key in NAIVE_TIMESTAMPS and _naive(f))]
        if left:
            raise FailureGroup(left, str(group)) from None


def _refused_by_the_http_layer(response: Any) -> bool:
    """aiohttp's own 400 for bytes that are not valid HTTP (negative cases sent a malformed
    Content-Length, and a query past 8,190 bytes): no route saw the request, so no route's
    documented errors apply (uvicorn, in front of the real server, answers such bytes with
    a 400 too). Its body is the parser's message as plain text; every route answers JSON."""
    content_type = (response.headers.get("content-type") or [""])[0]
    return response.status_code == 400 and content_type.startswith("text/plain")


def _naive(failure: Any) -> bool:
    """A schema failure on a created_at/updated_at holding a timestamp without an offset."""
    path = getattr(failure, "instance_path", None) or [None]
    value = getattr(failure, "instance", None)
    return (
        path[-1] in ("created_at", "updated_at")
        and isinstance(value, str)
        and NAIVE.fullmatch(value) is not None
    )


def test_every_fake_route_in_the_spec_is_tested() -> None:
    # Guards the filter: a typo in the matching would silently test nothing.
    tested = {(op.method.upper(), _template(op.path)) for op in _operations()}
    assert len(tested) >= 60, tested  # docs/reliability.md lists them


def _operations() -> list[Any]:
    return [result.ok() for result in positive.get_all_operations()]


@positive.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_valid_requests_get_spec_answers(case: Any, target: Target) -> None:
    _use_known_ids(case, target.known)
    _check(case, target.cloud, CHECKS, check_2xx_bodies=True)


@negative.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_invalid_requests_get_documented_errors(case: Any, target: Target) -> None:
    _check(case, target.cloud, CHECKS, check_2xx_bodies=False)
