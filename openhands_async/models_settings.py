"""Models of the account's configuration: settings, LLM profiles, secrets, API keys.

Also `SecretStr`, the write-only string every secret value the SDK takes is held in (a
custom secret's value, a git-provider token, an LLM API key): its repr and str are a mask,
so it cannot leak through `print()`, a log line, a model's repr or an exception. The server
never sends secret values back (it answers `api_key_set`-style flags instead).
Structuring lives in `_converter.py`.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._model_base import _OpenStrEnum

__all__ = [
    "ApiKeyInfo",
    "EditResult",
    "GitProvider",
    "Profile",
    "ProfileActivation",
    "ProfileInfo",
    "ProfileList",
    "ProfileMutation",
    "Secret",
    "SecretStr",
    "Settings",
]

_MASK = "**********"


class SecretStr:
    """A string that does not show itself: `repr`/`str` print a mask (as pydantic's
    SecretStr does); `get_secret_value()` is the only way to read it.

    Values are compared in constant time and never hashed into anything printable.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | SecretStr) -> None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            raise TypeError(f"a secret must be a str, got {type(value).__name__}")
        self._value = value

    def get_secret_value(self) -> str:
        """The value itself (keep it out of logs and reprs)."""
        return self._value

    def __repr__(self) -> str:
        return f"SecretStr('{_MASK}')" if self._value else "SecretStr('')"

    def __str__(self) -> str:
        return _MASK if self._value else ""

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        import hmac

        if not isinstance(other, SecretStr):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("SecretStr", len(self._value)))

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        # Pickling would write the value in clear; refuse rather than surprise.
        raise TypeError("SecretStr cannot be pickled")


def secret_or_none(value: str | SecretStr | None) -> SecretStr | None:
    """Wrap a caller's secret (None stays None)."""
    return None if value is None else SecretStr(value)


class GitProvider(_OpenStrEnum):
    """The spec's ProviderType."""

    GITHUB = "github"
    GITLAB = "gitlab"
    BITBUCKET = "bitbucket"
    BITBUCKET_DATA_CENTER = "bitbucket_data_center"
    FORGEJO = "forgejo"
    AZURE_DEVOPS = "azure_devops"
    ENTERPRISE_SSO = "enterprise_sso"


@attrs.frozen
class Settings:
    """The account's settings (GETSettingsModel). Secret fields never come back: the server
    answers `llm_api_key_set` / `search_api_key_set` / `provider_tokens_set` instead.

    `llm_model` and `llm_base_url` read `agent_settings.llm`; `payload` keeps every field.
    """

    language: str | None = None
    agent_settings: dict[str, Any] = attrs.field(factory=dict, repr=False)
    conversation_settings: dict[str, Any] = attrs.field(factory=dict, repr=False)
    llm_profiles: dict[str, Any] = attrs.field(factory=dict, repr=False)
    default_sandbox_spec_id: str | None = None
    sandbox_grouping_strategy: str | None = None
    git_user_name: str | None = None
    git_user_email: str | None = None
    max_budget_per_task: float | None = None
    v1_enabled: bool | None = None
    provider_tokens_set: dict[str, Any] = attrs.field(factory=dict)
    llm_api_key_set: bool = False
    search_api_key_set: bool = False
    payload: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def llm(self) -> dict[str, Any]:
        """`agent_settings.llm`, the account's LLM configuration ({} if absent)."""
        llm = self.agent_settings.get("llm")
        return llm if isinstance(llm, dict) else {}

    @property
    def llm_model(self) -> str | None:
        """The account's LLM model (`agent_settings.llm.model`), else None."""
        model = self.llm.get("model")
        return model if isinstance(model, str) else None

    @property
    def llm_base_url(self) -> str | None:
        """The account's LLM base URL (`agent_settings.llm.base_url`), else None."""
        url = self.llm.get("base_url")
        return url if isinstance(url, str) else None

    @property
    def active_profile(self) -> str | None:
        """The name of the active saved profile, else None."""
        active = self.llm_profiles.get("active")
        return active if isinstance(active, str) else None


@attrs.frozen
class ProfileInfo:
    """One saved LLM profile as listed (ProfileInfo): never its key, only `api_key_set`."""

    name: str
    model: str | None = None
    base_url: str | None = None
    api_key_set: bool = False


@attrs.frozen
class ProfileList:
    """`settings.profiles.list()`: the saved profiles and the active one's name."""

    profiles: list[ProfileInfo] = attrs.field(factory=list)
    active_profile: str | None = None


@attrs.frozen
class Profile:
    """One profile in full (ProfileDetailResponse). `config.api_key` is always None."""

    name: str
    config: dict[str, Any] = attrs.field(factory=dict)
    api_key_set: bool = False

    @property
    def model(self) -> str | None:
        """The profile's LLM model (`config.model`), else None."""
        model = self.config.get("model")
        return model if isinstance(model, str) else None


@attrs.frozen
class ProfileMutation:
    """The answer to save / delete / rename (ProfileMutationResponse)."""

    name: str
    message: str = ""


@attrs.frozen
class ProfileActivation:
    """The answer to activate (ActivateProfileResponse): the model now in use."""

    name: str
    message: str = ""
    model: str | None = None


@attrs.frozen
class Secret:
    """A custom secret as listed (CustomSecretWithoutValue): name and description only.
    Its id in `update`/`delete` is its name."""

    name: str
    description: str | None = None

    @property
    def id(self) -> str:
        """The secret's id in `update`/`delete`: its name."""
        return self.name


@attrs.frozen
class EditResult:
    """The answer to a secret edit (EditResponse)."""

    message: str = ""


@attrs.frozen
class ApiKeyInfo:
    """The API key in use (`/api/keys/current`, CurrentApiKeyResponse); `payload` keeps all."""

    id: int | None = None
    name: str | None = None
    org_id: str | None = None
    bound_org_id: str | None = None
    user_id: str | None = None
    auth_type: str | None = None
    payload: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
