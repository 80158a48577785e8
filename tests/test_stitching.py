"""One stitch batch end to end in memory: events rows, journey stage, score rows, lateness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.clickhouse import EVENT_COLUMNS, SCORE_COLUMNS
from schemas.ingested import IngestedEvent, SourceRecord
from sinks.rows import event_row
from streams.domain.dedup import DuplicateWindow
from streams.domain.effort import CaseBook, EffortRules
from streams.domain.ingest import ingest
from streams.domain.journey import JourneyRules
from streams.domain.scores import Watermarks
from streams.domain.stitching import FLAG_LATE, ScoreRules, stitch_rows
from streams.runtime.app import identity_rules, ingest_rules
from streams.settings import Settings
from tests.test_identity import Store

SETTINGS = Settings()
NOW = datetime(2026, 11, 20, tzinfo=UTC)
T0 = int(datetime(2026, 11, 10, 12, 0, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000
COLUMN = {name: i for i, name in enumerate(EVENT_COLUMNS)}
SCORE = {name: i for i, name in enumerate(SCORE_COLUMNS)}


def row(event_id: str, at: int, *, partition: int = 0, **fields: Any) -> list[Any]:
    document = {
        "event_id": event_id,
        "occurred_at": at,
        "type": "page_view",
        "identifiers": {"email": "ada@example.com"},
        "context": {"region": "eu"},
        **fields,
    }
    channel = document.pop("channel", "web")
    outcome = ingest(
        SourceRecord(f"touchpoints.{channel}", partition, 0, None, None, orjson.dumps(document)),
        ingest_rules(SETTINGS),
        NOW,
    )
    assert isinstance(outcome, IngestedEvent), outcome
    return orjson.loads(orjson.dumps(event_row(outcome)))


def survey(event_id: str, at: int, metric: str, score: float, **fields: Any) -> list[Any]:
    return row(
        event_id,
        at,
        type="survey_response",
        survey={"metric": metric, "score": score},
        **fields,
    )


class Stream:
    """The stitch agent's loop without Kafka: state in dicts, window and watermarks kept."""

    def __init__(self, grace_ms: int = 600_000) -> None:
        self.store = Store(journey=JourneyRules())
        self.window = DuplicateWindow(window_ms=7 * 86_400_000, max_ids_per_partition=10_000)
        self.window.load(0, [])
        self.watermarks = Watermarks(grace_ms)
        self.cases: dict[str, list[Any]] = {}
        self.version = 0

    def batch(self, records: list[tuple[int, list[list[Any]]]]) -> Any:
        stitcher = self.store.stitcher(identity_rules(SETTINGS))
        book = CaseBook(EffortRules(), self.cases.get)
        self.version += 1
        out = stitch_rows(
            records,
            stitcher,
            self.window,
            "app-stitch",
            records[-1][0],
            1,
            self.watermarks,
            ScoreRules(MINUTE, ("region",)),
            book,
            self.version,
        )
        self.store.persist(stitcher.changes())
        self.cases.update(book.changes())
        return out


def _tallies(score_row: tuple[Any, ...]) -> dict[tuple[Any, ...], tuple[int, ...]]:
    keys = zip(
        *(score_row[SCORE[c]] for c in ("bucket_start", "segment_kind", "segment_value", "metric")),
        strict=True,
    )
    values = zip(*(score_row[SCORE[c]] for c in SCORE_COLUMNS[7:]), strict=True)
    return dict(zip(keys, values, strict=True))


def test_each_record_with_answers_gets_one_score_row_with_its_segments() -> None:
    out = Stream().batch(
        [
            (5, [row("a", T0, type="ticket_opened", channel="support", case_id="k1")]),
            (6, [survey("b", T0 + 1000, "nps", 9), survey("c", T0 + 61_000, "nps", 3)]),
        ]
    )
    (score_row,) = out.rows["scores_store"]
    assert score_row[SCORE["stitch_offset"]] == 6
    assert score_row[SCORE["first_event_id"]] == "b"
    tallies = _tallies(score_row)
    # responses, promoters, passives, detractors, positive, score_milli, score_sq_micro
    assert tallies[(T0, "all", "all", "nps")] == (1, 1, 0, 0, 1, 9000, 81_000_000)
    assert tallies[(T0 + MINUTE, "all", "all", "nps")] == (1, 0, 0, 1, 0, 3000, 9_000_000)
    # the customer was in support when they answered (ticket_opened)
    assert tallies[(T0, "journey_stage", "support", "nps")][0] == 1
    assert tallies[(T0, "channel", "web", "nps")][0] == 1
    assert tallies[(T0, "region", "eu", "nps")][0] == 1
    stages = {r[COLUMN["event_id"]]: r[COLUMN["journey_stage"]] for r in out.rows["events_store"]}
    assert stages == {"a": "support", "b": "support", "c": "support"}


def test_a_replayed_record_writes_the_same_score_row_and_a_repeat_writes_nothing() -> None:
    stream = Stream()
    first = stream.batch([(1, [survey("a", T0, "csat", 4), survey("b", T0, "ces", 2.5)])])
    replay = stream.batch([(1, [survey("a", T0, "csat", 4), survey("b", T0, "ces", 2.5)])])
    assert first.rows["scores_store"] == replay.rows["scores_store"]
    assert len(replay.rows["events_store"]) == 2
    # the same event ids in another record: duplicates, counted nowhere again
    repeat = stream.batch([(2, [survey("a", T0, "csat", 4)])])
    assert repeat.duplicates == 1
    assert repeat.rows["events_store"] == []
    assert repeat.rows["scores_store"] == []


def test_events_beyond_the_grace_are_flagged_late_and_left_out_of_the_stream_view() -> None:
    stream = Stream(grace_ms=10 * MINUTE)
    stream.batch([(1, [survey("now", T0, "nps", 10)])])
    out = stream.batch(
        [
            (
                2,
                [
                    survey("within", T0 - 9 * MINUTE, "nps", 0),
                    survey("beyond", T0 - 11 * MINUTE, "nps", 0),
                    survey("other-partition", T0 - 60 * MINUTE, "nps", 0, partition=1),
                ],
            )
        ]
    )
    flags = {r[COLUMN["event_id"]]: r[COLUMN["flags"]] for r in out.rows["events_store"]}
    assert FLAG_LATE not in flags["within"]
    assert FLAG_LATE in flags["beyond"]
    assert FLAG_LATE not in flags["other-partition"]  # its partition's watermark is its own
    assert out.late == 1
    # ClickHouse still gets all three, in their own buckets
    tallies = _tallies(out.rows["scores_store"][0])
    assert sum(v[0] for k, v in tallies.items() if k[1] == "all") == 3
    # the stream's own view leaves the late one out
    on_time = sum(t.responses for k, t in out.on_time.items() if k[1] == "all")
    assert on_time == 2


def contact_row(event_id: str, at: int, channel: str, **interaction: Any) -> list[Any]:
    return row(
        event_id,
        at,
        channel=channel,
        type="call",
        case_id="k1",
        interaction={"wait_seconds": 0, **interaction},
    )


def test_contacts_get_effort_rows_and_a_late_earlier_one_rewrites_its_successor() -> None:
    stream = Stream()
    first = stream.batch([(1, [contact_row("a", T0, "chat"), contact_row("c", T0 + 2000, "chat")])])
    effort = {r[0]: r for r in first.rows["effort_store"]}
    assert set(effort) == {"a", "c"}
    # (repeat, switch) and points: c repeats a on the same channel
    assert effort["c"][7:9] == (True, False) and effort["c"][13] == 30
    late = stream.batch([(2, [contact_row("b", T0 + 1000, "call_center", escalated=True)])])
    rows = {r[0]: r for r in late.rows["effort_store"]}
    assert set(rows) == {"b", "c"}  # the newcomer and the contact after it, nothing else
    assert rows["c"][7:9] == (True, True)  # c now follows b, on another channel
    assert rows["c"][13] == 45
    assert rows["b"][13] == 10 + 20 + 15 + 15  # repeat of a, switch from chat, escalated
    # the stream's own view gains one contact and both changes of points
    all_effort = late.on_time[(T0 - T0 % MINUTE, "all", "all", "effort")]
    assert all_effort.responses == 1
    assert all_effort.score_milli == (60 + 15) * 1000


def test_a_repeat_from_another_message_is_a_duplicate_and_the_same_one_again_is_not() -> None:
    """Every message consumed has one outcome row; a repeat of an event_id at the stitch
    agent is a duplicate only when it came from another input message (another worker's
    partition), not when ingest forwarded the same message again after a replay."""
    stream = Stream()
    stream.batch([(1, [row("a", T0, partition=0)])])
    again = stream.batch([(2, [row("a", T0, partition=0)])])
    assert again.duplicates == 1
    assert again.rows["duplicates_store"] == []
    other = stream.batch([(3, [row("a", T0, partition=2)])])
    (duplicate,) = other.rows["duplicates_store"]
    assert duplicate[:5] == ("touchpoints.web", 2, 0, "a", "stitch")
    assert other.rows["events_store"] == []
