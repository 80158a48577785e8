"""The published JSON Schema of the event says what the model reads.

``touchpoint schema`` prints :func:`event_json_schema` for producers to validate
against, so it must be well-formed JSON Schema (draft 2020-12), name every field of
:class:`TouchpointEvent`, and accept and refuse what the model accepts and refuses
wherever JSON Schema can say so. A small validator for the keywords the schema uses
serves as the reference.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.event import (
    EARLIEST,
    EARLIEST_MS,
    EPOCH_MS_MINIMUM,
    IDENTIFIER_KINDS,
    LATEST,
    LATEST_MS,
    MAX_IDENTIFIERS,
    Commerce,
    Interaction,
    Survey,
    TouchpointEvent,
    event_json_schema,
    is_identifier_kind,
)

SCHEMA = event_json_schema()
JSON_TYPES = {"null", "boolean", "object", "array", "number", "string", "integer"}
REQUIRED = {"event_id", "occurred_at", "type", "identifiers"}


def walk(node: Any, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every schema object in ``node`` with its JSON pointer."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    found += walk(sub, f"{path}/{key}/{name}")
            elif key in ("anyOf", "allOf", "oneOf"):
                for i, sub in enumerate(value):
                    found += walk(sub, f"{path}/{key}/{i}")
            elif key in ("additionalProperties", "propertyNames", "items") and isinstance(
                value, dict
            ):
                found += walk(value, f"{path}/{key}")
    return found


# --- structure --------------------------------------------------------------------------


def test_the_schema_is_draft_2020_12_with_an_id_and_a_title() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"].endswith("touchpoint-event-v1.json")
    assert SCHEMA["title"] == "TouchpointEvent"
    assert SCHEMA["type"] == "object"


def test_the_schema_is_plain_json() -> None:
    assert orjson.loads(orjson.dumps(SCHEMA)) == SCHEMA


def test_the_required_fields_are_event_id_occurred_at_type_and_identifiers() -> None:
    assert set(SCHEMA["required"]) == REQUIRED
    assert len(SCHEMA["required"]) == len(REQUIRED)


def test_every_field_of_the_event_appears_and_nothing_else() -> None:
    assert set(SCHEMA["properties"]) == set(TouchpointEvent.model_fields)


@pytest.mark.parametrize("model", [Survey, Interaction, Commerce])
def test_every_field_of_each_nested_object_appears_in_its_definition(
    model: type[BaseModel],
) -> None:
    definition = SCHEMA["$defs"][model.__name__]
    assert definition["type"] == "object"
    assert set(definition["properties"]) == set(model.model_fields)
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert set(definition.get("required", [])) == required


def test_every_schema_object_uses_known_types_and_consistent_bounds() -> None:
    for path, node in walk(SCHEMA):
        kinds = node.get("type")
        if kinds is not None:
            assert set(kinds if isinstance(kinds, list) else [kinds]) <= JSON_TYPES, path
        for low, high in [
            ("minLength", "maxLength"),
            ("minimum", "maximum"),
            ("minProperties", "maxProperties"),
        ]:
            if low in node and high in node:
                assert node[low] <= node[high], path
        for keyword in ("minLength", "maxLength", "minProperties", "maxProperties"):
            if keyword in node:
                assert isinstance(node[keyword], int) and node[keyword] >= 0, path
        if "required" in node:
            assert set(node["required"]) <= set(node.get("properties", {})), path
        for keyword in ("anyOf", "allOf", "oneOf", "enum"):
            if keyword in node:
                assert isinstance(node[keyword], list) and node[keyword], path
        if "pattern" in node:
            re.compile(node["pattern"])


def test_every_reference_points_at_a_definition() -> None:
    refs = [node["$ref"] for _, node in walk(SCHEMA) if "$ref" in node]
    assert refs
    for ref in refs:
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in SCHEMA["$defs"]


def test_timestamps_are_rfc3339_text_or_epoch_milliseconds() -> None:
    text_or_epoch = [{"type": "string", "format": "date-time"}, {"type": "integer"}]
    occurred = [
        {k: v for k, v in s.items() if k in ("type", "format")}
        for s in SCHEMA["properties"]["occurred_at"]["anyOf"]
    ]
    sent = [
        {k: v for k, v in s.items() if k in ("type", "format")}
        for s in SCHEMA["properties"]["sent_at"]["anyOf"]
    ]
    assert occurred == text_or_epoch
    assert sent == [*text_or_epoch, {"type": "null"}]


def test_identifiers_are_one_to_twenty_strings_of_known_or_custom_kinds() -> None:
    identifiers = SCHEMA["properties"]["identifiers"]
    assert (identifiers["minProperties"], identifiers["maxProperties"]) == (1, MAX_IDENTIFIERS)
    assert identifiers["additionalProperties"] == {"type": "string"}
    names = identifiers["propertyNames"]["anyOf"]
    assert set(names[0]["enum"]) == IDENTIFIER_KINDS


def test_a_survey_names_its_three_metrics() -> None:
    assert set(SCHEMA["$defs"]["Survey"]["properties"]["metric"]["enum"]) == {"nps", "csat", "ces"}


# --- a reference validator for the keywords the schema uses ---------------------------------

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _ecma_search(pattern: str, text: str) -> bool:
    # ECMA-262 "$" (no multiline flag) is the end of the input, which Python spells "\Z"
    return re.search(pattern.replace("$", r"\Z"), text) is not None


def _is_type(value: Any, kind: str) -> bool:
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }[kind]


def conforms(value: Any, schema: dict[str, Any] = SCHEMA) -> bool:
    """True if ``value`` satisfies ``schema`` (``format: date-time`` asserted as RFC 3339)."""
    if "$ref" in schema and not conforms(
        value, SCHEMA["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    ):
        return False
    if "anyOf" in schema and not any(conforms(value, s) for s in schema["anyOf"]):
        return False
    if "type" in schema and not _is_type(value, schema["type"]):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "const" in schema and value != schema["const"]:
        return False
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get(
            "maxLength", len(value)
        ):
            return False
        if "pattern" in schema and not _ecma_search(schema["pattern"], value):
            return False
        if schema.get("format") == "date-time" and not _RFC3339.fullmatch(value):
            return False
    if _is_type(value, "number") and not (
        schema.get("minimum", value) <= value <= schema.get("maximum", value)
    ):
        return False
    if isinstance(value, dict):
        if len(value) < schema.get("minProperties", 0) or len(value) > schema.get(
            "maxProperties", len(value)
        ):
            return False
        if not set(schema.get("required", [])) <= set(value):
            return False
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if "propertyNames" in schema and not conforms(key, schema["propertyNames"]):
                return False
            if key in properties:
                if not conforms(item, properties[key]):
                    return False
            elif extra is False or (isinstance(extra, dict) and not conforms(item, extra)):
                return False
    return True


def model_reads(document: dict[str, Any]) -> bool:
    try:
        TouchpointEvent.model_validate_json(orjson.dumps(document))
    except ValidationError:
        return False
    return True


def event(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": "e-1",
        "occurred_at": "2026-11-22T11:00:00Z",
        "type": "page_view",
        "identifiers": {"email": "ann@example.com"},
    }
    document.update(fields)
    return {k: v for k, v in document.items() if v is not ...}


# Cases JSON Schema can express. (Score ranges per metric, the configured string limit,
# the nesting depth, integers beyond 64 bits in properties and the calendar range of
# RFC 3339 text are checked by the processor only; unknown identifier kinds are refused
# by the schema but tolerated by the processor, which drops them.)
AGREE: list[tuple[str, dict[str, Any], bool]] = [
    ("minimal", event(), True),
    ("epoch milliseconds", event(occurred_at=1_795_345_200_000), True),
    ("offset +05:30", event(occurred_at="2026-11-22T16:30:00+05:30"), True),
    ("fractional seconds", event(occurred_at="2026-11-22T11:00:00.123Z"), True),
    ("unknown top-level field", event(brand_new={"x": 1}), True),
    ("custom identifier kind", event(identifiers={"x_member_no": "M-7"}), True),
    ("twenty identifiers", event(identifiers={f"x_k{i}": "v" for i in range(20)}), True),
    ("optional objects null", event(survey=None, interaction=None, commerce=None, channel=None), True),
    ("optional strings null", event(source=None, session_id=None, case_id=None), True),
    ("sent_at null", event(sent_at=None), True),
    ("sent_at epoch", event(sent_at=1_795_345_200_000), True),
    ("full survey", event(survey={"metric": "csat", "score": 4, "scale_max": 5, "comment": "ok"}), True),
    ("full interaction", event(interaction={"direction": "inbound", "wait_seconds": 0, "resolved": True}), True),
    ("commerce", event(commerce={"order_id": "o-1", "amount": 9.5, "currency": "EUR"}), True),
    ("schema_version 1", event(schema_version=1), True),
    ("no event_id", event(event_id=...), False),
    ("no occurred_at", event(occurred_at=...), False),
    ("no type", event(type=...), False),
    ("no identifiers", event(identifiers=...), False),
    ("empty event_id", event(event_id=""), False),
    ("event_id of 129 chars", event(event_id="e" * 129), False),
    ("type in CamelCase", event(type="PageView"), False),
    ("no identifier", event(identifiers={}), False),
    ("21 identifiers", event(identifiers={f"x_k{i}": "v" for i in range(21)}), False),
    ("identifier value a number", event(identifiers={"account_id": 7}), False),
    ("naive timestamp", event(occurred_at="2026-11-22T11:00:00"), False),
    ("timestamp a float", event(occurred_at=1.5), False),
    ("timestamp a boolean", event(occurred_at=True), False),
    ("timestamp null", event(occurred_at=None), False),
    ("channel upper case", event(channel="Web"), False),
    ("channel of 65 chars", event(channel="c" * 65), False),
    ("unknown metric", event(survey={"metric": "wow", "score": 1}), False),
    ("score a word", event(survey={"metric": "nps", "score": "ten"}), False),
    ("no score", event(survey={"metric": "nps"}), False),
    ("scale_max 1", event(survey={"metric": "csat", "score": 1, "scale_max": 1}), False),
    ("negative wait", event(interaction={"wait_seconds": -1}), False),
    ("direction sideways", event(interaction={"direction": "sideways"}), False),
    ("currency EURO", event(commerce={"currency": "EURO"}), False),
    ("context value a number", event(context={"region": 1}), False),
    ("context null", event(context=None), False),
    ("properties a list", event(properties=[1]), False),
    ("schema_version 2", event(schema_version=2), False),
    ("schema_version a word", event(schema_version="one"), False),
    # types are exact: nothing is coerced, but an integer is a number
    ("schema_version a numeric string", event(schema_version="1"), False),
    ("schema_version true", event(schema_version=True), False),
    ("schema_version 1.0", event(schema_version=1.0), False),
    ("score a numeric string", event(survey={"metric": "nps", "score": "9"}), False),
    ("score true", event(survey={"metric": "nps", "score": True}), False),
    ("score an integer", event(survey={"metric": "nps", "score": 9}), True),
    ("score a float", event(survey={"metric": "csat", "score": 4.5}), True),
    ("scale_max a float", event(survey={"metric": "csat", "score": 4, "scale_max": 5.0}), False),
    ("transferred yes", event(interaction={"transferred": "yes"}), False),
    ("transferred 1", event(interaction={"transferred": 1}), False),
    ("wait a numeric string", event(interaction={"wait_seconds": "60"}), False),
    ("amount true", event(commerce={"amount": True}), False),
    ("event_id a boolean", event(event_id=True), False),
    # bounds of the numbers that are stored
    ("wait of 30 days", event(interaction={"wait_seconds": 2592000}), True),
    ("wait over 30 days", event(interaction={"wait_seconds": 2592000.5}), False),
    ("wait of 1e30", event(interaction={"wait_seconds": 1e30}), False),
    ("handle of 1e30", event(interaction={"handle_seconds": 1e30}), False),
    ("amount of -10^12", event(commerce={"amount": -(10**12)}), True),
    ("amount over 10^12", event(commerce={"amount": 1e12 + 1}), False),
    ("amount of -1e30", event(commerce={"amount": -1e30}), False),
    # integer timestamps: epoch milliseconds from 1973 to the end of 2299
    ("epoch milliseconds at the minimum", event(occurred_at=EPOCH_MS_MINIMUM), True),
    ("epoch seconds", event(occurred_at=1_795_345_200), False),
    ("epoch zero", event(occurred_at=0), False),
    ("negative epoch", event(occurred_at=-1), False),
    ("epoch milliseconds at the end", event(occurred_at=LATEST_MS), True),
    ("epoch milliseconds past the end", event(occurred_at=LATEST_MS + 1), False),
    ("epoch microseconds", event(occurred_at=1_795_345_200_000_000), False),
    ("sent_at in epoch seconds", event(sent_at=1_795_345_200), False),
]  # fmt: skip


@pytest.mark.parametrize(("why", "document", "valid"), AGREE, ids=[a[0] for a in AGREE])
def test_the_schema_and_the_model_agree(why: str, document: dict[str, Any], valid: bool) -> None:
    assert (conforms(document), model_reads(document)) == (valid, valid)


kinds = st.sampled_from(sorted(IDENTIFIER_KINDS)) | st.text(
    alphabet="x_abzAZ09-\n ", min_size=0, max_size=70
).map(lambda s: "x_" + s if s[:1] == "a" else s)


@settings(max_examples=300, deadline=None)
@given(kinds)
def test_the_schema_and_the_processor_agree_on_identifier_kinds(kind: str) -> None:
    assert conforms(
        kind, SCHEMA["properties"]["identifiers"]["propertyNames"]
    ) == is_identifier_kind(kind)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abz09_A-\n .", min_size=0, max_size=70))
def test_the_schema_and_the_model_agree_on_channels(channel: str) -> None:
    document = event(channel=channel)
    assert conforms(document) == model_reads(document)


numbers = (
    st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.text(alphabet="0123456789.e-", max_size=6)
)


@settings(max_examples=300, deadline=None)
@given(numbers, st.sampled_from(["wait_seconds", "handle_seconds", "amount"]))
def test_the_schema_and_the_model_agree_on_stored_numbers(number: Any, field: str) -> None:
    parent = "commerce" if field == "amount" else "interaction"
    document = event(**{parent: {field: number}})
    assert conforms(document) == model_reads(document)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-(2**45), 2**45) | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
)
def test_the_schema_and_the_model_agree_on_integer_timestamps(value: Any) -> None:
    document = event(occurred_at=value)
    assert conforms(document) == model_reads(document)


def test_the_calendar_bounds_in_milliseconds_are_the_bounds_as_instants() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert epoch + timedelta(milliseconds=EARLIEST_MS) == EARLIEST
    assert epoch + timedelta(milliseconds=LATEST_MS) == LATEST
    assert epoch + timedelta(milliseconds=EPOCH_MS_MINIMUM) == datetime(
        1973, 3, 3, 9, 46, 40, tzinfo=UTC
    )
