"""The test-side verifier itself: the specification's test vector, and what it refuses."""

from __future__ import annotations

import pytest

from tests.standard_webhooks import InvalidSignature, verify

# the test vector published with the specification
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"test": 2432232314}'
HEADERS = {
    "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "Webhook-Timestamp": "1614265330",
    "Webhook-Signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
NOW = 1614265330 + 10


def test_the_specification_vector_verifies() -> None:
    assert verify(SECRET, HEADERS, BODY, now=NOW) == {"test": 2432232314}


def test_one_matching_signature_among_several_is_enough() -> None:
    headers = {**HEADERS, "Webhook-Signature": "v1,bm90IGl0 v2,abc " + HEADERS["Webhook-Signature"]}
    assert verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"body": b'{"test": 2432232315}'}, "no v1 signature"),
        ({"Webhook-Id": "msg_other"}, "no v1 signature"),
        ({"Webhook-Timestamp": "1614265331"}, "no v1 signature"),
        ({"secret": "whsec_" + "A" * 32}, "no v1 signature"),
        ({"now": 1614265330 + 301}, "outside the tolerance"),
        ({"Webhook-Signature": "v2," + HEADERS["Webhook-Signature"][3:]}, "no v1 signature"),
        ({"Webhook-Timestamp": "soon"}, "not an integer"),
    ],
)
def test_tampering_is_refused(change: dict[str, object], problem: str) -> None:
    headers = {**HEADERS, **{k: v for k, v in change.items() if k.startswith("Webhook")}}
    body = change.get("body", BODY)
    secret = change.get("secret", SECRET)
    now = change.get("now", NOW)
    with pytest.raises(InvalidSignature, match=problem):
        verify(str(secret), headers, body, now=float(now))  # type: ignore[arg-type]


def test_missing_headers_are_named() -> None:
    with pytest.raises(InvalidSignature, match="webhook-signature"):
        verify(SECRET, {"webhook-id": "x", "webhook-timestamp": "1"}, BODY, now=1)
