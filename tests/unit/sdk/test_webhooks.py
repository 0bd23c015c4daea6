"""The SDK's receiver-side webhook check agrees with the server's signing and with a hand-made HMAC."""

from __future__ import annotations

import hashlib
import hmac

import ai_orchestra
import pytest

from orchestra.webhooks import signature_header

SECRET = "a-receivers-secret-of-16+"
BODY = b'{"id":"evt_1","type":"chat.completed","created":1700000000,"data":{"response":"h\xc3\xa9"}}'
T = 1_700_000_000


def test_the_servers_signature_and_a_hand_made_one_verify() -> None:
    server = {"X-Orchestra-Signature": signature_header(SECRET, BODY, timestamp=T)}
    assert ai_orchestra.verify_webhook(SECRET, server, BODY, now=T + 10) == T
    mac = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert ai_orchestra.verify_webhook(SECRET, {"x-orchestra-signature": f"t={T},v1={mac}"}, BODY, now=T) == T
    assert ai_orchestra.verify_webhook(SECRET, server, BODY.decode(), now=T) == T


@pytest.mark.parametrize(
    ("secret", "header", "body", "now"),
    [
        (SECRET, "signed", BODY + b" ", T),  # altered
        ("another-secret-of-16-chars", "signed", BODY, T),
        (SECRET, "signed", BODY, T + 301),  # stale
        (SECRET, "signed", BODY, T - 301),  # from the future
        (SECRET, None, BODY, T),
        (SECRET, "v1=abc", BODY, T),
        (SECRET, f"t={T}", BODY, T),
    ],
)
def test_what_was_not_signed_by_the_secret_just_now_is_refused(
    secret: str, header: str | None, body: bytes, now: int
) -> None:
    value = signature_header(SECRET, BODY, timestamp=T) if header == "signed" else header
    headers = {} if value is None else {"X-Orchestra-Signature": value}
    with pytest.raises(ai_orchestra.WebhookSignatureError) as err:
        ai_orchestra.verify_webhook(secret, headers, body, now=now)
    assert isinstance(err.value, ai_orchestra.AuthenticationError)
