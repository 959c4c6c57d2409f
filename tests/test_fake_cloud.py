"""FakeCloud over loopback with plain aiohttp (no SDK), checked against the captured shapes."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import aiohttp
import pytest
from yarl import URL

from openhands_async.testing import FakeCloud, Fault, StreamBehavior

from .conftest import START_SEQUENCE

T = TypeVar("T")

BASE = "/api/v1/app-conversations"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
ZULU = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
NAIVE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?$")
FAST = 0.05  # time_scale for tests: the whole default lifecycle takes ~15 ms

# Field sets and order as captured from a real server (../shared/captures).
TASK_KEYS = [
    "id",
    "created_by_user_id",
    "status",
    "detail",
    "app_conversation_id",
    "sandbox_id",
    "agent_server_url",
    "request",
    "created_at",
    "updated_at",
]
REQUEST_KEYS = [
    "sandbox_id",
    "conversation_id",
    "initial_message",
    "system_message_suffix",
    "processors",
    "llm_model",
    "agent_profile_id",
    "selected_repository",
    "selected_branch",
    "git_provider",
    "suggested_task",
    "title",
    "trigger",
    "pr_number",
    "parent_conversation_id",
    "agent_type",
    "public",
    "plugins",
    "secrets",
]
CONVERSATION_KEYS = [
    "id",
    "created_by_user_id",
    "sandbox_id",
    "selected_repository",
    "selected_branch",
    "git_provider",
    "title",
    "trigger",
    "pr_number",
    "llm_model",
    "agent_kind",
    "metrics",
    "parent_conversation_id",
    "sub_conversation_ids",
    "public",
    "tags",
    "created_at",
    "updated_at",
    "sandbox_status",
    "execution_status",
    "conversation_url",
    "session_api_key",
    "acp_server",
    "launched_agent_profile",
]
TERMINAL = {"finished", "error", "stuck", "waiting_for_confirmation"}


def session(cloud: FakeCloud, **kwargs: Any) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {cloud.api_key}"} if cloud.api_key else {}
    return aiohttp.ClientSession(base_url=cloud.base_url, headers=headers, **kwargs)


def message(text: str) -> dict[str, Any]:
    return {"initial_message": {"content": [{"type": "text", "text": text}]}}


async def start(http: aiohttp.ClientSession, text: str = "hello", **fields: Any) -> Any:
    async with http.post(BASE, json={**message(text), **fields}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def get_json(http: aiohttp.ClientSession, path: str, params: Any = None) -> Any:
    async with http.get(path, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def task_of(http: aiohttp.ClientSession, task_id: str) -> Any:
    return (await get_json(http, f"{BASE}/start-tasks", [("ids", task_id)]))[0]


async def conversation_of(http: aiohttp.ClientSession, conv_id: str) -> Any:
    return (await get_json(http, BASE, [("ids", conv_id)]))[0]


async def eventually(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], tries: int = 500
) -> T:
    """Poll until `done`; bounded in attempts, never asserting on elapsed time."""
    for _ in range(tries):
        value = await read()
        if done(value):
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached the expected state; last: {value!r}")


class Received:
    """What a response delivered, kept even when reading it then fails."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def receive(
    request: AbstractAsyncContextManager[aiohttp.ClientResponse], got: Received | None = None
) -> Received:
    got = got or Received()
    async with request as response:
        got.status = response.status
        got.headers = dict(response.headers)
        async for chunk in response.content.iter_any():
            got.chunks.append(chunk)
    return got


# -- probes and auth -----------------------------------------------------------------------


async def test_probes_answer_without_auth() -> None:
    async with FakeCloud() as cloud, aiohttp.ClientSession(base_url=cloud.base_url) as http:
        for path, body in (
            ("/alive", b'{"status":"ok"}'),
            ("/health", b'"OK"'),
            ("/ready", b'"OK"'),
        ):
            async with http.get(path) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "application/json"
                assert await response.read() == body
        assert cloud.requests["alive"] == cloud.requests["health"] == cloud.requests["ready"] == 1


async def test_bearer_auth() -> None:
    async with (
        FakeCloud(api_key="k1") as cloud,
        aiohttp.ClientSession(base_url=cloud.base_url) as http,
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Session-API-Key": "k1"}):
            async with http.get(f"{BASE}/count", headers=headers) as response:
                assert response.status == 401
                assert await response.json() == {"detail": "Unauthorized"}
        async with http.get(f"{BASE}/count", headers={"Authorization": "Bearer k1"}) as response:
            assert response.status == 200
            assert await response.json() == 0
        async with http.post(f"{BASE}/stream-start", json={}) as response:
            assert response.status == 401
        assert cloud.starts_received == 0


async def test_session_key_auth_like_the_open_source_server() -> None:
    async with (
        FakeCloud(api_key="local", auth="session") as cloud,
        aiohttp.ClientSession(base_url=cloud.base_url) as http,
    ):
        async with http.get(
            f"{BASE}/search", headers={"Authorization": "Bearer local"}
        ) as response:
            assert response.status == 401
        async with http.get(f"{BASE}/search", headers={"X-Session-API-Key": "local"}) as response:
            assert response.status == 200
            assert await response.json() == {"items": [], "next_page_id": None}


async def test_no_auth_when_api_key_is_none() -> None:
    async with FakeCloud(api_key=None, latency=0.01) as cloud, session(cloud) as http:
        assert await get_json(http, f"{BASE}/count") == 0


# -- start, then read ----------------------------------------------------------------------


async def test_start_answers_a_working_task_shaped_like_the_capture() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        body = {
            **message("hello"),
            "conversation_id": "40f6dd70-f35c-413a-81fb-456524f740c7",
            "secrets": {"TOKEN": "s3cret"},
            "title": "My title",
            "unknown_field": 1,
        }
        async with http.post(BASE, json=body) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            raw = await response.read()
        task = json.loads(raw)
        assert b": " not in raw  # compact, like FastAPI
        assert list(task) == TASK_KEYS
        assert list(task["request"]) == REQUEST_KEYS
        assert HEX32.match(task["id"])
        assert task["status"] == "WORKING"
        assert task["app_conversation_id"] is task["sandbox_id"] is task["agent_server_url"] is None
        assert ZULU.match(task["created_at"])
        assert ZULU.match(task["updated_at"])
        request = task["request"]
        assert request["conversation_id"] == "40f6dd70-f35c-413a-81fb-456524f740c7"
        assert request["initial_message"] == {
            "role": "user",
            "content": [{"cache_prompt": False, "type": "text", "text": "hello"}],
            "run": False,
        }
        assert request["secrets"] == {"TOKEN": "**********"}
        assert request["pr_number"] == []
        assert request["agent_type"] == "default"
        assert cloud.starts_received == 1
        assert cloud.start_task(task["id"]) == task


async def test_start_task_and_conversation_advance_to_the_end() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        created = await start(http, "Fix the README", selected_repository="owner/repo")
        seen: list[str] = []

        async def read() -> Any:
            task = await task_of(http, created["id"])
            if not seen or seen[-1] != task["status"]:
                seen.append(task["status"])
            return task

        task = await eventually(read, lambda t: t["status"] == "READY")
        assert seen == [s for s in START_SEQUENCE if s in seen]  # in order, never backwards
        assert list(task) == TASK_KEYS
        # Reads from the database drop the Z, as on the real server.
        assert NAIVE.match(task["created_at"])
        assert NAIVE.match(task["updated_at"])
        assert created["created_at"] == task["created_at"] + "Z"
        conv_id = task["app_conversation_id"]
        assert HEX32.match(conv_id)
        assert task["sandbox_id"]
        assert task["agent_server_url"]
        # Apart from the API (the open-source server: app on :3000, agent servers on :8100...).
        assert task["agent_server_url"].startswith("http://127.0.0.1:")
        assert not task["agent_server_url"].startswith(cloud.base_url)

        conv = await eventually(
            lambda: conversation_of(http, conv_id), lambda c: c["execution_status"] in TERMINAL
        )
        assert list(conv) == CONVERSATION_KEYS
        assert conv["execution_status"] == "finished"
        assert conv["sandbox_status"] == "RUNNING"
        assert conv["sandbox_id"] == task["sandbox_id"]
        assert len(conv["sandbox_id"]) == 22
        assert conv["title"] == "Fix the README"  # named after its message, as Cloud does
        assert conv["selected_repository"] == "owner/repo"
        assert conv["llm_model"] == "openai/fake"
        assert conv["conversation_url"].endswith(f"/api/conversations/{conv_id}")
        assert conv["session_api_key"]
        assert ZULU.match(conv["created_at"])
        assert ZULU.match(conv["updated_at"])
        assert conv["metrics"]["accumulated_token_usage"]["prompt_tokens"] == 20
        sandbox = cloud.sandbox(conv["sandbox_id"])
        assert sandbox is not None
        assert sandbox["status"] == "RUNNING"
        assert sandbox["session_api_key"] == conv["session_api_key"]
        assert cloud.conversation(conv_id) == conv


async def test_the_agent_servers_port_serves_only_the_agent_servers_routes() -> None:
    # As on the open-source server, where the app server (:3000) and the agent servers
    # (:8100...) are separate processes: neither answers the other's paths.
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        created = await start(http)
        task = await eventually(
            lambda: task_of(http, created["id"]), lambda t: t["status"] == "READY"
        )
        agents = URL(task["agent_server_url"])  # http://127.0.0.1:<port>/agent-server/<id>
        agent_port = str(agents.origin())
        socket = f"{agents.path}/sockets/events/{task['app_conversation_id']}"
        for path in (BASE, "/alive"):  # an API path and a probe
            async with http.get(agent_port + path) as response:
                assert response.status == 404, path
        async with http.ws_connect(agent_port + socket) as ws:  # upgraded, then authenticated
            assert ws.protocol is None
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(cloud.base_url + socket)
        assert refused.value.status == 404


async def test_conversation_is_starting_before_ready_and_idle_without_a_message() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        # A READY that never comes: the conversation shows STARTING with its sandbox.
        cloud.start_timeline = (("WORKING", 0), ("WAITING_FOR_SANDBOX", 0), ("READY", 1e9))
        conv_id = uuid.uuid4().hex
        await start(http, conversation_id=conv_id)
        conv = await conversation_of(http, conv_id)
        assert conv["sandbox_status"] == "STARTING"
        assert (
            conv["execution_status"] is conv["conversation_url"] is conv["session_api_key"] is None
        )
        assert conv["sandbox_id"] == conv_id  # a chosen id names the sandbox too

        cloud.start_timeline = (("WORKING", 0), ("READY", 0))
        async with http.post(BASE, json={}) as response:
            task = await response.json()
        assert task["request"]["initial_message"] is None
        task = await eventually(lambda: task_of(http, task["id"]), lambda t: t["status"] == "READY")
        conv = await conversation_of(http, task["app_conversation_id"])
        assert (conv["sandbox_status"], conv["execution_status"]) == ("RUNNING", "idle")


async def test_start_outcome_error_and_run_outcome() -> None:
    async with FakeCloud(time_scale=FAST, start_outcome="ERROR") as cloud, session(cloud) as http:
        created = await start(http)
        task = await eventually(
            lambda: task_of(http, created["id"]), lambda t: t["status"] == "ERROR"
        )
        assert task["detail"] == "500: Agent Server Failed to start properly"
        assert task["app_conversation_id"] is None
        assert task["sandbox_id"] is not None

        cloud.start_outcome = "READY"
        cloud.run_outcome = "stuck"
        created = await start(http)
        task = await eventually(
            lambda: task_of(http, created["id"]), lambda t: t["status"] == "READY"
        )
        conv = await eventually(
            lambda: conversation_of(http, task["app_conversation_id"]),
            lambda c: c["execution_status"] in TERMINAL,
        )
        assert conv["execution_status"] == "stuck"


async def test_markers_give_one_server_mixed_outcomes() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        texts = [
            "plain",
            "[fake:outcome=error]",
            "[fake:start=ERROR]",
            "x [fake:outcome=waiting_for_confirmation, run_seconds=0.5]",
        ]
        tasks = [await start(http, text) for text in texts]
        ids = [t["id"] for t in tasks]
        final = await eventually(
            lambda: get_json(http, f"{BASE}/start-tasks", [("ids", i) for i in ids]),
            lambda ts: all(t["status"] in ("READY", "ERROR") for t in ts),
        )
        assert [t["status"] for t in final] == ["READY", "READY", "ERROR", "READY"]
        conv_ids = [final[i]["app_conversation_id"] for i in (0, 1, 3)]
        convs = await eventually(
            lambda: get_json(http, BASE, [("ids", c) for c in conv_ids]),
            lambda cs: all(c["execution_status"] in TERMINAL for c in cs),
        )
        assert [c["execution_status"] for c in convs] == [
            "finished",
            "error",
            "waiting_for_confirmation",
        ]

        async with http.post(BASE, json=message("[fake:outcome=nope]")) as response:
            assert response.status == 422
            (problem,) = (await response.json())["detail"]
            assert problem["loc"] == ["body", "initial_message"]
        async with http.post(BASE, json=message("[fake:colour=blue]")) as response:
            assert response.status == 422


async def test_start_validation_like_fastapi() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        async with http.post(BASE, json=[1, 2]) as response:
            assert response.status == 422
            msg = "Input should be a valid dictionary or object to extract fields from"
            assert await response.json() == {
                "detail": [
                    {"type": "model_attributes_type", "loc": ["body"], "msg": msg, "input": [1, 2]}
                ]
            }
        async with http.post(
            BASE, data=b"{nope", headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 422
            assert (await response.json())["detail"][0]["type"] == "json_invalid"
        async with http.post(
            f"{BASE}/stream-start", json={"conversation_id": "not-a-uuid"}
        ) as response:
            assert response.status == 422
            (problem,) = (await response.json())["detail"]
            assert problem["type"] == "uuid_parsing"
            assert problem["loc"] == ["body", "conversation_id"]
            assert problem["input"] == "not-a-uuid"
        assert cloud.starts_received == 3
        assert not cloud._store.tasks


# -- stream-start --------------------------------------------------------------------------


async def test_stream_start_framing_is_byte_exact() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        got = await receive(http.post(f"{BASE}/stream-start", json=message("hello")))
        assert got.status == 200
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["Transfer-Encoding"] == "chunked"
        raw = got.body
        assert got.chunks[0].startswith(b"[\n")
        elements = json.loads(raw)
        compact = [json.dumps(e, separators=(",", ":")).encode() for e in elements]
        assert raw == b"[\n" + b",\n".join(compact) + b"]"
        assert [e["status"] for e in elements] == START_SEQUENCE
        assert {e["id"] for e in elements} == {elements[0]["id"]}
        assert all(list(e) == TASK_KEYS for e in elements)
        assert all(ZULU.match(e["updated_at"]) for e in elements)
        assert elements[0]["sandbox_id"] is None
        assert elements[1]["sandbox_id"] is not None
        assert elements[-2]["agent_server_url"] is not None
        assert elements[-1]["app_conversation_id"] is not None
        assert elements[-2]["app_conversation_id"] is None
        assert cloud.requests["stream_start"] == 1


async def test_stream_start_error_ends_the_array() -> None:
    timeline = (("WORKING", 0), ("WAITING_FOR_SANDBOX", 0.01), ("READY", 0.01))
    async with (
        FakeCloud(start_timeline=timeline, start_outcome="ERROR", error_detail="") as cloud,
        session(cloud) as http,
    ):
        async with http.post(f"{BASE}/stream-start", json=message("hello")) as response:
            elements = json.loads(await response.read())
        assert [e["status"] for e in elements] == ["WORKING", "WAITING_FOR_SANDBOX", "ERROR"]
        assert elements[-1]["detail"] == ""


async def test_stream_cut_closes_without_bracket_and_the_task_carries_on() -> None:
    async with (
        FakeCloud(time_scale=FAST, stream=StreamBehavior(cut_after=2)) as cloud,
        session(cloud) as http,
    ):
        got = Received()
        with pytest.raises(aiohttp.ClientPayloadError):
            await receive(http.post(f"{BASE}/stream-start", json=message("hello")), got)
        received = got.body
        assert received.startswith(b"[\n")
        assert not received.endswith(b"]")
        first, second = received[2:].split(b",\n")
        task_id = json.loads(first)["id"]
        assert json.loads(second)["id"] == task_id
        task = await eventually(lambda: task_of(http, task_id), lambda t: t["status"] == "READY")
        assert task["app_conversation_id"]


async def test_stream_stall_keeps_the_connection_open() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        stalling = message("[fake:stream_stall_after=1]")
        async with http.post(f"{BASE}/stream-start", json=stalling) as response:
            received = b""
            while not received.endswith(b"}") or not _parses(received[2:]):
                received += await response.content.readany()
            assert received.startswith(b"[\n")
            assert json.loads(received[2:])["status"] == "WORKING"
            # Nothing more comes, and the connection stays open (no EOF, no error).
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(response.content.readany(), timeout=0.2)
            assert not response.content.at_eof()


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


async def test_stream_garbage_replaces_an_element() -> None:
    behavior = StreamBehavior(garbage=b"<html>oops</html>", garbage_after=1)
    async with FakeCloud(time_scale=FAST, stream=behavior) as cloud, session(cloud) as http:
        async with http.post(f"{BASE}/stream-start", json=message("hello")) as response:
            raw = await response.read()
        assert raw.startswith(b"[\n{")
        assert b"}\n,<html>" not in raw
        assert b"},\n<html>oops</html>,\n{" in raw
        assert raw.endswith(b"]")
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
        # Markers give one start its own misbehaviour on an otherwise clean server.
        cloud.stream = StreamBehavior()
        async with http.post(
            f"{BASE}/stream-start", json=message("[fake:stream_garbage_after=0]")
        ) as response:
            raw = await response.read()
        assert raw.startswith(b"[\n<html>")


# -- batch reads ---------------------------------------------------------------------------


async def test_batch_reads_keep_order_and_answer_null_for_unknown() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        created = await start(http)
        unknown = uuid.uuid4().hex
        dashed = str(uuid.UUID(created["id"]))
        tasks = await get_json(http, f"{BASE}/start-tasks", [("ids", unknown), ("ids", dashed)])
        assert tasks[0] is None
        assert tasks[1]["id"] == created["id"]
        assert await get_json(http, BASE, [("ids", unknown)]) == [None]


async def test_batch_caps_differ_between_conversations_and_start_tasks() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        ids = [uuid.uuid4().hex for _ in range(101)]
        assert await get_json(http, BASE, [("ids", i) for i in ids[:99]]) == [None] * 99
        async with http.get(BASE, params=[("ids", i) for i in ids[:100]]) as response:
            assert response.status == 400
            assert await response.json() == {"detail": "Too many ids requested. Maximum is 99."}
        path = f"{BASE}/start-tasks"
        assert await get_json(http, path, [("ids", i) for i in ids[:100]]) == [None] * 100
        async with http.get(path, params=[("ids", i) for i in ids]) as response:
            assert response.status == 400
            assert "Maximum is 100" in (await response.json())["detail"]


async def test_batch_reads_reject_bad_and_missing_ids() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        async with http.get(BASE, params=[("ids", "not-a-uuid")]) as response:
            assert response.status == 400
            assert (
                await response.read()
                == b'{"detail":"Invalid UUID format for ids: [\'not-a-uuid\']"}'
            )
        # start-tasks types its ids as UUIDs in the spec, so FastAPI answers 422 instead.
        async with http.get(
            f"{BASE}/start-tasks", params=[("ids", uuid.uuid4().hex), ("ids", "x")]
        ) as response:
            assert response.status == 422
            (problem,) = (await response.json())["detail"]
            assert problem["type"] == "uuid_parsing"
            assert problem["loc"] == ["query", "ids", 1]
        for path in (BASE, f"{BASE}/start-tasks"):
            async with http.get(path) as response:
                assert response.status == 422
                assert await response.read() == (
                    b'{"detail":[{"type":"missing","loc":["query","ids"],'
                    b'"msg":"Field required","input":null}]}'
                )


async def test_event_kind_filter_is_an_enum_like_the_real_server() -> None:
    """openhands-ai 1.11.0 answers 422 for a `kind__eq` outside its event kinds."""
    async with FakeCloud() as cloud, session(cloud) as http:
        (cid,) = cloud.seed_conversations(1, started_ago=60)
        path = f"/api/v1/conversation/{cid}/events"
        for route in ("search", "count"):
            async with http.get(f"{path}/{route}", params={"kind__eq": "NoSuchEvent"}) as resp:
                assert resp.status == 422
                (problem,) = (await resp.json())["detail"]
                assert problem["type"] == "enum"
                assert problem["loc"] == ["query", "kind__eq"]
                assert "'MessageEvent'" in problem["msg"]
        async with http.get(f"{path}/count", params={"kind__eq": "MessageEvent"}) as resp:
            assert resp.status == 200
            assert await resp.json() >= 1
        # An unknown conversation counts 0 events (no 404), like the real server.
        unknown = f"/api/v1/conversation/{uuid.uuid4().hex}/events/count"
        async with http.get(unknown) as resp:
            assert resp.status == 200
            assert await resp.json() == 0


async def test_single_conversation_path_is_the_web_app_html() -> None:
    async with FakeCloud() as cloud, aiohttp.ClientSession(base_url=cloud.base_url) as http:
        async with http.get(f"{BASE}/{uuid.uuid4().hex}") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert (await response.text()).startswith("<!DOCTYPE html>")
        assert cloud.requests["conversation_page"] == 1


async def test_unknown_route_and_wrong_method() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        async with http.get("/api/v1/nothing-here") as response:
            assert response.status == 404
            assert await response.json() == {"detail": "Not Found"}
        async with http.put(f"{BASE}/search") as response:
            assert response.status == 405
            assert await response.json() == {"detail": "Method Not Allowed"}
        assert cloud.requests["not_found"] == cloud.requests["method_not_allowed"] == 1


# -- searches ------------------------------------------------------------------------------


async def test_conversation_search_pages_newest_first_with_filters() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        older = cloud.seed_conversations(5, title="Fix the README", started_ago=120)
        newer = cloud.seed_conversations(20, title="Add tests", started_ago=60)
        pages: list[list[str]] = []
        page_id: str | None = None
        while True:
            params = {"limit": "10", **({"page_id": page_id} if page_id else {})}
            page = await get_json(http, f"{BASE}/search", params)
            pages.append([c["id"] for c in page["items"]])
            page_id = page["next_page_id"]
            if page_id is None:
                break
            assert isinstance(page_id, str)
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [i for p in pages for i in p] == newer[::-1] + older[::-1]
        assert await get_json(http, f"{BASE}/count") == 25

        readme = await get_json(http, f"{BASE}/search", {"title__contains": "readme"})
        assert [c["id"] for c in readme["items"]] == older[::-1]
        assert await get_json(http, f"{BASE}/count", {"title__contains": "README"}) == 5

        boundary = cloud.conversation(newer[0])
        assert boundary is not None
        since = {"created_at__gte": boundary["created_at"]}
        assert await get_json(http, f"{BASE}/count", since) == 20
        before = {"created_at__lt": boundary["created_at"]}
        assert await get_json(http, f"{BASE}/count", before) == 5
        sandbox = {"sandbox_id__eq": boundary["sandbox_id"]}
        assert [c["id"] for c in (await get_json(http, f"{BASE}/search", sandbox))["items"]] == [
            newer[0]
        ]


async def test_search_parameters_are_validated() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        for path in (f"{BASE}/search", f"{BASE}/start-tasks/search"):
            for bad in ("0", "101", "many"):
                async with http.get(path, params={"limit": bad}) as response:
                    assert response.status == 422, bad
                    assert (await response.json())["detail"][0]["loc"] == ["query", "limit"]
        async with http.get(f"{BASE}/search", params={"created_at__gte": "yesterday"}) as response:
            assert response.status == 422
        async with http.get(
            f"{BASE}/start-tasks/search", params={"sort_order": "NEWEST"}
        ) as response:
            assert response.status == 422
        # Like the real server: a cursor it never issued restarts at the first page.
        cloud.seed_conversations(1)
        first = await get_json(http, f"{BASE}/search")
        assert await get_json(http, f"{BASE}/search", {"page_id": "garbage!"}) == first


async def test_sub_conversations_are_hidden_unless_asked_for() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        parent = uuid.uuid4().hex
        await start(http, conversation_id=parent)
        child = uuid.uuid4().hex
        await start(http, conversation_id=child, parent_conversation_id=str(uuid.UUID(parent)))
        await eventually(
            lambda: get_json(http, BASE, [("ids", child)]), lambda cs: cs[0] is not None
        )
        plain = await get_json(http, f"{BASE}/search")
        assert [c["id"] for c in plain["items"]] == [parent]
        everything = await get_json(http, f"{BASE}/search", {"include_sub_conversations": "true"})
        assert {c["id"] for c in everything["items"]} == {parent, child}
        conv = cloud.conversation(parent)
        assert conv is not None
        assert conv["sub_conversation_ids"] == [child]


async def test_start_task_search_finds_starting_tasks_only_by_time() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        cloud.start_timeline = (("WORKING", 0), ("READY", 1e9))  # never READY during the test
        slow_id = uuid.uuid4()
        slow = await start(http, conversation_id=str(slow_id))
        cloud.start_timeline = (("WORKING", 0), ("READY", 0))
        fast_id = uuid.uuid4()
        fast = await start(http, conversation_id=fast_id.hex)
        await eventually(lambda: task_of(http, fast["id"]), lambda t: t["status"] == "READY")

        path = f"{BASE}/start-tasks/search"
        by_id = await get_json(http, path, {"conversation_id__eq": str(slow_id)})
        assert by_id == {"items": [], "next_page_id": None}
        by_id = await get_json(http, path, {"conversation_id__eq": str(fast_id)})
        assert [t["id"] for t in by_id["items"]] == [fast["id"]]
        assert (
            await get_json(http, f"{BASE}/start-tasks/count", {"conversation_id__eq": fast_id.hex})
            == 1
        )

        by_time = await get_json(http, path, {"created_at__gte": slow["created_at"]})
        assert [t["id"] for t in by_time["items"]] == [fast["id"], slow["id"]]  # newest first
        found = by_time["items"][1]
        assert found["request"]["conversation_id"] == str(slow_id)  # sent back with dashes
        assert found["status"] == "WORKING"
        assert NAIVE.match(found["created_at"])
        later = await get_json(http, path, {"created_at__gte": fast["created_at"]})
        assert [t["id"] for t in later["items"]] == [fast["id"]]


async def test_start_task_search_sorts_and_pages() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        ids = [(await start(http))["id"] for _ in range(5)]
        path = f"{BASE}/start-tasks/search"
        first = await get_json(http, path, {"limit": "2", "sort_order": "CREATED_AT"})
        assert [t["id"] for t in first["items"]] == ids[:2]
        rest = await get_json(
            http,
            path,
            {"limit": "100", "sort_order": "CREATED_AT", "page_id": first["next_page_id"]},
        )
        assert [t["id"] for t in rest["items"]] == ids[2:]
        assert rest["next_page_id"] is None
        newest = await get_json(http, path)
        assert [t["id"] for t in newest["items"]] == ids[::-1]
        by_update = await get_json(http, path, {"sort_order": "UPDATED_AT_DESC"})
        assert sorted(t["id"] for t in by_update["items"]) == sorted(ids)
        assert await get_json(http, f"{BASE}/start-tasks/count") == 5


# -- measured quirks and limits ------------------------------------------------------------


async def test_duplicate_conversation_id_breaks_the_original() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        conv_id = uuid.uuid4().hex
        first = await start(http, conversation_id=conv_id)
        await eventually(lambda: task_of(http, first["id"]), lambda t: t["status"] == "READY")
        original = await eventually(
            lambda: conversation_of(http, conv_id), lambda c: c["execution_status"] == "finished"
        )
        again = await start(http, conversation_id=str(uuid.UUID(conv_id)))
        assert again["id"] != first["id"]
        task = await eventually(
            lambda: task_of(http, again["id"]), lambda t: t["status"] == "ERROR"
        )
        assert task["detail"] == "500: Agent Server Failed to start properly"
        assert task["sandbox_id"] not in (None, conv_id)  # it started another sandbox
        broken = await conversation_of(http, conv_id)
        assert broken["sandbox_status"] == "RUNNING"
        assert broken["execution_status"] is None
        assert broken["sandbox_id"] == original["sandbox_id"]
        assert cloud.duplicate_starts == 1


async def test_cap_pauses_the_oldest_running_conversation() -> None:
    async with (
        FakeCloud(time_scale=FAST, max_running=2, run_seconds=1e9) as cloud,
        session(cloud) as http,
    ):
        ids = [uuid.uuid4().hex for _ in range(3)]
        for conv_id in ids[:2]:
            await start(http, conversation_id=conv_id)
        assert cloud.running == 2
        assert cloud.paused_by_cap == 0
        await start(http, conversation_id=ids[2])
        assert cloud.paused_by_cap == 1
        assert cloud.peak_running == 2
        assert cloud.running == 2
        convs = await eventually(
            lambda: get_json(http, BASE, [("ids", i) for i in ids]),
            lambda cs: (
                cs[0] is not None
                and all(c and c["execution_status"] not in ("idle", None) for c in cs[1:])
            ),
        )
        assert [c["sandbox_status"] for c in convs] == ["PAUSED", "RUNNING", "RUNNING"]
        assert convs[0]["execution_status"] is None
        assert convs[0]["session_api_key"] is None
        assert convs[1]["execution_status"] == "running"
        sandbox = cloud.sandbox(ids[0])
        assert sandbox is not None
        assert sandbox["status"] == "PAUSED"


async def test_cap_refuses_with_a_concurrency_body() -> None:
    async with (
        FakeCloud(time_scale=FAST, max_running=1, cap_mode="refuse", run_seconds=1e9) as cloud,
        session(cloud) as http,
    ):
        await start(http)
        expected = {"detail": {"error": "CONCURRENCY_LIMIT_REACHED", "limit": 1, "current": 1}}
        for path in (BASE, f"{BASE}/stream-start"):
            async with http.post(path, json=message("one more")) as response:
                assert response.status == 429
                assert "Retry-After" not in response.headers
                assert await response.json() == expected
        assert cloud.starts_received == 3
        assert len(cloud._store.tasks) == 1


async def test_finished_conversations_free_their_slot() -> None:
    async with (
        FakeCloud(time_scale=FAST, max_running=1, cap_mode="refuse") as cloud,
        session(cloud) as http,
    ):
        first = await start(http)
        await eventually(lambda: task_of(http, first["id"]), lambda t: t["status"] == "READY")
        await eventually(lambda: asyncio.sleep(0, cloud.running), lambda running: running == 0)
        await start(http)
        assert cloud.peak_running == 1


async def test_rate_limit_like_the_cloud() -> None:
    async with FakeCloud(rate_limit=(3, 60)) as cloud, session(cloud) as http:
        for remaining in ("2", "1", "0"):
            async with http.get(f"{BASE}/count") as response:
                assert response.status == 200
                assert response.headers["X-RateLimit-Limit"] == "3"
                assert response.headers["X-RateLimit-Remaining"] == remaining
        async with http.get(f"{BASE}/count") as response:
            assert response.status == 429
            assert await response.json() == {"error": "Rate limit exceeded: 3 per 60 second"}
            assert response.headers["X-RateLimit-Remaining"] == "0"
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert int(response.headers["X-RateLimit-Reset"]) > 0
        async with http.get("/alive") as response:
            assert response.status == 200
        cloud.rate_limit = None
        assert await get_json(http, f"{BASE}/count") == 0


# -- faults --------------------------------------------------------------------------------


async def test_fault_respond_defaults_and_consumption() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        cloud.add_fault(Fault(route="count_conversations", times=2))
        for _ in range(2):
            async with http.get(f"{BASE}/count") as response:
                assert response.status == 503
                assert await response.json() == {"detail": "Service Unavailable"}
        assert await get_json(http, f"{BASE}/count") == 0

        cloud.add_fault(
            Fault(
                route="start",
                method="POST",
                status=502,
                body="<h1>Bad gateway</h1>",
                content_type="text/html",
                retry_after="7",
            )
        )
        assert await get_json(http, f"{BASE}/count") == 0  # other routes are untouched
        async with http.post(BASE, json={}) as response:
            assert response.status == 502
            assert response.content_type == "text/html"
            assert response.headers["Retry-After"] == "7"
            assert await response.text() == "<h1>Bad gateway</h1>"
        assert cloud.starts_received == 0
        assert [r.status for r in cloud.request_log if r.route == "count_conversations"] == [
            503,
            503,
            200,
            200,
        ]

        with pytest.raises(ValueError, match="unknown route"):
            cloud.add_fault(Fault(route="strat"))


async def test_fault_without_route_spares_the_probes() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        cloud.add_fault(Fault(status=500, body={"detail": "boom"}, times=None))
        async with http.get("/alive") as response:
            assert response.status == 200
        for path in (f"{BASE}/count", f"{BASE}/search"):
            async with http.get(path) as response:
                assert response.status == 500
                assert await response.json() == {"detail": "boom"}
        cloud.clear_faults()
        assert await get_json(http, f"{BASE}/count") == 0


async def test_fault_reset_before_does_not_reach_the_handler() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        cloud.add_fault(Fault(route="start", action="reset_before"))
        with pytest.raises(aiohttp.ClientConnectionError):
            await receive(http.post(BASE, json=message("hello")))
        assert cloud.starts_received == 0
        assert cloud.requests["start"] == 1
        assert cloud.request_log[-1].status == "reset_before"


async def test_fault_reset_after_headers_loses_the_answer_but_the_start_happened() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        cloud.add_fault(Fault(route="start", action="reset_after_headers"))
        got = Received()
        with pytest.raises(aiohttp.ClientPayloadError):
            await receive(http.post(BASE, json=message("hello")), got)
        assert got.status == 200
        assert int(got.headers["Content-Length"]) > 0
        assert got.body == b""
        assert cloud.starts_received == 1
        assert await get_json(http, f"{BASE}/start-tasks/count") == 1
        assert cloud.request_log[-2].status == "reset_after_headers"


async def test_fault_reset_mid_body() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        cloud.seed_conversations(3, started_ago=60)
        cloud.add_fault(Fault(route="search_conversations", action="reset_mid_body"))
        got = Received()
        with pytest.raises(aiohttp.ClientPayloadError):
            await receive(http.get(f"{BASE}/search"), got)
        received = got.body
        assert received.startswith(b'{"items":[{')
        full = await get_json(http, f"{BASE}/search")
        assert len(received) == len(json.dumps(full, separators=(",", ":")).encode()) // 2

        cloud.add_fault(Fault(route="stream_start", action="reset_mid_body"))
        got = Received()
        with pytest.raises(aiohttp.ClientPayloadError):
            await receive(http.post(f"{BASE}/stream-start", json=message("hi")), got)
        received = got.body
        assert received.startswith(b'[\n{"id":"')
        assert not received.endswith(b"}")


async def test_fault_stall_and_delay() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        cloud.add_fault(Fault(route="count_conversations", action="stall"))
        with pytest.raises(asyncio.TimeoutError):
            await http.get(f"{BASE}/count", timeout=aiohttp.ClientTimeout(total=0.2))
        assert cloud.request_log[-1].status == "stall"
        cloud.add_fault(Fault(route="count_conversations", delay=0.01, status=504))
        async with http.get(f"{BASE}/count") as response:
            assert response.status == 504
            assert await response.json() == {"detail": "Gateway Timeout"}


async def test_fault_hold_runs_the_handler_then_never_answers() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        cloud.add_fault(Fault(route="start", action="hold", skip=1))
        await start(http, "skipped: answered")
        held = asyncio.ensure_future(http.post(BASE, json=message("held")))
        records = await eventually(
            lambda: asyncio.sleep(0, [r.status for r in cloud.request_log if r.route == "start"]),
            lambda statuses: statuses[-1] == "hold",
        )
        assert records[0] == 200
        assert not held.done()  # the server took the start and says nothing
        assert cloud.starts_received == 2
        assert await get_json(http, f"{BASE}/start-tasks/count") == 2
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held


async def test_fault_hold_on_stream_start_sends_headers_only() -> None:
    async with FakeCloud(time_scale=FAST) as cloud, session(cloud) as http:
        cloud.add_fault(Fault(route="stream_start", action="hold"))
        got = Received()
        reading = asyncio.ensure_future(
            receive(http.post(f"{BASE}/stream-start", json=message("held")), got)
        )
        await eventually(
            lambda: asyncio.sleep(0, [r.status for r in cloud.request_log]),
            lambda statuses: statuses == ["hold"],
        )
        assert cloud.starts_received == 1
        assert got.body == b""
        assert not reading.done()
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading


async def test_resume_counts_against_the_cap() -> None:
    async with (
        FakeCloud(time_scale=FAST, max_running=1, run_seconds=1e9) as cloud,
        session(cloud) as http,
    ):
        first, second = uuid.uuid4().hex, uuid.uuid4().hex
        await start(http, conversation_id=first)
        await start(http, conversation_id=second)  # pauses the first
        assert cloud.paused_by_cap == 1
        await eventually(lambda: asyncio.sleep(0, cloud.sandbox(second)), bool)
        async with http.post(f"/api/v1/sandboxes/{first}/resume") as response:
            assert response.status == 200
        assert cloud.paused_by_cap == 2  # the second made room for it
        assert cloud.running == 1
        sandbox = cloud.sandbox(second)
        assert sandbox is not None
        assert sandbox["status"] == "PAUSED"
        cloud.cap_mode = "refuse"
        async with http.post(f"/api/v1/sandboxes/{second}/resume") as response:
            assert response.status == 429
            body = await response.json()
        assert body["detail"]["error"] == "CONCURRENCY_LIMIT_REACHED"
        assert cloud.peak_running == 1


# -- scale and shutdown --------------------------------------------------------------------


async def test_ten_thousand_conversations_are_cheap() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        ids = cloud.seed_conversations(10_000, started_ago=3600)
        assert len(set(ids)) == 10_000
        assert cloud.running == 0
        assert cloud.peak_running == 0
        assert await get_json(http, f"{BASE}/count") == 10_000
        assert cloud.conversation_count() == 10_000
        page = await get_json(http, f"{BASE}/search", {"limit": "100"})
        assert len(page["items"]) == 100
        assert page["next_page_id"]
        assert {c["execution_status"] for c in page["items"]} == {"finished"}
        batch = await get_json(http, BASE, [("ids", i) for i in ids[:99]])
        assert [c["id"] for c in batch] == ids[:99]
        assert cloud.requests.total() == 3

        live = cloud.seed_conversations(10, message="[fake:run_seconds=inf]", started_ago=1)
        assert cloud.running == 10
        conv = cloud.conversation(live[0])
        assert conv is not None
        assert conv["execution_status"] == "running"


async def test_exit_is_prompt_with_open_streams_and_stalls() -> None:
    cloud = FakeCloud(stream=StreamBehavior(stall_after=1))
    await cloud.start()
    async with session(cloud) as http:
        cloud.add_fault(Fault(route="count_conversations", action="stall"))
        stalled = asyncio.ensure_future(http.get(f"{BASE}/count"))
        async with http.post(f"{BASE}/stream-start", json=message("hi")) as response:
            first = await response.content.readuntil(b"}")
            assert first.startswith(b"[\n{")
            await asyncio.wait_for(cloud.stop(), timeout=5)  # bounds a hang, not a duration
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        with pytest.raises(aiohttp.ClientError):
            await stalled
    await cloud.stop()  # idempotent


async def test_request_log_records_every_request() -> None:
    async with FakeCloud() as cloud, session(cloud) as http:
        await get_json(http, f"{BASE}/search", [("limit", "5"), ("title__contains", "x")])
        (record,) = cloud.request_log
        assert (record.method, record.path, record.route, record.status) == (
            "GET",
            f"{BASE}/search",
            "search_conversations",
            200,
        )
        assert record.query == [("limit", "5"), ("title__contains", "x")]


async def test_knobs_are_checked_up_front() -> None:
    with pytest.raises(ValueError, match="start must be one of"):
        FakeCloud(start_outcome="MAYBE")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be >= 0"):
        FakeCloud(start_timeline=[("WORKING", -1.0)])
    with pytest.raises(ValueError, match="cap_mode"):
        FakeCloud(cap_mode="queue")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="action"):
        Fault(action="explode")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        FakeCloud().seed_conversations(1)


async def test_a_wait_under_the_selectors_resolution_is_not_rounded_up_to_it() -> None:
    # epoll counts whole milliseconds (asyncio rounds a timeout up): a run's last message
    # and its final state update, 10 us apart, would go out 1 ms apart. Such a wait yields
    # to the loop (select with no timeout) until it is over.
    async with FakeCloud() as cloud:
        ctx = cloud._ctx
        selector: Any = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        select, timeouts = selector.select, []

        def recording(timeout: float | None = None) -> Any:
            timeouts.append(timeout)
            return select(timeout)

        selector.select = recording
        try:
            deadline = ctx.now() + 50e-6
            assert await ctx.sleep_until(deadline) is False
        finally:
            selector.select = select
        assert ctx.now() >= deadline
        assert all(t == 0 for t in timeouts), timeouts


async def test_a_longer_wait_selects_until_a_millisecond_before_then_yields() -> None:
    # Selected to the deadline, it would end 0-1 ms late (0.5 ms on average: every event an
    # agent server pushes would be that late).
    async with FakeCloud() as cloud:
        ctx = cloud._ctx
        sleep, timed = ctx.sleep, []

        async def recording(seconds: float | None) -> bool:
            if seconds:
                timed.append(seconds)
            return await sleep(seconds)

        ctx.sleep = recording  # type: ignore[method-assign]
        try:
            deadline = ctx.now() + 0.005
            assert await ctx.sleep_until(deadline) is False
        finally:
            ctx.sleep = sleep  # type: ignore[method-assign]
        assert ctx.now() >= deadline  # the rest was yields to the loop
        assert timed  # it did wait, not spin the whole time
        # Computed after `deadline` was, so never more than 4 ms: 1 ms before it at most.
        assert all(seconds <= 0.005 - 0.001 for seconds in timed), timed
