"""Every ``ORCHESTRA_*`` environment variable, read in one place.

``Settings()`` reads the environment when it is built (call ``settings()`` where a value is needed, so a
changed environment is seen); an invalid value is a ``ConfigError`` naming the variable. The README's
table of variables is this class's fields (``python -m orchestra.settings`` prints it; a test keeps the
two equal).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestra.errors import ConfigError, invalid, pydantic_errors

__all__ = ["ENV_PREFIX", "Settings", "markdown_table", "settings"]

ENV_PREFIX = "ORCHESTRA_"


class Settings(BaseSettings):
    """Process settings from the environment (variable = ``ORCHESTRA_`` + the field name, upper-cased)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    data_dir: Path = Field(
        default=Path(".orchestra"),
        description=(
            "Where `orchestra serve` keeps its state: the development key and the embedded redis-server's "
            "append-only file (sessions, keys and memory survive a restart)."
        ),
    )
    config: Path | None = Field(
        default=None, description="Swarms config YAML (default: the packaged `configs/swarms.yaml`)."
    )
    redis_url: str | None = Field(
        default=None,
        description=(
            "Redis for keys, rate limits and memory, shared by every replica (`orchestra serve` starts an "
            "embedded redis-server and sets it when unset)."
        ),
    )
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Bootstrap API keys: comma-separated `key` or `key:scope+scope` (default scope chat).",
    )
    key_hash_secret: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Server-side secret of the keyed hash (HMAC-SHA256) API keys are stored as; every replica "
            "and the `orchestra keys` CLI need the same. Unset: `<data dir>/key-hash-secret` "
            "(`orchestra serve` creates it, mode 0600)."
        ),
    )
    rate_limit_per_minute: int = Field(
        default=1000, ge=1, le=60_000_000, description="Per-key HTTP rate limit (spec §6: 1000/min)."
    )
    rate_limit_burst: int = Field(default=50, ge=1, description="Per-key HTTP bucket capacity (spec §6: 50).")
    max_inflight: int = Field(
        default=512,
        ge=1,
        description="Requests one ingress replica works on at once before it sheds the keys holding "
        "most of them with 503 (each key keeps its fair share).",
    )
    body_idle_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a request body may pause before the request is answered 408 and closed.",
    )
    cors_origins: str = Field(
        default="",
        description=(
            "Origins allowed to call the API from a browser (comma-separated, `*` for any; none by default)."
        ),
    )
    llm_provider: str | None = Field(
        default=None,
        description="Overrides the config's `provider`: scripted, openai, anthropic or auto.",
    )
    record: Path | None = Field(default=None, description="Append every completion to this JSONL file.")
    replay: Path | None = Field(
        default=None, description="Answer from this JSONL recording instead of calling a provider."
    )
    scripted_latency_s: float | None = Field(
        default=None, ge=0, description="The scripted provider's seconds to first token."
    )
    scripted_tokens_per_s: float | None = Field(
        default=None, ge=0, description="The scripted provider's streaming rate (0 = instant)."
    )
    webhook_allow_private: bool = Field(
        default=False,
        description=(
            "Let webhooks target http:// URLs and loopback/private addresses (development and tests only)."
        ),
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Seconds a webhook receiver has to answer one delivery."
    )
    webhook_retry_base_s: float = Field(
        default=1.0, gt=0, description="First retry delay of a failed webhook delivery (doubles each time)."
    )
    webhook_retry_cap_s: float = Field(
        default=300.0, gt=0, description="Longest delay between two attempts of a webhook delivery."
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=100, description="Attempts of one webhook delivery before it is given up."
    )
    webhook_lease_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "A claimed webhook delivery whose dispatcher died is claimed again after this many seconds "
            "(must exceed the timeout)."
        ),
    )
    webhook_poll_s: float = Field(
        default=0.5, gt=0, le=60, description="How often the webhook dispatcher looks for due deliveries."
    )


def settings() -> Settings:
    """The settings in force now; ``ConfigError`` naming the variable when one is invalid."""
    try:
        return Settings()
    except PydanticValidationError as e:
        errors = [
            {**err, "field": ENV_PREFIX + err["field"].upper()} for err in pydantic_errors(e, root="<env>")
        ]
        raise invalid(errors, what="invalid environment", cls=ConfigError) from None


def markdown_table() -> str:
    """The README's table of environment variables."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default is None or isinstance(default, SecretStr) else f"`{default}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
