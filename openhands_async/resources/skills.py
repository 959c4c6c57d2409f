"""Skills the account's agents can load (`/api/v1/skills/...`)."""

from __future__ import annotations

from collections.abc import Iterable

from .._constants import MAX_PAGE_SIZE
from .._converter import unstructure
from ..models_catalog import MarketplaceRegistration, MarketplaceSkills, Skill
from ..pagination import AsyncPager
from ._base import Resource

_PATH = "/api/v1/skills"


class Skills(Resource):
    """`client.skills`: the skills available to agents, and marketplace previews."""

    def search(
        self, *, limit: int | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncPager[Skill]:
        """Every available skill (name, type, source, triggers); auto-paginating."""
        return self._search(f"{_PATH}/search", Skill, {}, limit=limit, page_size=page_size)

    async def marketplace(
        self, marketplaces: Iterable[MarketplaceRegistration]
    ) -> MarketplaceSkills:
        """Preview what plugin marketplaces offer (their skills and plugins, and any
        error loading one) without registering them."""
        body = [unstructure(m) for m in marketplaces]
        return await self._post(f"{_PATH}/marketplace-skills", cast_to=MarketplaceSkills, json=body)
