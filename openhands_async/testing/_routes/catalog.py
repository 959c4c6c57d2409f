"""What the server offers: sandbox specs (search / batch get), skills (search, marketplace
preview), LLM models and providers (searches), the web client's configuration, and the
current API key (`/api/keys/current`, a Cloud route: it answers the request's `X-Org-Id`
as the effective organisation, as the Cloud does for a key bound to none)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .._account import SPEC_ID
from .._body import json_body
from .._constants import MAX_PAGE_SIZE, MAX_SANDBOX_IDS
from .._responses import json_response, page_of
from .._routing import RouteGroup, route
from .._validation import BadRequest, Invalid, QueryReader, error

_CONFIG_PAGE = 50
SPEC = {
    "id": SPEC_ID,
    "command": ["python", "-m", "openhands.agent_server"],
    "created_at": "2026-11-22T22:55:02.879717Z",
    "initial_env": {"OH_ENABLE_VS_CODE": "0"},
    "working_dir": ".",
}
SKILLS = [
    {"name": "github", "type": "knowledge", "source": "global", "triggers": ["github", "git"]},
    {"name": "docker", "type": "knowledge", "source": "global", "triggers": ["docker"]},
    {"name": "code-review", "type": "agentskills", "source": "global", "triggers": None},
    {"name": "repo", "type": "repo", "source": "user", "triggers": None},
]
_REQUIRED = ("name", "source")


def _registration_errors(index: int, item: Any) -> list[dict[str, Any]]:
    if not isinstance(item, dict):
        return [error("model_type", ("body", index), "Input should be an object", item)]
    problems = [
        error("missing", ("body", index, key), "Field required", item)
        for key in _REQUIRED
        if key not in item
    ]
    for key in ("name", "source", "ref", "repo_path"):
        value = item.get(key)
        required = key in _REQUIRED and key in item
        if (value is not None or required) and not isinstance(value, str):
            msg = "Input should be a valid string"
            problems.append(error("string_type", ("body", index, key), msg, value))
    return problems


class CatalogRoutes(RouteGroup):
    @route("GET", "/api/v1/sandbox-specs/search", "search_sandbox_specs")
    async def search_sandbox_specs(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        query.check()
        return json_response(page_of([SPEC], page_id, limit, dict))

    @route("GET", "/api/v1/sandbox-specs", "get_sandbox_specs")
    async def get_sandbox_specs(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        ids = query.required_list("id")
        query.check()
        if len(ids) > MAX_SANDBOX_IDS:
            raise BadRequest(f"Too many ids requested. Maximum is {MAX_SANDBOX_IDS}.")
        return json_response([dict(SPEC) if i == SPEC_ID else None for i in ids])

    @route("GET", "/api/v1/skills/search", "search_skills")
    async def search_skills(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        query.check()
        return json_response(page_of(SKILLS, page_id, limit, lambda s: s))

    @route("POST", "/api/v1/skills/marketplace-skills", "marketplace_skills")
    async def marketplace_skills(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        if not isinstance(body, list):
            raise Invalid([error("list_type", ("body",), "Input should be a valid list", body)])
        problems = [p for i, item in enumerate(body) for p in _registration_errors(i, item)]
        if problems:
            raise Invalid(problems)
        skills: list[dict[str, Any]] = []
        plugins: list[dict[str, Any]] = []
        by_marketplace: dict[str, list[str]] = {}
        errors: list[str] = []
        for item in body:
            name, source = item["name"], item["source"]
            if not source.startswith("github:"):
                errors.append(f"Marketplace '{name}': cannot load source {source!r}")
                continue
            skill = f"{name}-helper"
            skills.append(
                {"name": skill, "type": "agentskills", "source": source, "triggers": None}
            )
            plugins.append(
                {
                    "name": f"{name}-plugin",
                    "description": None,
                    "source": source,
                    "marketplace": name,
                }
            )
            by_marketplace[name] = [skill]
        answer = {
            "skills": skills,
            "plugins": plugins,
            "marketplace_skills": by_marketplace,
            "errors": errors,
        }
        return json_response(answer)

    @route("GET", "/api/v1/config/models/search", "search_models")
    async def search_models(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", _CONFIG_PAGE, gt=0, le=MAX_PAGE_SIZE)
        text = query.text("query")
        verified = query.boolean("verified__eq", False) if query.text("verified__eq") else None
        provider = query.text("provider__eq")
        query.check()
        models = [
            m
            for m in self.ctx.account.models
            if (not text or text.lower() in m["name"].lower())
            and (verified is None or m["verified"] == verified)
            and (provider is None or m["provider"] == provider)
        ]
        return json_response(page_of(models, page_id, limit, dict))

    @route("GET", "/api/v1/config/providers/search", "search_providers")
    async def search_providers(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", _CONFIG_PAGE, gt=0, le=MAX_PAGE_SIZE)
        text = query.text("query")
        verified = query.boolean("verified__eq", False) if query.text("verified__eq") else None
        query.check()
        names: dict[str, bool] = {}
        for m in self.ctx.account.models:
            if m.get("provider"):
                names[m["provider"]] = names.get(m["provider"], False) or m["verified"]
        providers = [
            {"name": name, "verified": ok}
            for name, ok in sorted(names.items())
            if (not text or text.lower() in name.lower()) and (verified is None or ok == verified)
        ]
        return json_response(page_of(providers, page_id, limit, dict))

    @route("GET", "/api/v1/web-client/config", "web_client_config")
    async def web_client_config(self, request: web.Request) -> web.StreamResponse:
        return json_response(
            {
                "app_mode": "saas",
                "posthog_client_key": None,
                "feature_flags": {"enable_billing": False, "enable_acp": True},
                "providers_configured": ["github"],
                "maintenance_start_time": None,
                "auth_url": None,
                "recaptcha_site_key": None,
                "faulty_models": [],
                "error_message": None,
                "updated_at": self.ctx.clock.iso(self.ctx.now()),
                "github_app_slug": None,
                "kind": "WebClientConfig",
            }
        )

    @route("GET", "/api/keys/current", "current_api_key")
    async def current_api_key(self, request: web.Request) -> web.StreamResponse:
        org = request.headers.get("X-Org-Id") or "fake-org-0001"
        return json_response(
            {
                "id": 1,
                "name": "fake-key",
                "org_id": org,
                "bound_org_id": None,
                "user_id": "fake-user-0001",
                "auth_type": "api_key",
            }
        )
