"""Signatures: the helper, a hand-written HMAC, and every way a check must fail."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from orchestra.webhooks import WebhookSignatureError, signature_header, verify

SECRET = "whsec-0123456789abcdef"
BODY = b'{"id":"evt_1","type":"chat.completed","created":1700000000,"data":{}}'
T = 1_700_000_000


def _by_hand(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_the_header_is_t_and_v1_over_the_timestamp_and_raw_body() -> None:
    header = signature_header(SECRET, BODY, T)
    assert header == f"t={T},v1={_by_hand(SECRET, T, BODY)}"
    assert verify(SECRET, {"X-Orchestra-Signature": header}, BODY, now=T + 10) == T


def test_a_hand_written_signature_verifies_and_header_names_are_case_insensitive() -> None:
    headers = {"x-orchestra-signature": f"t={T},v1={_by_hand(SECRET, T, BODY)}"}
    assert verify(SECRET, headers, BODY, now=T) == T
    assert verify(SECRET, headers, BODY.decode(), now=T) == T  # the body as text works too


def test_one_matching_v1_among_several_is_enough() -> None:
    headers = {"X-Orchestra-Signature": f"t={T},v1={'0' * 64},v1={_by_hand(SECRET, T, BODY)}"}
    assert verify(SECRET, headers, BODY, now=T) == T


@pytest.mark.parametrize(
    ("headers", "body", "now", "why"),
    [
        ({"X-Orchestra-Signature": signature_header(SECRET, BODY, T)}, BODY + b" ", T, "altered body"),
        ({"X-Orchestra-Signature": signature_header(SECRET, BODY, T)}, BODY, T + 301, "stale"),
        ({"X-Orchestra-Signature": signature_header(SECRET, BODY, T)}, BODY, T - 301, "from the future"),
        ({"X-Orchestra-Signature": signature_header("another-secret-123", BODY, T)}, BODY, T, "other secret"),
        ({"X-Orchestra-Signature": f"t={T + 1},v1={_by_hand(SECRET, T, BODY)}"}, BODY, T, "altered t"),
        ({}, BODY, T, "no header"),
        ({"X-Orchestra-Signature": "v1=abc"}, BODY, T, "no timestamp"),
        ({"X-Orchestra-Signature": f"t={T}"}, BODY, T, "no signature"),
        ({"X-Orchestra-Signature": "garbage"}, BODY, T, "malformed"),
    ],
)
def test_altered_stale_or_malformed_requests_fail(
    headers: dict[str, str], body: bytes, now: int, why: str
) -> None:
    with pytest.raises(WebhookSignatureError):
        verify(SECRET, headers, body, now=now)


def test_the_tolerance_is_the_callers() -> None:
    headers = {"X-Orchestra-Signature": signature_header(SECRET, BODY, T)}
    assert verify(SECRET, headers, BODY, tolerance_s=3600, now=T + 3000) == T
    with pytest.raises(WebhookSignatureError):
        verify(SECRET, headers, BODY, tolerance_s=5, now=T + 6)
