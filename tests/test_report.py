"""The report page without ClickHouse: what drives scores (against a naive reading of
CONTRACT section 2), the time step, and the page itself (self-contained, one Plotly
bundle, one JSON block, figures equal to the rows, nothing in the data ends a script)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.report_queries import STEPS_S, ReportQuery, score_alert_rows, time_step
from streams.operate.report import (
    DATA_ELEMENT_ID,
    QUESTIONS,
    driver_findings,
    drivers_sentence,
    render_report,
)
from tests.report_samples import EVIL, empty_data, sample_data, tally_row

NOW = datetime(2026, 11, 12, 8, 30, tzinfo=UTC)
FAKE_PLOTLY = "/* plotly stand-in */ window.Plotly = {newPlot: function () {}};"


def page_json(page: str) -> dict[str, Any]:
    blocks = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S)
    assert [name for name, _ in blocks] == [DATA_ELEMENT_ID]
    return dict(json.loads(blocks[0][1]))


def naive_nps(scores: list[int]) -> float:
    return 100 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / len(scores)


def naive_se(scores: list[int]) -> float:
    """Standard error of NPS: each answer is +1, 0 or -1; the population variance / n."""
    values = [1 if s >= 9 else -1 if s <= 6 else 0 for s in scores]
    mean = sum(values) / len(values)
    return 100 * math.sqrt(sum((v - mean) ** 2 for v in values) / len(values) / len(values))


# --- what drives scores ------------------------------------------------------------------

nps_answers = st.lists(st.integers(0, 10), min_size=1, max_size=40)


@given(none=nps_answers, one=nps_answers, more=st.lists(st.integers(0, 10), max_size=20))
def test_a_driver_compares_cases_without_it_to_cases_with_it_as_the_contract_says(
    none: list[int], one: list[int], more: list[int]
) -> None:
    rows = [tally_row("nps", none, driver="transfers", level="0")]
    rows.append(tally_row("nps", one, driver="transfers", level="1"))
    if more:
        rows.append(tally_row("nps", more, driver="transfers", level="3+"))
    [finding] = driver_findings(rows)
    with_it = one + more
    assert finding.cases_without["responses"] == len(none)
    assert finding.cases_with["responses"] == len(with_it)
    assert finding.cases_with["score"] == pytest.approx(naive_nps(with_it))
    assert finding.difference == pytest.approx(naive_nps(with_it) - naive_nps(none))
    margin = 1.96 * math.hypot(naive_se(with_it), naive_se(none))
    assert finding.margin == pytest.approx(margin, abs=1e-9)
    assert finding.significant == (abs(finding.difference) > finding.margin)


@given(none=nps_answers, with_it=nps_answers)
def test_the_sentence_says_yes_only_for_a_drop_beyond_its_margin(
    none: list[int], with_it: list[int]
) -> None:
    rows = [
        tally_row("nps", none, driver="transfers", level="0"),
        tally_row("nps", with_it, driver="transfers", level="2"),
    ]
    [finding] = driver_findings(rows)
    sentence = drivers_sentence([finding])
    transfers = sentence.split("Transfers: ")[1].split(". Escalations:")[0]
    assert finding.difference is not None
    if finding.significant and finding.difference < 0:
        assert transfers.startswith(f"yes, by {-finding.difference:.1f} points")
    elif finding.significant:
        assert transfers.startswith("no, it is")
    else:
        assert transfers.startswith("not beyond the margin")
    assert f"(n = {len(with_it):,})" in transfers
    assert "Escalations: not enough answers to tell." in sentence


def test_a_mean_of_one_answer_gives_no_margin_and_the_sentence_says_so() -> None:
    rows = [
        tally_row("ces", [7, 6], driver="escalations", level="0"),
        tally_row("ces", [2], driver="escalations", level="1"),
    ]
    [finding] = driver_findings(rows)
    assert finding.difference is None and not finding.significant
    assert finding.cases_with == {"responses": 1, "score": 2.0, "margin": None}


def test_transfers_that_cost_many_points_read_as_yes() -> None:
    rows = [
        tally_row("nps", [10, 9, 9, 10, 9, 10, 8, 9] * 5, driver="transfers", level="0"),
        tally_row("nps", [2, 3, 0, 6, 5, 1] * 5, driver="transfers", level="1"),
        tally_row("nps", [10, 9] * 10, driver="escalations", level="0"),
        tally_row("nps", [9, 10] * 10, driver="escalations", level="1"),
    ]
    sentence = drivers_sentence(driver_findings(rows))
    assert "Transfers: yes, by 187.5 points" in sentence
    assert "Escalations: not beyond the margin: 0.0 points" in sentence


# --- time steps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span_s", "step"),
    [(0, 60), (48 * 60, 60), (48 * 60 + 1, 300), (9 * 3600, 900), (14 * 86_400, 86_400),
     (48 * 86_400, 86_400), (400 * 86_400, 7 * 86_400)],
)  # fmt: skip
def test_the_step_cuts_the_span_into_at_most_48_steps(span_s: float, step: int) -> None:
    assert time_step(span_s) == step


@given(st.floats(0, 10 * 365 * 86_400))
def test_the_step_is_the_smallest_that_fits(span_s: float) -> None:
    step = time_step(span_s)
    assert step in STEPS_S
    smaller = [s for s in STEPS_S if s < step]
    assert span_s / step <= 48 or step == STEPS_S[-1]
    assert all(span_s / s > 48 for s in smaller)


def test_score_alerts_are_placed_at_the_end_of_their_window_and_filtered_by_it() -> None:
    def stored(alert_id: str, to: str) -> dict[str, Any]:
        payload = {"type": "score.dropped", "timestamp": "2026-12-01T00:00:00.000Z", "data": {
            "segment": {"kind": "channel", "value": "web"}, "metric": "nps",
            "before": {"value": 30.0, "responses": 40, "margin": 9.0, "from": "x", "to": "y"},
            "after": {"value": -10.0, "responses": 30, "margin": 12.0, "from": "y", "to": to},
            "difference": -40.0, "margin_of_error": 15.0, "z": 5.2}}  # fmt: skip
        return {"alert_id": alert_id, "type": "score.dropped", "subject": "channel:web:nps",
                "fired_at": "2026-12-01T00:00:00.000Z", "payload": json.dumps(payload)}  # fmt: skip

    rows = [stored("b", "2026-11-05T00:00:00.000Z"), stored("a", "2026-11-02T00:00:00.000Z")]
    placed = score_alert_rows(rows, None, None)
    assert [(a["alert_id"], a["at"], a["value"]) for a in placed] == [
        ("a", "2026-11-02T00:00:00.000Z", -10.0),
        ("b", "2026-11-05T00:00:00.000Z", -10.0),
    ]
    start = datetime(2026, 11, 3, tzinfo=UTC)
    assert [a["alert_id"] for a in score_alert_rows(rows, start, None)] == ["b"]


# --- the page ----------------------------------------------------------------------------


def test_the_page_inlines_plotly_once_and_fetches_nothing() -> None:
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    page = render_report(sample_data(), generated_at=NOW, database="touchpoints",
                         query=ReportQuery())  # fmt: skip
    assert page.count(bundle[:300]) == 1
    assert page.count("<script") == 3  # the bundle, the data, the drawing
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "@import" not in page.split("<script>")[0]


def test_the_page_holds_every_chart_and_the_rows_it_draws() -> None:
    data = sample_data()
    page = render_report(data, generated_at=NOW, database="touchpoints",
                         query=ReportQuery(segments=("channel", "region")),
                         plotly_js=FAKE_PLOTLY)  # fmt: skip
    document = page_json(page)
    assert document["data"] == json.loads(json.dumps(data))
    assert [c["id"] for c in document["charts"]] == list(QUESTIONS)
    for chart in document["charts"]:
        assert f'<div class="chart" id="{chart["id"]}"></div>' in page
        assert chart["figure"]["data"], chart["id"]
    assert document["report"]["generated_at"] == "2026-11-12T08:30:00+00:00"
    assert document["report"]["filters"]["segments"] == ["channel", "region"]
    # the NPS line of mobile_app is the rows' scores, at the middle of each day
    nps = next(c for c in document["charts"] if c["id"] == "nps_over_time")["figure"]
    line = next(t for t in nps["data"] if t.get("name") == "mobile_app" and "lines" in t["mode"])
    rows = [r for r in data["scores"]
            if r["segment_value"] == "mobile_app" and r["metric"] == "nps"]  # fmt: skip
    assert line["y"] == [r["score"] for r in rows]
    assert line["x"][0] == "2026-11-01 12:00:00"
    dropped = next(t for t in nps["data"] if t.get("name") == "score.dropped")
    assert dropped["y"] == [-60.0] and dropped["x"] == ["2026-11-07 12:00:00"]
    assert next(t for t in nps["data"] if t.get("name") == "score.recovered")["y"] == [20.0]
    # the header says what the report covers
    assert "12,345" in page and "678" in page and "910" in page
    assert "2026-11-01 00:00 to 2026-11-10 23:00 UTC" in page
    assert document["findings"]["sentence"] in page


def test_nothing_in_the_data_can_end_the_script_or_add_markup() -> None:
    page = render_report(sample_data(), generated_at=NOW, database="touchpoints",
                         query=ReportQuery(segments=("channel", "region")),
                         plotly_js=FAKE_PLOTLY)  # fmt: skip
    assert EVIL not in page
    assert "window.hacked" in page  # present, but only as escaped data
    assert page.count("</script>") == 3
    document = page_json(page)
    assert any(r["stage"] == EVIL for r in document["data"]["stages"])


def test_an_empty_database_gives_a_page_that_says_there_is_no_data() -> None:
    page = render_report(empty_data(), generated_at=NOW, database="touchpoints",
                         query=ReportQuery(), plotly_js=FAKE_PLOTLY)  # fmt: skip
    document = page_json(page)
    assert [c["id"] for c in document["charts"]] == list(QUESTIONS)
    for chart in document["charts"]:
        texts = [a["text"] for a in chart["figure"]["layout"].get("annotations", [])]
        assert any(t.startswith("no ") for t in texts), chart["id"]
    assert "no events" in page
    assert "not enough answers to tell" in document["findings"]["sentence"]


def test_a_bundle_that_would_end_its_script_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be inlined"):
        render_report(empty_data(), generated_at=NOW, database="d", query=ReportQuery(),
                      plotly_js="x = '</script>';")  # fmt: skip


def test_the_page_module_needs_no_faust() -> None:
    import subprocess
    import sys

    check = "import sys, streams.operate.report; sys.exit('faust' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0
