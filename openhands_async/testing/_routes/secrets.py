"""Custom secrets (search / create / update / delete; a secret's id is its name) and
git-provider tokens. Values are stored, never answered: search lists names and
descriptions only, as the real server does."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from .._account import SecretRecord
from .._body import check, json_body, json_object, text_field
from .._constants import MAX_PAGE_SIZE
from .._responses import json_response, not_found
from .._routing import RouteGroup, route
from .._validation import QueryReader, error

BASE = "/api/v1/secrets"
ONE = f"{BASE}/{{secret_id}}"
PROVIDERS = (
    "github",
    "gitlab",
    "bitbucket",
    "bitbucket_data_center",
    "forgejo",
    "azure_devops",
    "enterprise_sso",
)


# Secrets become environment variables: the real server refuses other names (422).
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _name_error(name: str) -> dict[str, Any]:
    msg = (
        f"Value error, Invalid secret name '{name}'. Must start with a letter or underscore, "
        "and contain only alphanumeric characters and underscores."
    )
    return error("value_error", ("body", "name"), msg, name)


class SecretRoutes(RouteGroup):
    @route("POST", f"{BASE}/git-providers", "store_git_providers")
    async def store_git_providers(self, request: web.Request) -> web.StreamResponse:
        body = json_object(await json_body(request))
        tokens = body.get("provider_tokens", {})
        errors: list[dict[str, Any]] = []
        if not isinstance(tokens, dict):
            errors.append(
                error(
                    "dict_type",
                    ("body", "provider_tokens"),
                    "Input should be a valid dictionary",
                    tokens,
                )
            )
            tokens = {}
        accepted: dict[str, dict[str, Any]] = {}
        for provider, token in tokens.items():
            loc = ("body", "provider_tokens", provider)
            if provider not in PROVIDERS:
                errors.append(
                    error("enum", (*loc, "[key]"), "Input should be a valid provider", provider)
                )
                continue
            if not isinstance(token, dict):
                errors.append(error("model_type", loc, "Input should be an object", token))
                continue
            entry = {k: token.get(k) for k in ("token", "user_id", "host")}
            for key, value in entry.items():
                if value is not None and not isinstance(value, str):
                    errors.append(
                        error("string_type", (*loc, key), "Input should be a valid string", value)
                    )
            accepted[provider] = entry
        check(errors)
        stored = self.ctx.account.provider_tokens
        for provider, entry in accepted.items():
            previous = stored.get(provider, {})
            # An empty token keeps the stored one (the settings page re-sends hosts only).
            if not entry.get("token") and previous.get("token"):
                entry["token"] = previous["token"]
            stored[provider] = entry
        return json_response({"message": "Git providers stored"})

    @route("DELETE", f"{BASE}/git-providers", "unset_git_providers")
    async def unset_git_providers(self, request: web.Request) -> web.StreamResponse:
        self.ctx.account.provider_tokens.clear()
        return json_response({"message": "Unset Git provider tokens"})

    @route("GET", f"{BASE}/search", "search_secrets")
    async def search_secrets(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        contains = query.text("name__contains")
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        query.check()
        listed = [
            {"name": name, "description": record.description}
            for name, record in sorted(self.ctx.account.secrets.items())
            if not contains or contains.lower() in name.lower()
        ]
        # The real server's cursor is the last name of the page before.
        start = next((i + 1 for i, s in enumerate(listed) if s["name"] == page_id), 0)
        items = listed[start : start + limit]
        more = start + limit < len(listed)
        return json_response({"items": items, "next_page_id": items[-1]["name"] if more else None})

    @route("POST", BASE, "create_secret")
    async def create_secret(self, request: web.Request) -> web.StreamResponse:
        body = json_object(await json_body(request))
        errors: list[dict[str, Any]] = []
        name = text_field(body, "name", errors)
        value = text_field(body, "value", errors)
        description = text_field(body, "description", errors, required=False)
        if name is not None and not SECRET_NAME.fullmatch(name):
            errors.append(_name_error(name))
        check(errors)
        assert name is not None
        assert value is not None
        secrets = self.ctx.account.secrets
        if description is None and name in secrets:
            description = secrets[name].description
        secrets[name] = SecretRecord(value, description if description is not None else "")
        return json_response({"message": "Secret created successfully"}, 201)

    @route("PUT", ONE, "update_secret")
    async def update_secret(self, request: web.Request) -> web.StreamResponse:
        secret_id = request.match_info["secret_id"]
        body = json_object(await json_body(request))
        errors: list[dict[str, Any]] = []
        name = text_field(body, "name", errors)
        description = text_field(body, "description", errors, required=False)
        if name is not None and not SECRET_NAME.fullmatch(name):
            errors.append(_name_error(name))
        check(errors)
        assert name is not None
        secrets = self.ctx.account.secrets
        if secret_id not in secrets:
            return not_found(f"Secret with ID {secret_id} not found")
        if name != secret_id and name in secrets:
            return json_response({"detail": f"Secret {name} already exists"}, 400)
        record = secrets.pop(secret_id)
        secrets[name] = SecretRecord(record.value, description or "")
        return json_response({"message": "Secret updated successfully"})

    @route("DELETE", ONE, "delete_secret")
    async def delete_secret(self, request: web.Request) -> web.StreamResponse:
        secret_id = request.match_info["secret_id"]
        if self.ctx.account.secrets.pop(secret_id, None) is None:
            return not_found(f"Secret with ID {secret_id} not found")
        return json_response({"message": "Secret deleted successfully"})
