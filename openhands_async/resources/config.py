"""What the server offers to configure: LLM models and providers (`/api/v1/config/...`),
and its web client's configuration (`/api/v1/web-client/config`)."""

from __future__ import annotations

from .._base_client import BaseClient
from .._constants import MAX_PAGE_SIZE
from ..models_catalog import LLMModel, LLMProvider, WebClientConfig
from ..pagination import AsyncPager
from ._base import Resource

_PATH = "/api/v1/config"


class Models(Resource):
    """`client.config.models`: the LLM models the server can run."""

    def search(
        self,
        *,
        query: str | None = None,
        verified: bool | None = None,
        provider: str | None = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[LLMModel]:
        """LLM models the server can run: `query` is a case-insensitive substring of the
        name, `provider` an exact provider name."""
        params = {"query": query, "verified__eq": verified, "provider__eq": provider}
        path = f"{_PATH}/models/search"
        return self._search(path, LLMModel, params, limit=limit, page_size=page_size)


class Providers(Resource):
    """`client.config.providers`: the LLM providers the server knows."""

    def search(
        self,
        *,
        query: str | None = None,
        verified: bool | None = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[LLMProvider]:
        """LLM providers; `query` is a case-insensitive substring of the name."""
        params = {"query": query, "verified__eq": verified}
        path = f"{_PATH}/providers/search"
        return self._search(path, LLMProvider, params, limit=limit, page_size=page_size)


class Config(Resource):
    """`client.config`: `models`, `providers`, and `web_client()`."""

    def __init__(self, client: BaseClient) -> None:
        super().__init__(client)
        self.models = Models(client)
        self.providers = Providers(client)

    async def web_client(self) -> WebClientConfig:
        """The server's web-client configuration: which git providers are configured
        (`providers_configured`) and which models it reports failing (`faulty_models`)."""
        return await self._get("/api/v1/web-client/config", cast_to=WebClientConfig)
