"""A verifier of Standard Webhooks signatures, written from the specification alone.

The tests check the worker's webhooks with it, never with the worker's own signing
code: signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the key is the
base64 text after ``whsec_``; ``webhook-signature`` holds space-separated ``v1,<base64
HMAC-SHA256>`` entries, any one of which may match; the timestamp must be recent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["InvalidSignature", "verify"]


class InvalidSignature(Exception):
    """The request does not carry a valid signature of its body."""


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: int = 300,
) -> dict[str, Any]:
    """Check the request's signature and timestamp; return its JSON body."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        stamp = lower["webhook-timestamp"]
        signatures = lower["webhook-signature"]
    except KeyError as missing:
        raise InvalidSignature(f"missing header {missing}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature(f"webhook-timestamp is not an integer: {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise InvalidSignature(f"webhook-timestamp {timestamp} is outside the tolerance")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise InvalidSignature("the secret is not base64") from None
    content = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return dict(json.loads(body))
    raise InvalidSignature("no v1 signature matches the body")
