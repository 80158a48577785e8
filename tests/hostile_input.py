"""Hostile input for the per-message path: a fixed corpus and hypothesis strategies.

Shared by the unit fuzz tests (``tests/test_ingest_fuzz.py``) and the test that stores
what ingest produces in the real ClickHouse engine
(``tests/integration/test_ingest_clickhouse.py``). Every value here is something a
producer could put on a topic: bytes, JSON or not, with or without headers and keys.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import strategies as st

__all__ = [
    "CORPUS",
    "EVERY_PLANE",
    "NOW_MS",
    "base_event",
    "encode",
    "hostile_values",
    "json_values",
    "nested",
    "record_parts",
]

#: The Kafka record time the corpus is read with (2026-11-22T12:00:00Z).
NOW_MS = 1_795_348_800_000

#: One character from each Unicode plane (0 to 16), past the ASCII range; plane 0 also
#: gives U+FFFE, a noncharacter, and plane 16 the last code point.
EVERY_PLANE = (
    "é\ufffe" + "".join(chr(plane * 0x10000 + 0x100) for plane in range(1, 17)) + "\U0010ffff"
)


def base_event(**fields: Any) -> dict[str, Any]:
    """A valid event on ``touchpoints.web``; keyword arguments add or replace fields."""
    document: dict[str, Any] = {
        "event_id": "h-1",
        "occurred_at": "2026-11-22T11:00:00Z",
        "type": "page_view",
        "identifiers": {"email": "ann@example.com"},
    }
    document.update(fields)
    return document


def encode(document: Any, *, ascii_only: bool = False) -> bytes:
    """JSON of ``document``. orjson where it can; the standard library writes what orjson
    will not (integers beyond 64 bits, lone surrogates as ``\\udXXX`` escapes)."""
    if not ascii_only:
        try:
            return orjson.dumps(document)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(document, ensure_ascii=True, allow_nan=False).encode()


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep: ``{"n": {"n": ... {}}}``."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def _with_raw(document: dict[str, Any], old: bytes, new: bytes) -> bytes:
    raw = encode(document)
    assert raw.count(old) == 1, (raw, old)
    return raw.replace(old, new)


_LONG = "ab" * 2048  # not one repeated character: that is a blocked placeholder
_MARK = b'"mark":1'

#: (name, value, the outcome: "accepted" or the dead-letter reason). Names are unique.
CORPUS: list[tuple[str, bytes | None, str]] = [
    ("every plane everywhere", encode(base_event(
        event_id="h-" + EVERY_PLANE,
        identifiers={"email": "ann@example.com", "x_plane": EVERY_PLANE},
        session_id=EVERY_PLANE, case_id=EVERY_PLANE, source=EVERY_PLANE,
        survey={"metric": "nps", "score": 9, "comment": EVERY_PLANE},
        interaction={"queue": EVERY_PLANE, "agent_id": EVERY_PLANE},
        commerce={"order_id": EVERY_PLANE},
        context={EVERY_PLANE: EVERY_PLANE},
        properties={EVERY_PLANE: [EVERY_PLANE, {EVERY_PLANE: EVERY_PLANE}]},
    )), "accepted"),
    ("every plane as escapes", encode(base_event(
        event_id="h-esc-" + EVERY_PLANE, properties={"p": EVERY_PLANE}, context={"c": EVERY_PLANE}
    ), ascii_only=True), "accepted"),
    ("nul characters", encode(base_event(
        event_id="h-\x00-nul", identifiers={"x_nul": "a\x00b"}, context={"k\x00": "\x00"},
        survey={"metric": "csat", "score": 4, "comment": "\x00\x00"},
        properties={"\x00": "\x00", "list": ["\x00", {"\x00": None}]},
    )), "accepted"),
    ("strings of exactly 4096 chars", encode(base_event(
        event_id="h-long", identifiers={"x_long": _LONG}, context={"region": _LONG},
        survey={"metric": "ces", "score": 7, "comment": _LONG}, properties={_LONG[:-1] + "k": _LONG},
    )), "accepted"),
    ("4096 chars of the last plane", encode(base_event(
        event_id="h-long-plane", properties={"p": "\U0010ffff" * 4096},
    )), "accepted"),
    ("huge and tiny numbers", encode(base_event(
        event_id="h-numbers",
        survey={"metric": "csat", "score": 5e-324},
        interaction={"wait_seconds": 5e-324, "handle_seconds": -0.0},
        commerce={"amount": -0.0},
        properties={"huge": 1e308, "max": 1.7976931348623157e308, "tiny": 5e-324, "negzero": -0.0,
                    "u64": 2**64 - 1, "i64": -(2**63), "beyond53": 2**53 + 1, "e": [1e-300, -1e300]},
    )), "dead:score_out_of_range"),  # a CSAT of 5e-324 is below 1
    ("huge and tiny numbers, valid score", encode(base_event(
        event_id="h-numbers-2",
        survey={"metric": "csat", "score": 1},
        interaction={"wait_seconds": 5e-324, "handle_seconds": -0.0},
        commerce={"amount": -0.0},
        properties={"huge": 1e308, "max": 1.7976931348623157e308, "tiny": 5e-324, "negzero": -0.0,
                    "u64": 2**64 - 1, "i64": -(2**63), "beyond53": 2**53 + 1, "e": [1e-300, -1e300]},
    )), "accepted"),
    ("bounds of stored numbers", encode(base_event(
        event_id="h-bounds", interaction={"wait_seconds": 2592000, "handle_seconds": 2592000},
        commerce={"amount": -(10**12), "currency": "eur"},
        survey={"metric": "csat", "score": 100, "scale_max": 100},
    )), "accepted"),
    ("first and last instants", encode(base_event(
        event_id="h-instants", occurred_at="2299-12-31T23:59:59.999Z", sent_at=10_413_791_999_999,
    )), "accepted"),
    ("the first instant", encode(base_event(
        event_id="h-first", occurred_at="1900-01-01T00:00:00Z",
    )), "accepted"),
    ("deep to the limit", encode(base_event(
        event_id="h-deep", properties=nested(31),
    )), "accepted"),
    ("lists deep to the limit", encode(base_event(
        event_id="h-deep-lists", properties={"l": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
    )), "accepted"),
    ("duplicate keys", b'{"event_id": "h-dup-first", "event_id": "h-dup", "occurred_at": 1795345200000,'
     b' "type": "x", "type": "page_view", "identifiers": {"email": "a@example.com", "email": "ann@example.com"},'
     b' "properties": {"a": "x", "a": {"b": 1, "b": [2]}}, "properties": {"k": 1, "k": 2}}', "accepted"),
    ("duplicate keys hiding a bad value", b'{"event_id": "h-dup-bad", "occurred_at": 1795345200000, "type": "page_view",'
     b' "identifiers": {"email": "ann@example.com"}, "survey": {"metric": "nps", "score": 99, "score": 9}}', "accepted"),
    ("duplicate keys revealing a bad value", b'{"event_id": "h-dup-bad-2", "occurred_at": 1795345200000, "type": "page_view",'
     b' "identifiers": {"email": "ann@example.com"}, "survey": {"metric": "nps", "score": 9, "score": 99}}', "dead:score_out_of_range"),
    ("too deep", encode(base_event(event_id="h-too-deep", properties=nested(32))), "dead:too_deep"),
    ("far too deep", b'{"event_id": "h-far-too-deep", "p": ' + b"[" * 5000 + b"]" * 5000 + b"}", "dead:too_deep"),
    ("integer beyond 64 bits", encode(base_event(event_id="h-big", properties={"a": [{"n": 2**64}]})), "dead:invalid_field"),
    ("negative integer beyond 64 bits", encode(base_event(event_id="h-big-neg", properties={"n": -(2**63) - 1})), "dead:invalid_field"),
    ("integer beyond double range", _with_raw(base_event(event_id="h-big-double", properties={"mark": 1}), _MARK, b'"mark":' + b"9" * 400), "dead:not_json"),
    ("1e400", _with_raw(base_event(event_id="h-1e400", properties={"mark": 1}), _MARK, b'"mark":1e400'), "dead:not_json"),
    ("NaN", _with_raw(base_event(event_id="h-nan", properties={"mark": 1}), _MARK, b'"mark":NaN'), "dead:not_json"),
    ("-Infinity", _with_raw(base_event(event_id="h-inf", properties={"mark": 1}), _MARK, b'"mark":-Infinity'), "dead:not_json"),
    ("nan in lower case", _with_raw(base_event(event_id="h-nan2", properties={"mark": 1}), _MARK, b'"mark":nan'), "dead:not_json"),
    ("Infinity as a score", _with_raw(base_event(event_id="h-inf2", survey={"metric": "csat", "mark": 1}), _MARK, b'"score":Infinity'), "dead:not_json"),
    ("a lone high surrogate escape", encode(base_event(event_id="h-sur", properties={"s": "a\ud800b"})), "dead:not_json"),
    ("a lone low surrogate escape", encode(base_event(event_id="h-sur2", context={"c": "\udfff"})), "dead:not_json"),
    ("a lone surrogate in a key", encode(base_event(event_id="h-sur3", properties={"\udbff": 1})), "dead:not_json"),
    ("a surrogate encoded as utf-8 bytes", encode(base_event(event_id="h-sur4", properties={"mark": 1})).replace(_MARK, b'"s":"\xed\xa0\x80"'), "dead:not_utf8"),
    ("a surrogate pair escape is one character", encode(base_event(event_id="h-pair", properties={"s": "\U0001f600"}), ascii_only=True), "accepted"),
    ("a string over the limit", encode(base_event(event_id="h-over", properties={"s": _LONG + "x"})), "dead:string_too_long"),
    ("schema registry framing", b"\x00\x00\x00\x01\x2c" + encode(base_event(event_id="h-framed")), "dead:schema_registry_framing"),
    ("a score sent as text", encode(base_event(event_id="h-text-score", survey={"metric": "nps", "score": "9"})), "dead:invalid_field"),
    ("a flag sent as text", encode(base_event(event_id="h-text-flag", interaction={"transferred": "yes"})), "dead:invalid_field"),
    ("epoch seconds", encode(base_event(event_id="h-seconds", occurred_at=1_795_345_200)), "dead:invalid_timestamp"),
    ("year 2300", encode(base_event(event_id="h-2300", occurred_at="2300-01-01T00:00:00Z")), "dead:invalid_timestamp"),
    ("random bytes", bytes(range(255, -1, -1)), "dead:not_utf8"),
    ("random bytes after a zero byte", bytes(range(256)), "dead:schema_registry_framing"),
    ("nul bytes", b"\x00" * 4, "dead:not_json"),
    ("no value", None, "dead:empty_value"),
    ("a byte order mark", b"\xef\xbb\xbf" + encode(base_event(event_id="h-bom")), "dead:not_json"),
]  # fmt: skip

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e308, -1e308, 5e-324, -5e-324, -0.0, 2**63, -(2**63), 2**64 - 1, 2**64])
    | st.text(st.characters(codec="utf-8"), max_size=12)
    | st.text(st.characters(categories=["Cs", "Cc", "Co", "Cn"]), max_size=3)
)

#: Any JSON value (lone surrogates and integers of any size included), a few levels deep.
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)

_FIELDS = [
    "event_id", "occurred_at", "type", "identifiers", "channel", "sent_at", "schema_version",
    "source", "session_id", "case_id", "survey", "interaction", "commerce", "context",
    "properties",
]  # fmt: skip
_NESTED = {
    "survey": ["metric", "score", "scale_max", "comment"],
    "interaction": [
        "direction", "queue", "agent_id", "wait_seconds", "handle_seconds", "transferred",
        "escalated", "resolved",
    ],
    "commerce": ["order_id", "amount", "currency"],
    "identifiers": ["email", "phone", "x_custom"],
    "context": ["region"],
}  # fmt: skip
_PLAUSIBLE = {
    "survey": {"metric": "nps", "score": 9, "comment": "ok"},
    "interaction": {"direction": "inbound", "wait_seconds": 30, "transferred": False},
    "commerce": {"order_id": "o-1", "amount": 12.5, "currency": "EUR"},
    "properties": {"path": "/pricing", "n": [1, 2.5, None]},
}


@st.composite
def _documents(draw: st.DrawFn) -> Any:
    """A valid event with arbitrary JSON values at a few fields, top level or nested."""
    document = base_event(**{k: v for k, v in _PLAUSIBLE.items() if draw(st.booleans())})
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(_FIELDS))
        inner = _NESTED.get(field)
        if inner and isinstance(document.get(field), dict) and draw(st.booleans()):
            document[field] = {**document[field], draw(st.sampled_from(inner)): draw(json_values)}
        elif draw(st.booleans()):
            document.pop(field, None)
        else:
            document[field] = draw(json_values)
    return document


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid event's bytes with bytes replaced, inserted or cut."""
    raw = bytearray(encode(draw(_documents())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        action = draw(st.sampled_from(["replace", "insert", "cut", "splice"]))
        if action == "replace":
            raw[at] = draw(st.integers(0, 255))
        elif action == "insert":
            raw.insert(at, draw(st.integers(0, 255)))
        elif action == "cut":
            del raw[at : at + draw(st.integers(1, 20))]
        else:  # a token producers and parsers disagree about
            token = draw(
                st.sampled_from(
                    [b"NaN", b"Infinity", b"-Infinity", b"nan", b"1e400", b"-0", b"1E+2",
                     b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\u0000"', b"\xed\xa0\x80",
                     b"\xf4\x90\x80\x80", b"[" * 40, b"{" * 40, b'"a":1,"a":2,', b"\x00",
                     b"123456789012345678901234567890", b"\xef\xbb\xbf", b",", b"}"]
                )
            )  # fmt: skip
            raw[at:at] = token
    return bytes(raw)


@st.composite
def _duplicated(draw: st.DrawFn) -> bytes:
    """A valid event whose JSON repeats a key (top level or nested) with another value."""
    document = draw(_documents())
    raw = encode(document)
    field = draw(st.sampled_from(sorted(document)))
    value = encode(draw(json_values))
    where = draw(st.sampled_from(["before", "after"]))
    extra = b'"' + field.encode() + b'":' + value
    if where == "before":
        return b"{" + extra + b"," + raw[1:]
    return raw[:-1] + b"," + extra + b"}"


@st.composite
def _deep(draw: st.DrawFn) -> bytes:
    """A valid event with objects or arrays nested 1 to 1100 levels in its properties."""
    depth = draw(st.integers(1, 1100))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"n":', b"}")]))
    leaf = b"[]" if opener == b"[" else b"{}"
    inner = opener * (depth - 1) + leaf + closer * (depth - 1)
    return encode(base_event(properties={"mark": 1})).replace(_MARK, b'"p":' + inner)


#: Bytes a producer could send: JSON documents with arbitrary values, mutations of valid
#: events, duplicate keys, deep nesting, framing, random bytes, nothing at all.
hostile_values = st.one_of(
    _documents().map(encode),
    _documents().map(lambda d: encode(d, ascii_only=True)),
    _mutated(),
    _duplicated(),
    _deep(),
    _documents().map(lambda d: b"\x00" + bytes(4) + encode(d)),
    st.binary(max_size=300),
    st.none(),
)

_header_names = st.text(st.characters(codec="utf-8"), max_size=8) | st.text(
    st.characters(categories=["Cs"]), min_size=1, max_size=2
)

#: Record parts besides the value: key, headers, broker timestamp (any 64-bit value).
record_parts = st.tuples(
    st.none() | st.binary(max_size=20),
    st.lists(st.tuples(_header_names, st.binary(max_size=20)), max_size=3).map(tuple),
    st.none() | st.just(NOW_MS) | st.integers(-(2**63), 2**63 - 1),
)
