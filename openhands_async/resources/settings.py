"""The account's settings and its saved LLM profiles (`/api/v1/settings...`).

An LLM API key given to `update` or `profiles.save` is held as a `SecretStr` and masked in
every repr and error (see `_redact`); the server never sends one back (`llm_api_key_set`,
`api_key_set`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from .._base_client import BaseClient
from .._retry import Idempotency
from ..models_settings import (
    Profile,
    ProfileActivation,
    ProfileList,
    ProfileMutation,
    SecretStr,
    Settings,
    secret_or_none,
)
from ._base import Resource
from ._redact import guarding, secret_body, secrets_in

_PATH = "/api/v1/settings"
_PROFILES = f"{_PATH}/profiles"
# The spec's pattern for a profile name (path and rename body alike).
_PROFILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def profile_name(name: str, what: str = "name") -> str:
    """A profile name checked against the spec's pattern, ready for a path segment."""
    if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
        raise ValueError(f"profile {what} must match [A-Za-z0-9._-]{{1,64}}, got {name!r}")
    return quote(name, safe="")


def llm_fields(
    model: str | None, api_key: str | SecretStr | None, base_url: str | None
) -> dict[str, Any]:
    """The `llm` object of a settings diff or a profile: only what was given."""
    llm: dict[str, Any] = {}
    if model is not None:
        llm["model"] = model
    secret = secret_or_none(api_key)
    if secret is not None:
        llm["api_key"] = secret
    if base_url is not None:
        llm["base_url"] = base_url
    return llm


class Profiles(Resource):
    """Saved LLM profiles: save one, activate it (the account's LLM becomes it), switch a
    running conversation to it (`conversations.switch_profile`)."""

    async def list(self) -> ProfileList:
        """Every saved profile (name, model, base_url, api_key_set) and the active one."""
        return await self._get(_PROFILES, cast_to=ProfileList)

    async def get(self, name: str) -> Profile:
        """One profile's full config (its api_key always None). NotFoundError if unknown."""
        return await self._get(f"{_PROFILES}/{profile_name(name)}", cast_to=Profile)

    async def save(
        self,
        name: str,
        *,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        llm: dict[str, Any] | None = None,
        include_secrets: bool | None = None,
        preserve_existing_api_key: bool | None = None,
    ) -> ProfileMutation:
        """Save (or overwrite) a profile. With no LLM fields the account's current LLM
        settings are saved under `name`; otherwise `llm` (any StrictLLM fields) updated by
        `model` / `api_key` / `base_url`. Leaving `api_key` out of an existing profile keeps
        its key. 409 (ConflictError) at the server's profile cap (10)."""
        fields = {**(llm or {}), **llm_fields(model, api_key, base_url)}
        masked: dict[str, Any] = {}
        if fields:
            masked["llm"] = fields
        if include_secrets is not None:
            masked["include_secrets"] = include_secrets
        if preserve_existing_api_key is not None:
            masked["preserve_existing_api_key"] = preserve_existing_api_key
        with guarding(secrets_in(masked)):
            return await self._post(
                f"{_PROFILES}/{profile_name(name)}",
                cast_to=ProfileMutation,
                json=secret_body(masked),
            )

    async def delete(self, name: str) -> ProfileMutation:
        """Delete a profile (the server answers success for an unknown name too)."""
        return await self._delete(f"{_PROFILES}/{profile_name(name)}", cast_to=ProfileMutation)

    async def activate(self, name: str) -> ProfileActivation:
        """Make a profile the account's LLM; answers the model now in use. NotFoundError if
        there is no such profile."""
        return await self._post(
            f"{_PROFILES}/{profile_name(name)}/activate", cast_to=ProfileActivation
        )

    async def rename(self, name: str, new_name: str) -> ProfileMutation:
        """Rename a profile (its key and active flag kept). NotFoundError if unknown,
        ConflictError if `new_name` is taken."""
        profile_name(new_name, "new_name")
        return await self._post(
            f"{_PROFILES}/{profile_name(name)}/rename",
            cast_to=ProfileMutation,
            json={"new_name": new_name},
            idempotency=Idempotency.UNSENT_ONLY,
        )


class SettingsResource(Resource):
    """The account's settings (`client.settings`), with `profiles` beside them."""

    def __init__(self, client: BaseClient) -> None:
        super().__init__(client)
        self.profiles = Profiles(client)

    async def get(self) -> Settings:
        """The settings (GETSettingsModel). NotFoundError if the account has none yet."""
        return await self._get(_PATH, cast_to=Settings)

    async def update(
        self,
        *,
        llm_model: str | None = None,
        llm_api_key: str | SecretStr | None = None,
        llm_base_url: str | None = None,
        agent_settings: dict[str, Any] | None = None,
        conversation_settings: dict[str, Any] | None = None,
        search_api_key: str | SecretStr | None = None,
        **fields: Any,
    ) -> None:
        """Change only the fields given; the server deep-merges the rest.

        `llm_model` / `llm_api_key` / `llm_base_url` go into `agent_settings.llm`;
        `agent_settings` and `conversation_settings` are partial objects merged into
        those; any other keyword is a top-level settings field (`language`,
        `git_user_name`, `default_sandbox_spec_id`, `max_budget_per_task`, ...).
        """
        masked: dict[str, Any] = dict(fields)
        agent = dict(agent_settings or {})
        llm = {**(agent.get("llm") or {}), **llm_fields(llm_model, llm_api_key, llm_base_url)}
        if llm:
            agent["llm"] = llm
        if agent:
            masked["agent_settings_diff"] = agent
        if conversation_settings:
            masked["conversation_settings_diff"] = dict(conversation_settings)
        search_key = secret_or_none(search_api_key)
        if search_key is not None:
            masked["search_api_key"] = search_key
        if not masked:
            raise ValueError("settings.update() needs at least one field to change")
        with guarding(secrets_in(masked)):
            await self._post(_PATH, json=secret_body(masked))

    async def agent_schema(self) -> dict[str, Any]:
        """The JSON schema of `agent_settings` (fields, labels, sections)."""
        return await self._get(f"{_PATH}/agent-schema", cast_to=dict[str, Any])

    async def conversation_schema(self) -> dict[str, Any]:
        """The JSON schema of `conversation_settings`."""
        return await self._get(f"{_PATH}/conversation-schema", cast_to=dict[str, Any])
