"""Git through the account's connected provider: installations, repositories, branches and
suggested tasks (`/api/v1/git/...`). Every search but suggested tasks names its `provider`
(the server answers 422 without one); with no token for it the server answers 403."""

from __future__ import annotations

from .._base_client import BaseClient
from .._constants import MAX_PAGE_SIZE
from ..models_catalog import Branch, Repository, SuggestedTask
from ..models_settings import GitProvider
from ..pagination import AsyncPager
from ._base import Resource

_PATH = "/api/v1/git"


def _provider(provider: GitProvider | str) -> str:
    return str(GitProvider(provider))


class Installations(Resource):
    """`client.git.installations`: the provider's app installations."""

    def search(
        self,
        provider: GitProvider | str,
        *,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[str]:
        """The provider's app installations the user can use (their ids)."""
        params = {"provider": _provider(provider)}
        path = f"{_PATH}/installations/search"
        return self._search(path, str, params, limit=limit, page_size=page_size)


class Repositories(Resource):
    """`client.git.repositories`: repositories the user can reach."""

    def search(
        self,
        provider: GitProvider | str,
        *,
        query: str | None = None,
        installation_id: str | None = None,
        sort_order: str | None = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[Repository]:
        """Repositories matching `query` (the user's own without one); `sort_order` is
        e.g. `stars-desc` or `updated-asc`."""
        params = {
            "provider": _provider(provider),
            "query": query,
            "installation_id": installation_id,
            "sort_order": sort_order,
        }
        path = f"{_PATH}/repositories/search"
        return self._search(path, Repository, params, limit=limit, page_size=page_size)


class Branches(Resource):
    """`client.git.branches`: a repository's branches."""

    def search(
        self,
        provider: GitProvider | str,
        repository: str,
        query: str,
        *,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[Branch]:
        """Branches of `repository` (`owner/repo`) whose name matches `query`."""
        params = {"provider": _provider(provider), "repository": repository, "query": query}
        path = f"{_PATH}/branches/search"
        return self._search(path, Branch, params, limit=limit, page_size=page_size)


class SuggestedTasks(Resource):
    """`client.git.suggested_tasks`: work the git providers suggest."""

    def search(
        self, *, limit: int | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncPager[SuggestedTask]:
        """Work the provider suggests (failing checks, merge conflicts, open issues...)."""
        path = f"{_PATH}/suggested-tasks/search"
        return self._search(path, SuggestedTask, {}, limit=limit, page_size=page_size)


class Git(Resource):
    """`client.git`: `installations`, `repositories`, `branches`, `suggested_tasks`."""

    def __init__(self, client: BaseClient) -> None:
        super().__init__(client)
        self.installations = Installations(client)
        self.repositories = Repositories(client)
        self.branches = Branches(client)
        self.suggested_tasks = SuggestedTasks(client)
