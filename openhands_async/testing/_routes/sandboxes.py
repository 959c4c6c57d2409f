"""Sandboxes: search / batch get / start / pause / resume / delete. Pausing freezes the
sandbox's conversation, resuming continues it (and counts against the running cap)."""

from __future__ import annotations

from aiohttp import web

from .._constants import MAX_PAGE_SIZE, MAX_SANDBOX_IDS
from .._plan import plan_start
from .._responses import concurrency_refusal, json_response, not_found, page_of
from .._routing import RouteGroup, route
from .._state import SandboxRecord, StartTaskRecord
from .._timeline import pause, resume
from .._validation import BadRequest, QueryReader
from .._wire import new_id, new_sandbox_id

BASE = "/api/v1/sandboxes"


class SandboxRoutes(RouteGroup):
    @route("GET", f"{BASE}/search", "search_sandboxes")
    async def search_sandboxes(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        query.check()
        now = self.ctx.now()
        render = self.ctx.render.sandbox
        rendered = [render(s, now) for s in reversed(self.ctx.store.sandboxes.values())]
        shown = [r for r in rendered if r is not None]
        return json_response(page_of(shown, page_id, limit, lambda r: r))

    @route("GET", BASE, "get_sandboxes")
    async def get_sandboxes(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        ids = query.required_list("id")
        query.check()
        if len(ids) > MAX_SANDBOX_IDS:
            raise BadRequest(f"Too many ids requested. Maximum is {MAX_SANDBOX_IDS}.")
        now = self.ctx.now()
        render = self.ctx.render.sandbox
        found = (self.ctx.store.sandboxes.get(i) for i in ids)
        return json_response([render(s, now) if s else None for s in found])

    @route("POST", BASE, "start_sandbox")
    async def start_sandbox(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        query.text("sandbox_spec_id")
        query.check()
        ctx = self.ctx
        now = ctx.now()
        # A bare sandbox: it shows at once and stays STARTING (it has no conversation).
        plan = plan_start(ctx.timing(), None)
        sandbox_id = new_sandbox_id()
        task = StartTaskRecord(
            new_id(), now - plan.offsets[plan.sandbox_phase], {}, plan, "", sandbox_id
        )
        record = SandboxRecord(sandbox_id, task, None)
        ctx.store.sandboxes[sandbox_id] = record
        return json_response(ctx.render.sandbox(record, now))

    def _sandbox(self, request: web.Request) -> SandboxRecord | None:
        record = self.ctx.store.sandboxes.get(request.match_info["sandbox_id"])
        if record is None or record.status(self.ctx.now()) is None:
            return None
        return record

    @route("POST", f"{BASE}/{{sandbox_id}}/pause", "pause_sandbox")
    async def pause_sandbox(self, request: web.Request) -> web.StreamResponse:
        record = self._sandbox(request)
        if record is None:
            return not_found()
        if record.conversation is not None:
            pause(self.ctx.store, record.conversation, self.ctx.now())
        return json_response({"success": True})

    @route("POST", f"{BASE}/{{sandbox_id}}/resume", "resume_sandbox")
    async def resume_sandbox(self, request: web.Request) -> web.StreamResponse:
        record = self._sandbox(request)
        if record is None:
            return not_found()
        conv = record.conversation
        if conv is None:
            return json_response({"success": True})
        ctx, store, now = self.ctx, self.ctx.store, self.ctx.now()
        # Paused while running, it runs again: that counts against the running cap like a
        # start does.
        runs_again = conv.paused_at < conv.settles_at
        if runs_again:
            current = ctx.make_room(now)
            if current is not None:
                return concurrency_refusal(ctx.knobs.max_running, current)
        resume(store, conv, now)
        if runs_again:
            store.note_peak(now)
        return json_response({"success": True})

    @route("DELETE", f"{BASE}/{{sandbox_id}}", "delete_sandbox")
    async def delete_sandbox(self, request: web.Request) -> web.StreamResponse:
        record = self._sandbox(request)
        if record is None:
            return not_found()
        store = self.ctx.store
        if record.conversation is not None:
            # The conversation stays, archived: its sandbox is gone for good.
            pause(store, record.conversation, self.ctx.now())
        del store.sandboxes[record.id]
        return json_response({"success": True})
