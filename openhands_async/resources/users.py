from __future__ import annotations

from .._converter import structure
from ..models import User
from ._base import Resource

_PATH = "/api/v1/users/me"


class Users(Resource):
    """The account behind the API key."""

    async def me(self) -> User:
        """The signed-in user (SaasUserInfo): id, email, organization, role, settings."""
        data = await self._client.request("GET", _PATH)
        return structure(data, User, method="GET", url=self._client.url(_PATH))
