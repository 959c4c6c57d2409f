"""Settings and LLM profiles: GET/POST settings (a deep-merged partial update), the two
settings schemas, and profiles (list / get / save / delete / activate / rename).

As on the real server: keys never come back (`llm_api_key_set`, `api_key_set`), saving
without an `llm` snapshots the current LLM, activating a profile makes it the account's
LLM, and renaming keeps the key and the active flag.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from .._account import MAX_PROFILES, Account, ProfileRecord
from .._body import (
    bool_field,
    check,
    json_body,
    json_object,
    profile_name_error,
    text_field,
)
from .._responses import json_response, not_found
from .._routing import RouteGroup, route
from .._validation import Invalid

BASE = "/api/v1/settings"
PROFILES = f"{BASE}/profiles"
ONE = f"{PROFILES}/{{name}}"
# Top-level settings fields a POST may change (GETSettingsModel, secrets and flags aside).
TOP_LEVEL = (
    "language",
    "user_version",
    "remote_runtime_resource_factor",
    "enable_sound_notifications",
    "enable_proactive_conversation_starters",
    "user_consents_to_analytics",
    "sandbox_base_container_image",
    "sandbox_runtime_container_image",
    "disabled_skills",
    "max_budget_per_task",
    "email",
    "email_verified",
    "git_user_name",
    "git_user_email",
    "title_llm_profile",
    "git_full_clone",
    "v1_enabled",
    "sandbox_grouping_strategy",
    "default_sandbox_spec_id",
)
_DEFAULTS: dict[str, Any] = {
    "language": None,
    "user_version": None,
    "remote_runtime_resource_factor": None,
    "enable_sound_notifications": False,
    "enable_proactive_conversation_starters": True,
    "user_consents_to_analytics": None,
    "sandbox_base_container_image": None,
    "sandbox_runtime_container_image": None,
    "disabled_skills": None,
    "max_budget_per_task": None,
    "email": None,
    "email_verified": None,
    "git_user_name": None,
    "git_user_email": None,
    "title_llm_profile": None,
    "git_full_clone": False,
    "v1_enabled": True,
    "sandbox_grouping_strategy": "NO_GROUPING",
    "default_sandbox_spec_id": None,
}
AGENT_SCHEMA = {
    "title": "AgentSettings",
    "type": "object",
    "properties": {
        "llm": {
            "type": "object",
            "properties": {
                "model": {"type": "string", "default": "gpt-5.5"},
                "api_key": {"type": "string", "format": "password", "writeOnly": True},
                "base_url": {"type": "string"},
            },
        },
        "enable_sub_agents": {"type": "boolean", "default": False},
    },
}
CONVERSATION_SCHEMA = {
    "title": "ConversationSettings",
    "type": "object",
    "properties": {
        "max_iterations": {"type": "integer", "minimum": 1, "default": 500},
        "confirmation_mode": {"type": "boolean", "default": False},
        "security_analyzer": {"enum": ["llm", "none"], "default": "llm"},
    },
}


def _public_llm(llm: dict[str, Any]) -> dict[str, Any]:
    return {**llm, "api_key": None}


def render_settings(account: Account) -> dict[str, Any]:
    fields = {**_DEFAULTS, **account.fields}
    return {
        **fields,
        "secrets_store": {"provider_tokens": {}},
        # The real server also writes search_api_key / sandbox_api_key as null; the spec
        # marks them writeOnly, which a response may not carry, so they are left out.
        "agent_settings": {
            "schema_version": 4,
            "agent_kind": "openhands",
            "agent": "CodeActAgent",
            "llm": _public_llm(account.llm),
            "enable_sub_agents": False,
        },
        "conversation_settings": dict(account.conversation_settings),
        "llm_profiles": {
            "profiles": {n: _public_llm(p.llm) for n, p in account.profiles.items()},
            "active": account.active_profile,
        },
        "active_agent_profile_id": None,
        "active_agent_profile_revision": None,
        "registered_marketplaces": [],
        "inherited_marketplaces": [],
        "provider_tokens_set": {
            provider: token.get("host") for provider, token in account.provider_tokens.items()
        },
        "llm_api_key_set": bool(account.llm.get("api_key")),
        "search_api_key_set": bool(account.search_api_key),
    }


def _merge(into: dict[str, Any], diff: dict[str, Any]) -> None:
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class SettingsRoutes(RouteGroup):
    @route("GET", BASE, "get_settings")
    async def get_settings(self, request: web.Request) -> web.StreamResponse:
        return json_response(render_settings(self.ctx.account))

    @route("POST", BASE, "store_settings")
    async def store_settings(self, request: web.Request) -> web.StreamResponse:
        payload = json_object(await json_body(request))
        legacy = sorted(k for k in ("agent_settings", "conversation_settings") if k in payload)
        if legacy:
            refusal = {"error": "Use *_diff nested settings payloads instead of legacy keys"}
            return json_response({**refusal, "keys": legacy}, 422)
        account = self.ctx.account
        agent = payload.get("agent_settings_diff")
        if isinstance(agent, dict) and isinstance(agent.get("llm"), dict):
            _merge(account.llm, agent["llm"])
            # The LLM in use no longer is the active profile's (unless it still equals it).
            active = account.profiles.get(account.active_profile or "")
            if active is not None and active.llm != account.llm:
                account.active_profile = None
        conversation = payload.get("conversation_settings_diff")
        if isinstance(conversation, dict):
            _merge(account.conversation_settings, conversation)
        if isinstance(payload.get("search_api_key"), str):
            account.search_api_key = payload["search_api_key"]
        for key in TOP_LEVEL:
            if key in payload:
                account.fields[key] = copy.deepcopy(payload[key])
        return json_response({"message": "Settings stored"})

    @route("GET", f"{BASE}/agent-schema", "settings_agent_schema")
    async def agent_schema(self, request: web.Request) -> web.StreamResponse:
        return json_response(AGENT_SCHEMA)

    @route("GET", f"{BASE}/conversation-schema", "settings_conversation_schema")
    async def conversation_schema(self, request: web.Request) -> web.StreamResponse:
        return json_response(CONVERSATION_SCHEMA)

    # -- profiles ----------------------------------------------------------------------

    @route("GET", PROFILES, "list_profiles")
    async def list_profiles(self, request: web.Request) -> web.StreamResponse:
        account = self.ctx.account
        profiles = [
            {
                "name": name,
                "model": p.llm.get("model"),
                "base_url": p.llm.get("base_url"),
                "api_key_set": bool(p.llm.get("api_key")),
            }
            for name, p in account.profiles.items()
        ]
        return json_response({"profiles": profiles, "active_profile": account.active_profile})

    def _name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        problem = profile_name_error(name, ("path", "name"))
        if problem is not None:
            raise Invalid([problem])
        return name

    @route("GET", ONE, "get_profile")
    async def get_profile(self, request: web.Request) -> web.StreamResponse:
        name = self._name(request)
        record = self.ctx.account.profiles.get(name)
        if record is None:
            return not_found(f"Profile '{name}' not found")
        config = _public_llm(record.llm)
        answer = {"name": name, "config": config, "api_key_set": bool(record.llm.get("api_key"))}
        return json_response(answer)

    @route("POST", ONE, "save_profile")
    async def save_profile(self, request: web.Request) -> web.StreamResponse:
        name = self._name(request)
        body = await json_body(request, optional=True)
        body = {} if body is None else json_object(body)
        errors: list[dict[str, Any]] = []
        include_secrets = bool_field(body, "include_secrets", True, errors)
        preserve = bool_field(body, "preserve_existing_api_key", False, errors)
        given = body.get("llm")
        if given is not None and not isinstance(given, dict):
            errors.append(
                {"type": "model_type", "loc": ["body", "llm"], "msg": "Input should be an object"}
            )
        check(errors)
        account = self.ctx.account
        existing = account.profiles.get(name)
        if existing is None and len(account.profiles) >= MAX_PROFILES:
            return json_response({"detail": f"Maximum of {MAX_PROFILES} profiles reached"}, 409)
        if isinstance(given, dict):
            llm = {"model": "gpt-5.5", "api_key": None, "base_url": None, **copy.deepcopy(given)}
            if llm.get("api_key") is None and existing is not None:
                llm["api_key"] = existing.llm.get("api_key")
        else:
            llm = copy.deepcopy(account.llm)
        if preserve and existing is not None:
            llm["api_key"] = existing.llm.get("api_key")
        if not include_secrets:
            llm["api_key"] = None
        account.profiles[name] = ProfileRecord(llm)
        if account.active_profile == name:
            account.llm = copy.deepcopy(llm)  # the active profile changed: so did the LLM
        return json_response({"name": name, "message": f"Profile '{name}' saved"}, 201)

    @route("DELETE", ONE, "delete_profile")
    async def delete_profile(self, request: web.Request) -> web.StreamResponse:
        name = self._name(request)
        account = self.ctx.account
        if account.profiles.pop(name, None) is not None and account.active_profile == name:
            account.active_profile = None
        return json_response({"name": name, "message": f"Profile '{name}' deleted"})

    @route("POST", f"{ONE}/activate", "activate_profile")
    async def activate_profile(self, request: web.Request) -> web.StreamResponse:
        name = self._name(request)
        account = self.ctx.account
        llm = account.profile_llm(name)
        if llm is None:
            return not_found(f"Profile '{name}' not found")
        account.llm = llm
        account.active_profile = name
        message = f"Switched to profile '{name}'"
        return json_response({"name": name, "message": message, "model": llm.get("model")})

    @route("POST", f"{ONE}/rename", "rename_profile")
    async def rename_profile(self, request: web.Request) -> web.StreamResponse:
        name = self._name(request)
        body = json_object(await json_body(request))
        errors: list[dict[str, Any]] = []
        new_name = text_field(body, "new_name", errors)
        if new_name is not None:
            problem = profile_name_error(new_name, ("body", "new_name"))
            if problem is not None:
                errors.append(problem)
        check(errors)
        assert new_name is not None
        account = self.ctx.account
        record = account.profiles.get(name)
        if record is None:
            return not_found(f"Profile '{name}' not found")
        if new_name != name and new_name in account.profiles:
            return json_response({"detail": f"Profile '{new_name}' already exists"}, 409)
        del account.profiles[name]
        account.profiles[new_name] = record
        if account.active_profile == name:
            account.active_profile = new_name
        message = f"Profile '{name}' renamed to '{new_name}'"
        return json_response({"name": new_name, "message": message})
