"""Sandboxes: the containers conversations run in."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from .._constants import MAX_PAGE_SIZE
from .._inputs import check_ids
from .._retry import Idempotency
from ..models import Sandbox
from ..pagination import AsyncPager
from ._base import Resource

_PATH = "/api/v1/sandboxes"


class Sandboxes(Resource):
    """Sandboxes: the containers conversations run in. Ids are opaque strings."""

    def search(
        self, *, limit: int | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncPager[Sandbox]:
        """All the account's sandboxes, across pages (`limit` caps the total)."""
        return self._search(f"{_PATH}/search", Sandbox, {}, limit=limit, page_size=page_size)

    async def get_many(self, ids: Iterable[str]) -> list[Sandbox | None]:
        """Read any number of sandboxes; the list keeps input order, None where missing."""
        return await self._get_many(_PATH, list(ids), Sandbox, param="id", validate_uuid=False)

    async def get(self, sandbox_id: str) -> Sandbox:
        """Read one sandbox; NotFoundError if the server does not have it."""
        return await self._get_one(
            _PATH, sandbox_id, Sandbox, what="sandbox", param="id", validate_uuid=False
        )

    async def start(self, sandbox_spec_id: str | None = None) -> Sandbox:
        """Start a new sandbox (from `sandbox_spec_id`, else the server's default spec)."""
        return await self._post(
            _PATH,
            cast_to=Sandbox,
            params={"sandbox_spec_id": sandbox_spec_id},
            idempotency=Idempotency.UNSENT_ONLY,
        )

    async def pause(self, sandbox_id: str) -> None:
        """Pause a sandbox; its conversation stops until `resume`. NotFoundError if unknown."""
        await self._post(f"{_PATH}/{_seg(sandbox_id)}/pause")

    async def resume(self, sandbox_id: str) -> None:
        """Resume a paused sandbox; its conversation carries on. NotFoundError if unknown."""
        await self._post(f"{_PATH}/{_seg(sandbox_id)}/resume")

    async def delete(self, sandbox_id: str) -> None:
        """Delete a sandbox for good; its conversation becomes archived. NotFoundError if
        unknown."""
        sid = _seg(sandbox_id)
        # The spec names the id both in the path and as a `sandbox_id` query parameter.
        await self._delete(f"{_PATH}/{sid}", params={"sandbox_id": sandbox_id})


def _seg(sandbox_id: str) -> str:
    (checked,) = check_ids([sandbox_id], "sandbox_id")
    return quote(checked, safe="")
