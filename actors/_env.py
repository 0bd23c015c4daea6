"""Which environment variables actors need, so a worker sees the same settings as the driver, and how
they get there without a secret ever being written down.

Ray writes every ``runtime_env`` it creates into its logs (``runtime_env_agent.log``) and keeps it with
the deployment's config, so only non-secret variables travel that way. Secrets (API keys, the key
hashing secret, provider keys, a Redis URL with a password) travel as a constructor argument of the
actor or deployment, which Ray keeps pickled and never logs, and ``apply_secrets`` puts them in the
process's environment before anything reads its settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from orchestra import OrchestraConfig

__all__ = ["actor_env", "apply_secrets", "is_secret", "split_env"]

_SECRET_NAMES = frozenset({"ORCHESTRA_API_KEYS", "ORCHESTRA_KEY_HASH_SECRET"})
_SECRET_SUFFIXES = ("_API_KEY", "_API_KEYS", "_SECRET", "_TOKEN", "_PASSWORD")


def is_secret(name: str, value: str) -> bool:
    if name in _SECRET_NAMES or name.upper().endswith(_SECRET_SUFFIXES):
        return True
    if name.endswith("_URL"):  # redis://user:password@host
        try:
            return urlsplit(value).password is not None
        except ValueError:
            return True  # unparseable: do not risk writing it down
    return False


def split_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(shareable, secrets)``: what may go into a ``runtime_env``, and what must be handed over."""
    shareable = {k: v for k, v in env.items() if not is_secret(k, v)}
    return shareable, {k: v for k, v in env.items() if k not in shareable}


def apply_secrets(secrets: Mapping[str, str] | None) -> None:
    """Put the handed-over secrets into this process's environment (before settings are read)."""
    os.environ.update(secrets or {})


def actor_env(config: OrchestraConfig) -> dict[str, str]:
    """ORCHESTRA_* settings and the API-key variables the configured providers read (secrets included:
    ``split_env`` decides how each travels).

    Workers are forked by the raylet, which may have been started before the driver set them.
    """
    names = {k for k in os.environ if k.startswith("ORCHESTRA_")}
    names |= {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"}
    for block in config.providers.values():
        if isinstance(block.get("api_key_env"), str):
            names.add(block["api_key_env"])
    return {k: os.environ[k] for k in sorted(names) if k in os.environ}
