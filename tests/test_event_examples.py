"""The event contract as producers in other languages meet it.

``schemas/touchpoint-event-v1.schema.json`` is the JSON Schema a producer can validate
against; it must stay equal to what ``touchpoint schema`` prints. Every example under
``schemas/examples/`` gets the same verdict from an independent JSON Schema validator
and from the processor's own ingest: valid examples pass both; each invalid one fails
both, and ingest gives it the dead-letter reason its file name starts with
(``<reason>--<what>.json``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas.dead_letter import DeadLetter, Reason
from schemas.event import event_json_schema
from schemas.ingested import IngestedEvent, SourceRecord
from streams.domain.ingest import ingest
from streams.runtime.app import ingest_rules
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "schemas" / "touchpoint-event-v1.schema.json"
EXAMPLES = ROOT / "schemas" / "examples"
VALID = sorted((EXAMPLES / "valid").glob("*.json"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.json"))
NOW = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)


def checked_in_schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def validator() -> Draft202012Validator:
    # formats (date-time) are checked too: that is where RFC 3339 is stated
    return Draft202012Validator(
        checked_in_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def through_ingest(path: Path) -> IngestedEvent | DeadLetter:
    """The example as the processor reads it: the value of a record on its channel's topic."""
    raw = path.read_bytes()
    document = json.loads(raw)
    channel = document.get("channel") if isinstance(document, dict) else None
    topic = f"touchpoints.{channel if channel and channel.islower() else 'web'}"
    record = SourceRecord(topic, 0, 0, int(NOW.timestamp() * 1000), None, raw)
    return ingest(record, ingest_rules(Settings()), NOW)


def test_the_checked_in_schema_is_the_one_touchpoint_schema_prints() -> None:
    assert checked_in_schema() == event_json_schema(), (
        "schemas/touchpoint-event-v1.schema.json is out of date: run "
        "touchpoint schema -o schemas/touchpoint-event-v1.schema.json"
    )
    # and byte for byte as the command writes it, so a diff shows only real changes
    printed = json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == printed


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(checked_in_schema())


def test_there_are_examples_of_both_kinds_and_every_invalid_one_names_a_reason() -> None:
    assert len(VALID) >= 5 and len(INVALID) >= 8
    reasons = {r.value for r in Reason}
    for path in INVALID:
        assert path.name.split("--")[0] in reasons, path.name


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_a_valid_example_passes_the_schema_and_is_accepted(path: Path) -> None:
    errors = [e.message for e in validator().iter_errors(json.loads(path.read_bytes()))]
    assert errors == []
    result = through_ingest(path)
    assert isinstance(result, IngestedEvent), result


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_an_invalid_example_fails_the_schema_and_is_dead_lettered_for_its_reason(
    path: Path,
) -> None:
    assert list(validator().iter_errors(json.loads(path.read_bytes()))), "the schema took it"
    result = through_ingest(path)
    assert isinstance(result, DeadLetter), "ingest accepted it"
    assert result.reason.value == path.name.split("--")[0], result.detail
