"""Provider settings: pydantic schemas with described fields, loaded from configs/swarms.yaml."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr

from orchestra._types import FrozenModel
from orchestra.errors import ConfigError
from orchestra.providers._retry import RetryPolicy
from orchestra.settings import settings

__all__ = ["AnthropicSettings", "OpenAISettings", "ScriptedSettings"]


class _RemoteSettings(FrozenModel):
    base_url: str | None = Field(
        default=None,
        description="API base URL; None uses the SDK default (or its *_BASE_URL env variable).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="API key. Prefer api_key_env so the key never sits in a config file."
    )
    api_key_env: str = Field(description="Environment variable holding the API key.")
    timeout_s: float = Field(default=60.0, gt=0, description="Per-request timeout in seconds.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retry and backoff policy.")

    def resolved_api_key(self, provider: str) -> str:
        """The key from ``api_key`` or ``api_key_env``; a clear start-up error when neither is set."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ConfigError(
                f"provider {provider!r} needs an API key: "
                f"set {self.api_key_env} or providers.{provider}.api_key",
                details={"field": f"providers.{provider}.api_key_env", "reason": "no API key"},
            )
        return key


class OpenAISettings(_RemoteSettings):
    """Any OpenAI-compatible server: OpenAI, vLLM, Ollama, llama.cpp server (set ``base_url``)."""

    api_key_env: str = Field(
        default="OPENAI_API_KEY", description="Environment variable holding the API key."
    )
    organization: str | None = Field(default=None, description="OpenAI organization id, if any.")


class AnthropicSettings(_RemoteSettings):
    api_key_env: str = Field(
        default="ANTHROPIC_API_KEY", description="Environment variable holding the API key."
    )


class ScriptedSettings(FrozenModel):
    """The offline, deterministic stand-in model.

    Never a real model: the model names it reports start with ``scripted/``.
    """

    latency_s: float = Field(
        default=0.05, ge=0, description="Seconds to first token (env ORCHESTRA_SCRIPTED_LATENCY_S overrides)."
    )
    tokens_per_s: float = Field(
        default=400.0,
        ge=0,
        description=(
            "Streaming rate after the first token; 0 means instant (env ORCHESTRA_SCRIPTED_TOKENS_PER_S)."
        ),
    )
    completion_tokens: int = Field(
        default=48, ge=1, le=4096, description="Approximate length of each answer."
    )
    seed: int = Field(
        default=0, description="Changes every scripted answer while keeping them deterministic."
    )

    def with_env_overrides(self) -> ScriptedSettings:
        """Apply ORCHESTRA_SCRIPTED_LATENCY_S / ORCHESTRA_SCRIPTED_TOKENS_PER_S (``ConfigError`` if bad)."""
        env = settings()
        updates = {
            name: value
            for name, value in (
                ("latency_s", env.scripted_latency_s),
                ("tokens_per_s", env.scripted_tokens_per_s),
            )
            if value is not None
        }
        return self.model_copy(update=updates) if updates else self
