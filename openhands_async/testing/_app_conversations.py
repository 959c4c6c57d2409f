"""One conversation's endpoints (send-message, update, delete, download, workspace reads),
the sandbox endpoints and users/me; pausing, resuming and re-running act on the timeline."""

from __future__ import annotations

import heapq
import io
import json
import zipfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._app_events import ensure_events, message_text, run_events, shift_after, visible
from ._state import INF, ConversationRecord, SandboxRecord, StartTaskRecord, Store
from ._validation import BadRequest, Invalid, QueryReader, error
from ._wire import new_id, new_sandbox_id, uuid_hex

if TYPE_CHECKING:
    from ._app import Api, Handler

ROUTES = frozenset(
    {
        "send_message",
        "update_conversation",
        "delete_conversation",
        "download_conversation",
        "git_changes",
        "git_diff",
        "read_file",
        "search_sandboxes",
        "get_sandboxes",
        "start_sandbox",
        "pause_sandbox",
        "resume_sandbox",
        "delete_sandbox",
        "users_me",
    }
)
MAX_SANDBOX_IDS = 99
WORKSPACE_FILE = "hello.txt"
WORKSPACE_TEXT = "hello\n"
FAKE_USER = {
    "id": "fake-user-0001",
    "email": "developer@example.com",
    "email_verified": True,
    "org_id": "fake-org-0001",
    "org_name": "Fake Org",
    "role": "owner",
    "language": "en",
    "git_user_name": "openhands",
    "git_user_email": "openhands@all-hands.dev",
    "v1_enabled": True,
    "max_budget_per_task": None,
    "permissions": ["manage_conversations", "manage_sandboxes"],
    "user_version": 1,
    "enable_sound_notifications": False,
}
UPDATABLE = ("title", "public", "selected_repository", "selected_branch", "git_provider")


def activate(store: Store, conv: ConversationRecord) -> None:
    """Count the conversation as running again until it settles."""
    store._active[conv.id] = conv
    if conv.settles_at < INF:
        heapq.heappush(store._settling, (conv.settles_at, conv.id))


def pause(store: Store, conv: ConversationRecord, now: float) -> None:
    ensure_events(conv)
    conv.paused_at = min(conv.paused_at, now)
    store._active.pop(conv.id, None)


def resume(store: Store, conv: ConversationRecord, now: float) -> None:
    """Continue a paused conversation where it stopped: its pending timeline moves on."""
    if conv.paused_at == INF:
        return
    moment, delta = conv.paused_at, now - conv.paused_at
    shift_after(conv, moment, delta)
    if conv.running_at > moment:
        conv.running_at += delta
    if conv.outcome_at > moment:
        conv.outcome_at += delta
    conv.paused_at = INF
    activate(store, conv)


class ConversationRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.cloud = api.cloud

    def routes(self) -> Iterable[tuple[str, str, str, Handler]]:
        one = "/api/v1/app-conversations/{conversation_id}"
        sandboxes = "/api/v1/sandboxes"
        return (
            ("POST", f"{one}/send-message", "send_message", self.send_message),
            ("PATCH", one, "update_conversation", self.update),
            ("DELETE", one, "delete_conversation", self.delete),
            ("GET", f"{one}/download", "download_conversation", self.download),
            ("GET", f"{one}/git/changes", "git_changes", self.git_changes),
            ("GET", f"{one}/git/diff", "git_diff", self.git_diff),
            ("GET", f"{one}/file", "read_file", self.read_file),
            ("GET", f"{sandboxes}/search", "search_sandboxes", self.search_sandboxes),
            ("GET", sandboxes, "get_sandboxes", self.get_sandboxes),
            ("POST", sandboxes, "start_sandbox", self.start_sandbox),
            ("POST", f"{sandboxes}/{{sandbox_id}}/pause", "pause_sandbox", self.pause_sandbox),
            ("POST", f"{sandboxes}/{{sandbox_id}}/resume", "resume_sandbox", self.resume_sandbox),
            ("DELETE", f"{sandboxes}/{{sandbox_id}}", "delete_sandbox", self.delete_sandbox),
            ("GET", "/api/v1/users/me", "users_me", self.users_me),
        )

    # -- helpers -----------------------------------------------------------------------

    def _conversation(self, request: web.Request) -> ConversationRecord | None:
        raw = request.match_info["conversation_id"]
        conv = self.cloud._store.conversations.get(uuid_hex(raw) or "")
        if conv is None or self.cloud._clock.now() < conv.created:
            return None
        return conv

    @staticmethod
    def _missing(what: str = "Item not found") -> web.Response:
        from ._app import json_response

        return json_response({"detail": what}, 404)

    async def _json_object(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise Invalid([error("json_invalid", ("body",), "JSON decode error", None)]) from None
        if not isinstance(body, dict):
            raise Invalid(
                [error("model_attributes_type", ("body",), "Input should be an object", body)]
            )
        return body

    # -- one conversation --------------------------------------------------------------

    async def send_message(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        body = await self._json_object(request)
        content = body.get("content")
        if not isinstance(content, list) or not content:
            raise Invalid(
                [
                    error(
                        "too_short",
                        ("body", "content"),
                        "List should have at least 1 item",
                        content,
                    )
                ]
            )
        run = body.get("run", True)
        conv = self._conversation(request)
        if conv is None:
            return self._missing("Conversation not found")
        store, now = self.cloud._store, self.cloud._clock.now()
        if conv.task.sandbox_id not in store.sandboxes:
            return json_response({"detail": "Conversation is archived"}, 410)
        view = conv.view(now)
        status, execution = view if view else ("MISSING", None)
        if status == "ERROR":
            return json_response({"detail": "Sandbox is in error state"}, 503)
        if status != "RUNNING":
            return json_response(
                {
                    "detail": f"Sandbox {conv.task.sandbox_id} is {status}. "
                    "Resume it first via POST /sandboxes/{id}/resume"
                },
                409,
            )
        texts = [
            c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)
        ]
        text = "\n".join(texts) or "(image)"
        events = ensure_events(conv)
        if run and execution != "running" and conv.broken_at == INF:
            plan = conv.task.plan
            conv.running_at = now + plan.idle_seconds
            conv.outcome_at = conv.running_at + plan.run_seconds
            events.extend(run_events(conv, text, now))
            activate(store, conv)
        else:
            events.extend(run_events_user_only(conv, text, now))
        return json_response({"success": True, "sandbox_status": "RUNNING", "message": None})

    async def update(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        body = await self._json_object(request)
        conv = self._conversation(request)
        if conv is None:
            return self._missing()
        for key in UPDATABLE:
            if key in body:
                conv.task.request[key] = body[key]
        now = self.cloud._clock.now()
        return json_response(self.cloud._render().conversation(conv, now))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        conv = self._conversation(request)
        if conv is None:
            return self._missing()
        store = self.cloud._store
        store.conversations.pop(conv.id, None)
        store._active.pop(conv.id, None)
        store.sandboxes.pop(conv.task.sandbox_id, None)
        return json_response({"success": True})

    async def download(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        if conv is None:
            return self._missing()
        events = visible(conv, self.cloud._clock.now())
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("meta.json", json.dumps({"id": conv.id}))
            for i, event in enumerate(events):
                rendered = {k: v for k, v in event.items() if k != "_at"}
                archive.writestr(f"events/event-{i:05d}.json", json.dumps(rendered))
            archive.writestr(WORKSPACE_FILE, WORKSPACE_TEXT)
        return web.Response(
            body=buffer.getvalue(),
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{conv.id}.zip"'},
        )

    async def git_changes(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        query = QueryReader(request.query)
        query.text("ref")
        if query.text("path") is None:
            query.errors.append(error("missing", ("query", "path"), "Field required", None))
        query.check()
        conv = self._conversation(request)
        if conv is None:
            return self._missing()
        done = self.cloud._clock.now() >= conv.outcome_at
        return json_response([{"status": "ADDED", "path": WORKSPACE_FILE}] if done else [])

    async def git_diff(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        query = QueryReader(request.query)
        path = query.text("path")
        if path is None:
            query.errors.append(error("missing", ("query", "path"), "Field required", None))
        query.check()
        conv = self._conversation(request)
        if conv is None:
            return self._missing()
        modified = WORKSPACE_TEXT if path == WORKSPACE_FILE else ""
        return json_response({"original": "", "modified": modified})

    async def read_file(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        query = QueryReader(request.query)
        file_path = query.text("file_path")
        query.check()
        # Like the real server (and the spec's description): an unknown conversation or a
        # missing file reads as "", never a 404.
        conv = self._conversation(request)
        found = conv is not None and file_path == WORKSPACE_FILE
        return json_response(WORKSPACE_TEXT if found else "")

    # -- sandboxes ---------------------------------------------------------------------

    async def search_sandboxes(self, request: web.Request) -> web.StreamResponse:
        from ._app import _decode_page, _next_page, json_response

        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", 100, gt=0, le=100)
        query.check()
        now = self.cloud._clock.now()
        render = self.cloud._render().sandbox
        rendered = [render(s, now) for s in reversed(self.cloud._store.sandboxes.values())]
        shown = [r for r in rendered if r is not None]
        offset = _decode_page(page_id)
        return json_response(
            {
                "items": shown[offset : offset + limit],
                "next_page_id": _next_page(offset, limit, len(shown)),
            }
        )

    async def get_sandboxes(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        query = QueryReader(request.query)
        ids = query.required_list("id")
        query.check()
        if len(ids) > MAX_SANDBOX_IDS:
            raise BadRequest(f"Too many ids requested. Maximum is {MAX_SANDBOX_IDS}.")
        now = self.cloud._clock.now()
        render = self.cloud._render().sandbox
        found = (self.cloud._store.sandboxes.get(i) for i in ids)
        return json_response([render(s, now) if s else None for s in found])

    async def start_sandbox(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response
        from ._plan import plan_start

        query = QueryReader(request.query)
        query.text("sandbox_spec_id")
        query.check()
        cloud = self.cloud
        now = cloud._clock.now()
        # A bare sandbox: it shows at once and stays STARTING (it has no conversation).
        plan = plan_start(cloud._timing(), None)
        sandbox_id = new_sandbox_id()
        task = StartTaskRecord(
            new_id(), now - plan.offsets[plan.sandbox_phase], {}, plan, "", sandbox_id
        )
        record = SandboxRecord(sandbox_id, task, None)
        cloud._store.sandboxes[sandbox_id] = record
        return json_response(cloud._render().sandbox(record, now))

    def _sandbox(self, request: web.Request) -> SandboxRecord | None:
        record = self.cloud._store.sandboxes.get(request.match_info["sandbox_id"])
        if record is None or record.status(self.cloud._clock.now()) is None:
            return None
        return record

    async def pause_sandbox(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        record = self._sandbox(request)
        if record is None:
            return self._missing()
        if record.conversation is not None:
            pause(self.cloud._store, record.conversation, self.cloud._clock.now())
        return json_response({"success": True})

    async def resume_sandbox(self, request: web.Request) -> web.StreamResponse:
        from ._app import concurrency_refusal, json_response

        record = self._sandbox(request)
        if record is None:
            return self._missing()
        conv = record.conversation
        if conv is None:
            return json_response({"success": True})
        cloud, store, now = self.cloud, self.cloud._store, self.cloud._clock.now()
        # Paused while running, it runs again: that counts against the running cap like a
        # start does (see DESIGN.md).
        runs_again = conv.paused_at < conv.settles_at
        if runs_again:
            current = store.make_room(now, cloud.max_running, cloud.cap_mode)
            if current is not None:
                return concurrency_refusal(cloud.max_running, current)
        resume(store, conv, now)
        if runs_again:
            store.note_peak(now)
        return json_response({"success": True})

    async def delete_sandbox(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        record = self._sandbox(request)
        if record is None:
            return self._missing()
        store = self.cloud._store
        if record.conversation is not None:
            # The conversation stays, archived: its sandbox is gone for good.
            pause(store, record.conversation, self.cloud._clock.now())
        del store.sandboxes[record.id]
        return json_response({"success": True})

    async def users_me(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        return json_response(dict(FAKE_USER))


def run_events_user_only(conv: ConversationRecord, text: str, now: float) -> list[dict[str, Any]]:
    """Only the user's message (run=False, or the agent is already working)."""
    from ._app_events import _message

    return [{"_at": now, **_message("user", "user", text, None)}]


__all__ = ["ROUTES", "ConversationRoutes", "message_text"]
