"""The report in a real browser (headless Chromium): no console errors, no request
leaves the page, every chart present and drawn; screenshots in ``build/report/``.

The page is made from rows (``tests/report_samples.py``), so this runs without Kafka or
ClickHouse; ``tests/integration/test_report_end_to_end.py`` does the same with a report
of real data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sinks.report_queries import ReportQuery
from streams.operate.report import QUESTIONS, render_report
from tests.report_browser import render
from tests.report_samples import empty_data, sample_data

SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "report"
NOW = datetime(2026, 11, 12, 8, 30, tzinfo=UTC)


def test_every_chart_is_drawn_without_an_error_or_a_request(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    query = ReportQuery(segments=("channel", "region"))
    page.write_text(
        render_report(sample_data(), generated_at=NOW, database="touchpoints", query=query),
        encoding="utf-8",
    )
    shown = render(page, SCREENSHOTS / "sample.png")
    assert shown.console_errors == []
    assert shown.page_errors == []
    assert shown.requests == []
    assert [c["id"] for c in shown.charts] == list(QUESTIONS)
    for chart in shown.charts:
        assert chart["svgs"] > 0 and chart["traces"] > 0, chart
        assert chart["marks"] > 0, f"{chart['id']} drew nothing"
        assert chart["width"] > 500 and chart["height"] > 200, chart
    nps = next(c for c in shown.charts if c["id"] == "nps_over_time")
    # mobile_app, web and the region whose name tries to end the script, as text
    assert nps["annotations"] == [
        "mobile_app",
        "web",
        "region: </script><script>window.hacked=1</script>&<b>",
    ]
    assert shown.data["findings"]["sentence"].startswith("Do transfers and escalations")
    assert (SCREENSHOTS / "sample.png").stat().st_size > 10_000


def test_an_empty_report_draws_its_charts_empty_and_says_so(tmp_path: Path) -> None:
    page = tmp_path / "empty.html"
    page.write_text(
        render_report(empty_data(), generated_at=NOW, database="touchpoints", query=ReportQuery()),
        encoding="utf-8",
    )
    shown = render(page, SCREENSHOTS / "empty.png")
    assert shown.console_errors == [] and shown.page_errors == [] and shown.requests == []
    assert [c["id"] for c in shown.charts] == list(QUESTIONS)
    for chart in shown.charts:
        assert chart["svgs"] > 0, chart
        assert any(text.startswith("no ") for text in chart["annotations"]), chart
