"""The public surface is what ``orchestra.__all__`` states, and nothing internal leaks into it.

After httpx's ``tests/test_exported_members.py``: every name in ``__all__`` exists and is documented
where it is defined, and the package namespace exports nothing else that looks public.
"""

from __future__ import annotations

import inspect

import orchestra

EXPECTED = {
    # the runtime
    "connect",
    "OrchestraHandle",
    "HostControl",
    "ChatService",
    # requests, results, events
    "RunRequest",
    "ChatResult",
    "ChatMetadata",
    "ProcessingStep",
    "Session",
    "SessionTurn",
    "Transcript",
    "TranscriptEntry",
    "TeamInfo",
    "RunEvent",
    "TurnStart",
    "TokenEvent",
    "TurnEnd",
    "RunCompleted",
    "RunFailed",
    "MODES",
    "Mode",
    # errors
    "OrchestraError",
    "ValidationError",
    "AuthenticationError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "InternalError",
    "ServiceUnavailableError",
    "DeadlineExceededError",
    "RunCancelledError",
    "ConfigError",
    "ProviderError",
    "ProviderAuthenticationError",
    "ProviderRateLimitError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "ProviderRequestError",
    "error_from_dict",
    # configuration
    "OrchestraConfig",
    "load_config",
    "default_config_path",
    "Settings",
    "settings",
    "__version__",
    # the receivers' helper: orchestra.webhooks.verify
    "webhooks",
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(orchestra.__all__) == EXPECTED
    assert len(orchestra.__all__) == len(set(orchestra.__all__))


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in orchestra.__all__:
        member = getattr(orchestra, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert inspect.getdoc(member), f"orchestra.{name} has no docstring"


def test_nothing_else_public_is_exported() -> None:
    subpackages = {"engine", "errors", "providers", "serving", "settings", "stores", "cli", "webhooks"}
    public = {
        name
        for name, value in vars(orchestra).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in ("annotations", "Any")
    }
    assert public <= EXPECTED, sorted(public - EXPECTED)
    modules = {name for name, value in vars(orchestra).items() if inspect.ismodule(value)}
    assert {m for m in modules if not m.startswith("_")} <= subpackages


def test_the_webhook_verify_helper_is_public() -> None:
    import hashlib
    import hmac

    body = b'{"id":"evt_1"}'
    signature = hmac.new(b"s3cret-s3cret-s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    headers = {"X-Orchestra-Signature": f"t=1700000000,v1={signature}"}
    assert orchestra.webhooks.verify("s3cret-s3cret-s3cret", headers, body, now=1700000001) == 1700000000
