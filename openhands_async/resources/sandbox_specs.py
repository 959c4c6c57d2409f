"""Sandbox specs: the templates sandboxes are made from (`/api/v1/sandbox-specs`)."""

from __future__ import annotations

from collections.abc import Iterable

from .._constants import MAX_PAGE_SIZE
from ..models_catalog import SandboxSpec
from ..pagination import AsyncPager
from ._base import Resource

_PATH = "/api/v1/sandbox-specs"


class SandboxSpecs(Resource):
    """Ids are opaque strings (on the open-source server, an agent-server image name)."""

    def search(
        self, *, limit: int | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncPager[SandboxSpec]:
        """All the sandbox specs, across pages (`limit` caps the total)."""
        return self._search(f"{_PATH}/search", SandboxSpec, {}, limit=limit, page_size=page_size)

    async def get_many(self, ids: Iterable[str]) -> list[SandboxSpec | None]:
        """Read any number of specs; the list keeps input order, None where missing."""
        return await self._get_many(_PATH, list(ids), SandboxSpec, param="id", validate_uuid=False)

    async def get(self, spec_id: str) -> SandboxSpec:
        """Read one spec; NotFoundError if the server does not have it."""
        return await self._get_one(
            _PATH, spec_id, SandboxSpec, what="sandbox spec", param="id", validate_uuid=False
        )
