"""Identifier normalisation: one spelling per identifier, placeholders never survive."""

from __future__ import annotations

import pytest

from streams.identifiers import IdentifierPolicy, normalise_identifiers
from streams.settings import DEFAULT_BLOCKED_PATTERNS, DEFAULT_BLOCKED_VALUES

POLICY = IdentifierPolicy.build(DEFAULT_BLOCKED_VALUES, DEFAULT_BLOCKED_PATTERNS)


def kept(identifiers: dict[str, str], policy: IdentifierPolicy = POLICY) -> dict[str, str]:
    return normalise_identifiers(identifiers, policy).kept


def test_email_is_trimmed_and_lower_cased() -> None:
    assert kept({"email": "  Ann.Lee@Example.COM\t"}) == {"email": "ann.lee@example.com"}


@pytest.mark.parametrize(
    "spelling",
    ["+44 20 7946 0958", "+442079460958", "+44 (0)20 7946-0958", "0044 20 7946 0958",
     " +44-20-7946-0958 "],
)  # fmt: skip
def test_every_spelling_of_a_phone_number_becomes_one_e164_value(spelling: str) -> None:
    assert kept({"phone": spelling}, IdentifierPolicy.build((), (), "DE")) == {
        "phone": "+442079460958"
    }


def test_a_local_number_needs_a_default_region() -> None:
    assert normalise_identifiers({"phone": "020 7946 0958"}, POLICY).rejected == {
        "phone": "malformed"
    }
    uk = IdentifierPolicy.build(DEFAULT_BLOCKED_VALUES, DEFAULT_BLOCKED_PATTERNS, "GB")
    assert kept({"phone": "020 7946 0958"}, uk) == {"phone": "+442079460958"}


@pytest.mark.parametrize(
    "placeholder",
    ["null", "NULL", " undefined ", "None", "0", "-1", "anonymous", "Unknown", "[object Object]",
     "", "   ", "00000000-0000-0000-0000-000000000000", "0000", "xxxx"],
)  # fmt: skip
def test_placeholder_values_are_removed_as_blocked(placeholder: str) -> None:
    result = normalise_identifiers({"device_id": placeholder, "email": "a@b.io"}, POLICY)
    assert result.kept == {"email": "a@b.io"}
    assert result.rejected == {"device_id": "blocked"}


def test_malformed_values_are_removed_with_their_reason() -> None:
    result = normalise_identifiers({"email": "not-an-address", "phone": "+99 12"}, POLICY)
    assert result.kept == {}
    assert result.rejected == {"email": "malformed", "phone": "malformed"}


def test_custom_kinds_are_kept_and_unknown_kinds_are_not() -> None:
    result = normalise_identifiers({"x_member_no": "M-7", "favourite_colour": "red"}, POLICY)
    assert result.kept == {"x_member_no": "M-7"}
    assert result.rejected == {"favourite_colour": "unknown_kind"}


def test_other_ids_keep_their_case_but_lose_white_space() -> None:
    assert kept({"device_id": " AbC-123 "}) == {"device_id": "AbC-123"}


def test_blocked_values_and_patterns_are_configurable() -> None:
    policy = IdentifierPolicy.build(["guest"], [r"test-\d+"])
    result = normalise_identifiers(
        {"account_id": "GUEST", "crm_id": "test-42", "loyalty_id": "null"}, policy
    )
    assert result.rejected == {"account_id": "blocked", "crm_id": "blocked"}
    assert result.kept == {"loyalty_id": "null"}  # not blocked under this policy
