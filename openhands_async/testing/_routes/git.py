"""Git through the connected provider: installations / repositories / branches / suggested
tasks searches, and the user's git identity (users/git-info, users/git-organizations).

Like the real server: without a stored token for the provider every route answers 403
("Git provider token required"); a token is stored through secrets/git-providers. The
repositories come from `Account.repositories` (seeded; tests may change them).
"""

from __future__ import annotations

import zlib
from typing import Any

from aiohttp import web

from .._constants import MAX_PAGE_SIZE
from .._responses import json_response, page_of
from .._routing import RouteGroup, route
from .._validation import QueryReader, error
from .secrets import PROVIDERS

BASE = "/api/v1/git"
SORTS = ("stars-desc", "stars-asc", "forks-desc", "forks-asc", "updated-desc", "updated-asc")
_BRANCH_PAGE = 30
_TOKEN_REQUIRED = "Git provider token required (such as GitHub)."
_BRANCHES = ("main", "develop", "feature/login", "fix/readme")


def _forbidden(detail: str = _TOKEN_REQUIRED) -> web.Response:
    return json_response({"detail": detail}, 403)


class GitRoutes(RouteGroup):
    def _connected(self, provider: str | None) -> bool:
        tokens = self.ctx.account.provider_tokens
        return bool(tokens) if provider is None else bool(tokens.get(provider, {}).get("token"))

    @route("GET", f"{BASE}/installations/search", "search_installations")
    async def search_installations(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        provider = query.choice("provider", "", PROVIDERS)
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        _required(query, "provider")
        query.check()
        if not self._connected(provider):
            return _forbidden()
        owners = sorted({r["full_name"].split("/")[0] for r in self._repos(provider)})
        installations = [f"{provider}-installation-{owner}" for owner in owners]
        return json_response(page_of(installations, page_id, limit, lambda i: i))

    @route("GET", f"{BASE}/repositories/search", "search_repositories")
    async def search_repositories(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        provider = query.choice("provider", "", PROVIDERS)
        text = query.text("query")
        query.text("installation_id")
        sort = query.text("sort_order")
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        _required(query, "provider")
        if sort is not None:
            query.choice("sort_order", "", SORTS)
        query.check()
        if not self._connected(provider):
            return _forbidden()
        repos = [
            r for r in self._repos(provider) if not text or text.lower() in r["full_name"].lower()
        ]
        if sort is not None and sort.startswith("stars"):
            repos.sort(key=lambda r: r.get("stargazers_count") or 0, reverse=sort.endswith("desc"))
        return json_response(page_of(repos, page_id, limit, dict))

    @route("GET", f"{BASE}/branches/search", "search_branches")
    async def search_branches(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        provider = query.choice("provider", "", PROVIDERS)
        repository = query.text("repository")
        text = query.text("query")
        page_id = query.text("page_id")
        limit = query.integer("limit", _BRANCH_PAGE, gt=0, le=MAX_PAGE_SIZE)
        for name in ("provider", "repository", "query"):
            _required(query, name)
        query.check()
        if not self._connected(provider):
            return _forbidden()
        # An unknown repository has no branches (the provider's 404 is not passed on).
        known = any(r["full_name"] == repository for r in self._repos(provider))
        branches = [_branch(b) for b in _BRANCHES if known and (text or "").lower() in b]
        return json_response(page_of(branches, page_id, limit, dict))

    @route("GET", f"{BASE}/suggested-tasks/search", "search_suggested_tasks")
    async def search_suggested_tasks(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", _BRANCH_PAGE, gt=0, le=MAX_PAGE_SIZE)
        query.check()
        provider = self.ctx.account.connected_provider()
        if provider is None or not self._connected(provider):
            return _forbidden()
        tasks = [
            {
                "git_provider": provider,
                "task_type": kind,
                "repo": repo["full_name"],
                "issue_number": 10 + i,
                "title": f"{kind.replace('_', ' ').lower()} in {repo['full_name']}",
            }
            for i, (kind, repo) in enumerate(
                zip(
                    ("FAILING_CHECKS", "OPEN_ISSUE", "OPEN_PR"), self._repos(provider), strict=False
                )
            )
        ]
        return json_response(page_of(tasks, page_id, limit, dict))

    @route("GET", "/api/v1/users/git-info", "users_git_info")
    async def users_git_info(self, request: web.Request) -> web.StreamResponse:
        if not self._connected(None):
            return _forbidden("Git provider not connected")
        return json_response(
            {
                "id": "583231",
                "login": "developer",
                "avatar_url": "https://avatars.example.com/u/583231",
                "company": "Fake Org",
                "name": "Dee Veloper",
                "email": "developer@example.com",
            }
        )

    @route("GET", "/api/v1/users/git-organizations", "users_git_organizations")
    async def users_git_organizations(self, request: web.Request) -> web.StreamResponse:
        provider = self.ctx.account.connected_provider()
        if provider is None or not self._connected(provider):
            return _forbidden("Git provider not connected")
        owners = sorted({r["full_name"].split("/")[0] for r in self._repos(provider)})
        return json_response({"provider": provider, "organizations": owners})

    def _repos(self, provider: str | None) -> list[dict[str, Any]]:
        return list(self.ctx.account.repositories.get(provider or "", []))


def _required(query: QueryReader, name: str) -> None:
    if query.text(name) is None:
        query.errors.append(error("missing", ("query", name), "Field required", None))


def _branch(name: str) -> dict[str, Any]:
    sha = f"{zlib.crc32(name.encode()):08x}" * 5
    return {
        "name": name,
        "commit_sha": sha,
        "protected": name == "main",
        "last_push_date": "2026-11-01T12:00:00Z",
    }
