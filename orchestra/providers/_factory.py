"""Picks the provider in force from the configuration."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from orchestra.errors import ConfigError
from orchestra.providers._base import LLMProvider
from orchestra.providers._recording import RecordingProvider, ReplayProvider
from orchestra.providers._scripted import ScriptedProvider
from orchestra.providers._settings import AnthropicSettings, OpenAISettings, ScriptedSettings

if TYPE_CHECKING:
    from orchestra.engine._config import OrchestraConfig

__all__ = ["make_provider"]

log = logging.getLogger("orchestra.providers")


def make_provider(config: OrchestraConfig) -> LLMProvider:
    """The provider in force (env overrides applied), wrapped for record/replay when configured.

    Raises ConfigError for a provider that cannot work (e.g. no API key) so start-up fails clearly.
    """
    name = config.resolved_provider()
    record, replay = config.recording.resolved()
    if replay:
        log.info("LLM provider: replay of %s (no model is called)", replay)
        return ReplayProvider(replay)
    provider: LLMProvider
    if name == "scripted":
        settings = config.provider_settings("scripted")
        assert isinstance(settings, ScriptedSettings)
        provider = ScriptedProvider(settings.with_env_overrides())
        log.info("LLM provider: scripted (offline deterministic stand-in, not a real model)")
    elif name == "openai":
        openai_settings = config.provider_settings("openai")
        assert isinstance(openai_settings, OpenAISettings)
        from orchestra.providers._openai import OpenAIProvider

        provider = OpenAIProvider(openai_settings)
        log.info("LLM provider: openai (base_url=%s)", openai_settings.base_url or "default")
    elif name == "anthropic":
        anthropic_settings = config.provider_settings("anthropic")
        assert isinstance(anthropic_settings, AnthropicSettings)
        from orchestra.providers._anthropic import AnthropicProvider

        provider = AnthropicProvider(anthropic_settings)
        log.info("LLM provider: anthropic (base_url=%s)", anthropic_settings.base_url or "default")
    else:  # pragma: no cover - resolved_provider only returns the names above
        raise ConfigError(f"unknown provider {name!r}")
    if record:
        log.info("recording completions to %s", record)
        provider = RecordingProvider(provider, record)
    return provider
