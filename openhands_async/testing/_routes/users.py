"""The account's user: users/me (a fixed, plausible user)."""

from __future__ import annotations

from aiohttp import web

from .._responses import json_response
from .._routing import RouteGroup, route

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


class UserRoutes(RouteGroup):
    @route("GET", "/api/v1/users/me", "users_me")
    async def users_me(self, request: web.Request) -> web.StreamResponse:
        return json_response(dict(FAKE_USER))
