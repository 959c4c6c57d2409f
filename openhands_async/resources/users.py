"""The account behind the API key, and its git identity."""

from __future__ import annotations

from ..models import User
from ..models_catalog import GitInfo, GitOrganizations
from ._base import Resource

_PATH = "/api/v1/users/me"
_USERS = "/api/v1/users"


class Users(Resource):
    """The account behind the API key."""

    async def me(self) -> User:
        """The signed-in user (SaasUserInfo): id, email, organization, role, settings."""
        return await self._get(_PATH, cast_to=User)

    async def git_info(self) -> GitInfo:
        """The user on the connected git provider. PermissionDeniedError (403) when no git
        provider is connected."""
        return await self._get(f"{_USERS}/git-info", cast_to=GitInfo)

    async def git_organizations(self) -> GitOrganizations:
        """The git organisations the user belongs to on the active provider (Cloud only:
        the open-source server does not serve it)."""
        return await self._get(f"{_USERS}/git-organizations", cast_to=GitOrganizations)
