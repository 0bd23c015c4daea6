"""Which environment variables actors need, so a worker sees the same settings as the driver."""

from __future__ import annotations

import os

from orchestra import OrchestraConfig

__all__ = ["actor_env"]


def actor_env(config: OrchestraConfig) -> dict[str, str]:
    """ORCHESTRA_* settings and the API-key variables the configured providers read.

    Workers are forked by the raylet, which may have been started before the driver set them.
    """
    names = {k for k in os.environ if k.startswith("ORCHESTRA_")}
    names |= {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"}
    for block in config.providers.values():
        if isinstance(block.get("api_key_env"), str):
            names.add(block["api_key_env"])
    return {k: os.environ[k] for k in sorted(names) if k in os.environ}
