"""Custom secrets (`/api/v1/secrets`) and git-provider tokens.

Write-only: a value goes to the server and never comes back (search lists names and
descriptions). Values are held as `SecretStr` and masked in every repr and error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .._constants import MAX_PAGE_SIZE
from ..models_settings import EditResult, GitProvider, Secret, SecretStr
from ..pagination import AsyncPager
from ._base import Resource
from ._redact import guarding, secret_body, secrets_in

_PATH = "/api/v1/secrets"


def _secret_id(secret_id: str) -> str:
    if not isinstance(secret_id, str) or not secret_id:
        raise ValueError(f"a secret id (its name) must be a non-empty str, got {secret_id!r}")
    return quote(secret_id, safe="")


class Secrets(Resource):
    """Custom secrets the agents get as environment variables; a secret's id is its name."""

    def search(
        self,
        *,
        name_contains: str | None = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[Secret]:
        """Names and descriptions (never values), by name; auto-paginating."""
        params = {"name__contains": name_contains}
        return self._search(f"{_PATH}/search", Secret, params, limit=limit, page_size=page_size)

    async def create(
        self, name: str, value: str | SecretStr, *, description: str | None = None
    ) -> EditResult:
        """Create a secret, or overwrite the value of the one with that name."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a secret name must be a non-empty str, got {name!r}")
        masked: dict[str, Any] = {"name": name, "value": SecretStr(value)}
        if description is not None:
            masked["description"] = description
        with guarding(secrets_in(masked)):
            return await self._post(_PATH, cast_to=EditResult, json=secret_body(masked))

    async def update(
        self, secret_id: str, *, name: str | None = None, description: str | None = None
    ) -> EditResult:
        """Rename a secret and/or change its description (its value stays). NotFoundError
        if unknown, BadRequestError if the new name is taken. The server resets the
        description when it is not given, so pass the one to keep."""
        body = {"name": secret_id if name is None else name, "description": description}
        return await self._put(f"{_PATH}/{_secret_id(secret_id)}", cast_to=EditResult, json=body)

    async def delete(self, secret_id: str) -> EditResult:
        """Delete a secret. NotFoundError if unknown."""
        return await self._delete(f"{_PATH}/{_secret_id(secret_id)}", cast_to=EditResult)

    async def set_git_provider(
        self,
        provider: GitProvider | str,
        token: str | SecretStr,
        *,
        host: str | None = None,
        user_id: str | None = None,
    ) -> EditResult:
        """Store a git provider's token (e.g. a GitHub personal access token), so
        conversations can clone and push, and git searches work."""
        hosts = {provider: host} if host else None
        return await self.set_git_providers({provider: token}, hosts=hosts, user_id=user_id)

    async def set_git_providers(
        self,
        tokens: Mapping[GitProvider | str, str | SecretStr],
        *,
        hosts: Mapping[GitProvider | str, str | None] | None = None,
        user_id: str | None = None,
    ) -> EditResult:
        """Store several providers' tokens at once (`{"github": "ghp_...", ...}`)."""
        provider_tokens: dict[str, Any] = {}
        for provider, token in tokens.items():
            entry: dict[str, Any] = {"token": SecretStr(token)}
            host = (hosts or {}).get(provider)
            if host:
                entry["host"] = host
            if user_id:
                entry["user_id"] = user_id
            provider_tokens[str(GitProvider(provider))] = entry
        masked = {"provider_tokens": provider_tokens}
        with guarding(secrets_in(masked)):
            return await self._post(
                f"{_PATH}/git-providers", cast_to=EditResult, json=secret_body(masked)
            )

    async def delete_git_providers(self) -> EditResult:
        """Remove every stored git-provider token."""
        return await self._delete(f"{_PATH}/git-providers", cast_to=EditResult)
