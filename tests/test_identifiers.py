"""Identifier normalisation: one spelling per identifier, placeholders never survive.

Stitching links two events when they spell an identifier the same way, so every rule
here is about equality: e-mail addresses are trimmed and lower-cased, phone numbers
become E.164, and values that stand for "nobody" are removed before they can link
strangers together.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.identifiers import IdentifierPolicy, normalise_identifiers, normalise_phone
from streams.settings import DEFAULT_BLOCKED_PATTERNS, DEFAULT_BLOCKED_VALUES

POLICY = IdentifierPolicy.build(DEFAULT_BLOCKED_VALUES, DEFAULT_BLOCKED_PATTERNS)
UK = IdentifierPolicy.build(DEFAULT_BLOCKED_VALUES, DEFAULT_BLOCKED_PATTERNS, "GB")
US = IdentifierPolicy.build(DEFAULT_BLOCKED_VALUES, DEFAULT_BLOCKED_PATTERNS, "US")
LONDON = "+442079460958"
SAN_FRANCISCO = "+14155552671"


def kept(identifiers: dict[str, str], policy: IdentifierPolicy = POLICY) -> dict[str, str]:
    return normalise_identifiers(identifiers, policy).kept


def rejected(identifiers: dict[str, str], policy: IdentifierPolicy = POLICY) -> dict[str, str]:
    return normalise_identifiers(identifiers, policy).rejected


# --- e-mail ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["ann.lee@example.com", "Ann.Lee@Example.COM", "  ANN.LEE@EXAMPLE.COM\t", "\nann.lee@example.com "],
)  # fmt: skip
def test_email_is_trimmed_and_lower_cased(spelling: str) -> None:
    assert kept({"email": spelling}) == {"email": "ann.lee@example.com"}


@pytest.mark.parametrize(
    "malformed", ["ann", "ann@", "@example.com", "ann@example", "a b@example.com", "a@@example.com"]
)
def test_an_address_that_is_not_an_address_is_removed_as_malformed(malformed: str) -> None:
    assert rejected({"email": malformed}) == {"email": "malformed"}


# --- phone -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "+442079460958",
        "+44 20 7946 0958",
        " +44-20-7946-0958 ",
        "+44 (0)20 7946-0958",
        "+44 (0) 20 7946 0958",
        "+44.20.7946.0958",
        "tel:+44-20-7946-0958",
        "+44 20 7946 0958 ext. 12",
    ],
)
def test_every_international_spelling_of_a_number_becomes_one_e164_value(spelling: str) -> None:
    assert kept({"phone": spelling}) == {"phone": LONDON}


@pytest.mark.parametrize(
    ("spelling", "policy"),
    [
        ("020 7946 0958", UK),
        ("(020) 7946 0958", UK),
        ("02079460958", UK),
        ("+44 20 7946 0958", UK),
        ("0044 20 7946 0958", IdentifierPolicy.build((), (), "DE")),
        ("00 44 20 7946 0958", IdentifierPolicy.build((), (), "FR")),
        ("+44 20 7946 0958", US),
    ],
)
def test_local_and_international_spellings_meet_in_one_e164_value(
    spelling: str, policy: IdentifierPolicy
) -> None:
    assert kept({"phone": spelling}, policy) == {"phone": LONDON}


@pytest.mark.parametrize(
    "spelling", ["(415) 555-2671", "415.555.2671", "415-555-2671", "1-415-555-2671", "+1 415 555 2671"]
)  # fmt: skip
def test_north_american_spellings_become_one_e164_value(spelling: str) -> None:
    assert kept({"phone": spelling}, US) == {"phone": SAN_FRANCISCO}


def test_a_local_number_needs_a_default_region() -> None:
    assert rejected({"phone": "020 7946 0958"}) == {"phone": "malformed"}
    assert rejected({"phone": "0044 20 7946 0958"}) == {"phone": "malformed"}
    assert kept({"phone": "020 7946 0958"}, UK) == {"phone": LONDON}


@pytest.mark.parametrize("not_a_number", ["12", "+99 12", "+44 20 7946 09581234", "call me", "+"])
def test_a_value_that_is_not_a_valid_number_is_removed_as_malformed(not_a_number: str) -> None:
    assert rejected({"phone": not_a_number}, UK) == {"phone": "malformed"}


def test_normalise_phone_gives_e164_or_none() -> None:
    assert normalise_phone("+44 20 7946 0958", None) == LONDON
    assert normalise_phone("020 7946 0958", "GB") == LONDON
    assert normalise_phone("020 7946 0958", None) is None


# --- placeholders ----------------------------------------------------------------------------

PLACEHOLDERS = [
    "null", "NULL", "Null", " null ", "undefined", " undefined ", "UNDEFINED", "none", "None",
    "NONE", "0", " 0 ", "-1", "anonymous", "Anonymous", "unknown", "Unknown", "UNKNOWN",
    "[object Object]", "[OBJECT OBJECT]", "", "   ", "\t", "nil", "NaN", "n/a", "N/A",
    "00000000-0000-0000-0000-000000000000", " 00000000-0000-0000-0000-000000000000 ",
    "0000", "xxxx", "XXXX", "****",
]  # fmt: skip


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
@pytest.mark.parametrize("kind", ["device_id", "anonymous_id", "account_id", "x_member_no"])
def test_placeholder_values_are_removed_as_blocked(placeholder: str, kind: str) -> None:
    result = normalise_identifiers({kind: placeholder, "email": "a@b.io"}, POLICY)
    assert result.kept == {"email": "a@b.io"}
    assert result.rejected == {kind: "blocked"}


@pytest.mark.parametrize("placeholder", ["null", "Unknown", "0", "", " NONE "])
def test_a_placeholder_email_or_phone_is_blocked_not_malformed(placeholder: str) -> None:
    assert rejected({"email": placeholder, "phone": placeholder}, UK) == {
        "email": "blocked",
        "phone": "blocked",
    }


def test_the_shared_test_address_is_blocked_in_any_case() -> None:
    assert rejected({"email": " Test@Test.COM "}) == {"email": "blocked"}


def test_other_ids_keep_their_case_but_lose_white_space() -> None:
    assert kept({"device_id": " AbC-123 ", "anonymous_id": "\tZz9\n"}) == {
        "device_id": "AbC-123",
        "anonymous_id": "Zz9",
    }


def test_values_that_merely_contain_a_placeholder_are_kept() -> None:
    assert kept({"account_id": "null-island-7", "crm_id": "10", "device_id": "x0x0"}) == {
        "account_id": "null-island-7",
        "crm_id": "10",
        "device_id": "x0x0",
    }


# --- kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["email", "phone", "anonymous_id", "device_id", "account_id", "crm_id", "loyalty_id"]
)
def test_every_contract_kind_is_read(kind: str) -> None:
    value = {"email": "ann@example.com", "phone": LONDON}.get(kind, "v-1")
    assert kept({kind: value}) == {kind: value}


@pytest.mark.parametrize("kind", ["x_member_no", "x_a", "x_shop_7", "x_" + "k" * 64])
def test_custom_kinds_x_name_are_kept(kind: str) -> None:
    assert kept({kind: "M-7"}) == {kind: "M-7"}


@pytest.mark.parametrize(
    "kind",
    ["favourite_colour", "Email", "EMAIL", "x_", "X_member", "x-member", "x_Member", "x_" + "k" * 65,
     "x_member\n", "email\n", "ssn", ""],
)  # fmt: skip
def test_other_kinds_are_removed_as_unknown_kind(kind: str) -> None:
    result = normalise_identifiers({kind: "v-1", "x_member_no": "M-7"}, POLICY)
    assert result.kept == {"x_member_no": "M-7"}
    assert result.rejected == {kind: "unknown_kind"}


# --- configuration ----------------------------------------------------------------------------


def test_extra_blocked_values_are_compared_trimmed_and_in_any_case() -> None:
    policy = IdentifierPolicy.build([" Guest ", "DEMO"], [])
    result = rejected({"account_id": "GUEST", "crm_id": " demo", "loyalty_id": "guest-1"}, policy)
    assert result == {"account_id": "blocked", "crm_id": "blocked"}


def test_extra_blocked_patterns_must_match_the_whole_trimmed_value() -> None:
    policy = IdentifierPolicy.build([], [r"test-\d+", r"guest"])
    result = normalise_identifiers(
        {"account_id": " test-42 ", "crm_id": "test-42x", "loyalty_id": "my-guest", "device_id": "guest"},
        policy,
    )  # fmt: skip
    assert result.rejected == {"account_id": "blocked", "device_id": "blocked"}
    assert result.kept == {"crm_id": "test-42x", "loyalty_id": "my-guest"}


def test_a_policy_blocks_only_what_it_names() -> None:
    policy = IdentifierPolicy.build(["guest"], [r"test-\d+"])
    assert kept({"loyalty_id": "null", "device_id": "0000"}, policy) == {
        "loyalty_id": "null",
        "device_id": "0000",
    }


def test_a_blocked_pattern_may_carry_its_own_flags() -> None:
    policy = IdentifierPolicy.build([], [r"(?i)guest-\d+", r"[0\-]+"])
    assert rejected({"account_id": "GUEST-7", "device_id": "0000"}, policy) == {
        "account_id": "blocked",
        "device_id": "blocked",
    }


def test_a_blocked_value_applies_to_the_normalised_form_too() -> None:
    policy = IdentifierPolicy.build(["+442079460958", "ceo@example.com"], [], "GB")
    assert rejected({"phone": "020 7946 0958", "email": " CEO@Example.com"}, policy) == {
        "phone": "blocked",
        "email": "blocked",
    }


# --- properties ---------------------------------------------------------------------------------

padding = st.text(alphabet=" \t\n", max_size=3)
local_parts = st.from_regex(r"[A-Za-z0-9._%+-]{1,20}", fullmatch=True)
domains = st.from_regex(r"[A-Za-z0-9-]{1,12}(\.[A-Za-z0-9-]{1,8}){0,2}\.[A-Za-z]{2,6}", fullmatch=True)  # fmt: skip
BLOCKED = {v.strip().lower() for v in DEFAULT_BLOCKED_VALUES}


@settings(max_examples=150, deadline=None)
@given(local=local_parts, domain=domains, before=padding, after=padding)
def test_an_email_normalises_like_strip_and_lower(
    local: str, domain: str, before: str, after: str
) -> None:
    address = f"{local}@{domain}"
    reference = address.strip().lower()
    result = normalise_identifiers({"email": before + address + after}, POLICY)
    if reference in BLOCKED:
        assert result.rejected == {"email": "blocked"}
    else:
        assert result.kept == {"email": reference}


@settings(max_examples=150, deadline=None)
@given(
    value=st.sampled_from(sorted(BLOCKED - {""})),
    upper=st.lists(st.booleans(), min_size=16, max_size=16),
    before=padding,
    after=padding,
    kind=st.sampled_from(["email", "phone", "device_id", "crm_id", "x_any"]),
)
def test_a_placeholder_in_any_case_and_padding_never_survives(
    value: str, upper: list[bool], before: str, after: str, kind: str
) -> None:
    spelled = "".join(c.upper() if u else c for c, u in zip(value, upper, strict=False))
    assert normalise_identifiers({kind: before + spelled + after}, UK).rejected == {kind: "blocked"}


identifier_maps = st.dictionaries(
    st.sampled_from(["email", "phone", "device_id", "account_id", "x_k", "other"]),
    st.sampled_from(["Ann@Example.com", " +44 20 7946 0958 ", "020 7946 0958", "null", "0000", "AbC", ""]),
    max_size=6,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(identifier_maps)
def test_normalising_twice_changes_nothing_and_every_kind_is_answered_once(
    identifiers: dict[str, str],
) -> None:
    once = normalise_identifiers(identifiers, UK)
    assert set(once.kept) | set(once.rejected) == set(identifiers)
    assert not set(once.kept) & set(once.rejected)
    assert set(once.rejected.values()) <= {"blocked", "malformed", "unknown_kind"}
    assert normalise_identifiers(once.kept, UK).kept == once.kept
