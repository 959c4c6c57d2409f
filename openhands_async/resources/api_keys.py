"""API keys (`/api/keys/...`, a Cloud route outside /api/v1)."""

from __future__ import annotations

from ..models_settings import ApiKeyInfo
from ._base import Resource


class ApiKeys(Resource):
    """`client.api_keys`: the API key in use (`current()`)."""

    async def current(self) -> ApiKeyInfo:
        """The key this client uses: its organisation (`bound_org_id`, None for a key not
        bound to one) and the effective one (`org_id`, from `org_id=` / X-Org-Id). The
        open-source server does not serve it (NotFoundError)."""
        return await self._get("/api/keys/current", cast_to=ApiKeyInfo)
