"""The account behind the API key."""

from __future__ import annotations

from ..models import User
from ._base import Resource

_PATH = "/api/v1/users/me"


class Users(Resource):
    """The account behind the API key."""

    async def me(self) -> User:
        """The signed-in user (SaasUserInfo): id, email, organization, role, settings."""
        return await self._get(_PATH, cast_to=User)
