"""The analysts' report: one self-contained HTML page drawn from the ClickHouse views.

``touchpoint report`` (and the end of ``touchpoint demo``) runs the queries of
:mod:`sinks.report_queries`, turns their rows into Plotly figures and writes one HTML
file that opens offline: Plotly's JavaScript is inlined once, the figures and the rows
they are drawn from sit in one ``<script type="application/json" id="report-data">``
block, and a few lines of script draw every chart from it. Nothing is fetched.

The page answers, chart by chart (:data:`QUESTIONS`):

* NPS over time per channel (or the segments asked for), with the 95 % margin as a band
  and the score-drop alerts marked where they fired and recovered;
* CSAT and CES by segment, the effort index by channel and by journey stage, over time;
* the journey: customers by stage, the moves between stages, the channels customers
  switch between on a case;
* what drives scores: NPS and CES of the answers about a case by the case's transfers,
  escalations, repeat contacts and channel switches, with sample sizes and margins, and
  a sentence saying whether transfers and escalations hurt NPS in this data;
* dead letters by reason over time, identity merges and refusals by reason.

Everything here but :func:`write_report` and the command (``touchpoint report``,
:func:`write_report_file`) is pure: rows in, figures and text out.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sinks.report_queries import DRIVER_LEVELS, ReportQuery, load_report_data
from streams.console import configure_logging, settings_from_args
from streams.domain.alerts import compare
from streams.domain.scores import Z95, Tally, value_of
from streams.settings import Settings

__all__ = [
    "DATA_ELEMENT_ID",
    "QUESTIONS",
    "DriverFinding",
    "build_charts",
    "cmd_report",
    "driver_findings",
    "drivers_sentence",
    "render_report",
    "write_report",
    "write_report_file",
]

#: The id of the page's one JSON block (the data the charts are drawn from).
DATA_ELEMENT_ID = "report-data"

#: Each chart's id, title and the question it answers (the README lists the same).
QUESTIONS: dict[str, tuple[str, str]] = {
    "nps_over_time": (
        "NPS over time",
        "Is NPS moving, on which channel, and did the score alerts catch it? The band is "
        "the 95 % margin of error; triangles mark where a score-drop alert fired and "
        "where it recovered, at the end of the window it judged.",
    ),
    "csat_over_time": (
        "CSAT over time",
        "What share of CSAT answers is top-two-box, per segment, with its 95 % margin?",
    ),
    "ces_over_time": (
        "CES over time",
        "How easy do customers say we make it (mean CES, 7 = easy), per segment, with its "
        "95 % margin?",
    ),
    "effort_by_channel": (
        "Effort index by channel",
        "Where do contacts cost customers the most effort (mean effort points per contact, "
        "0..100)?",
    ),
    "effort_by_stage": (
        "Effort index by journey stage",
        "At which journey stage do contacts cost the most effort?",
    ),
    "customers_by_stage": (
        "Customers by journey stage",
        "Where are the customers seen in this range now (their current stage)?",
    ),
    "stage_flow": (
        "Moves between journey stages",
        "How do customers move between stages? Each band is the number of times a "
        "customer's next event (event time) came with another stage.",
    ),
    "case_switches": (
        "Channel switches within a case",
        "Which channels do customers switch between on one case (previous contact's "
        "channel to the next)?",
    ),
    "drivers_nps": (
        "What drives NPS",
        "NPS of the answers about a case, by how many transfers, escalations, repeat "
        "contacts and channel switches the case had up to the answer (bars: 95 % margin; "
        "n: answers).",
    ),
    "drivers_ces": (
        "What drives CES",
        "Mean CES of the answers about a case, by the same counts (7 = easy).",
    ),
    "dead_letters": (
        "Dead letters by reason",
        "What broken input arrived, when (receipt time), and why was it rejected?",
    ),
    "identity": (
        "Identity merges and refusals",
        "Why were customers merged, and which links did the guards refuse?",
    ),
}

_DRIVERS = {
    "transfers": ("Transfers", "a transfer"),
    "escalations": ("Escalations", "an escalation"),
    "repeat_contacts": ("Repeat contacts", "a repeat contact"),
    "channel_switches": ("Channel switches", "a channel switch"),
}
_METRIC_NAMES = {"nps": "NPS", "csat": "CSAT %", "ces": "CES"}
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
)
_DROP_COLOUR, _RECOVER_COLOUR = "#c0392b", "#1e8449"


# --- what drives scores ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriverFinding:
    """Answers about cases with at least one of ``driver`` against those with none, for
    ``metric``: both scores with margins and sample sizes, the difference (with minus
    without) and its 95 % margin. ``difference`` is None where either side cannot give a
    margin (fewer than two answers, for CES)."""

    driver: str
    metric: str
    cases_without: dict[str, Any]
    cases_with: dict[str, Any]
    difference: float | None
    margin: float | None
    #: the difference is beyond its margin (a real difference in this data)
    significant: bool


def _tally(row: Mapping[str, Any]) -> Tally:
    return Tally(
        responses=int(row["responses"]),
        promoters=int(row["promoters"]),
        passives=int(row["passives"]),
        detractors=int(row["detractors"]),
        positive=int(row["positive"]),
        score_milli=int(row["score_sum_milli"]),
        score_sq_micro=int(row["score_sq_sum_micro"]),
    )


def _side(metric: str, tally: Tally) -> dict[str, Any]:
    value = value_of(metric, tally)
    return {"responses": value.responses, "score": value.value, "margin": value.margin}


def driver_findings(rows: Iterable[Mapping[str, Any]]) -> list[DriverFinding]:
    """From the driver rows (driver, level, metric and tallies, as
    :data:`sinks.report_queries.DRIVERS` gives them): for each driver and metric, cases
    with none (level 0) against cases with one or more (every other level), compared
    with the CONTRACT section 2 standard errors (the score alerts' test, two-sided)."""
    groups: dict[tuple[str, str], tuple[Tally, Tally]] = {}
    for row in rows:
        key = (str(row["driver"]), str(row["metric"]))
        without, with_ = groups.setdefault(key, (Tally(), Tally()))
        (without if row["level"] == "0" else with_).add(_tally(row))
    findings = []
    for (driver, metric), (without, with_) in sorted(groups.items()):
        comparison = compare(metric, without, with_)
        difference = margin = None
        if comparison is not None:
            difference, margin = comparison.difference, Z95 * comparison.se
        findings.append(
            DriverFinding(
                driver,
                metric,
                _side(metric, without),
                _side(metric, with_),
                difference,
                margin,
                difference is not None and margin is not None and abs(difference) > margin,
            )
        )
    return findings


def _verdict(finding: DriverFinding | None, unit: str) -> str:
    name = _DRIVERS[finding.driver][1] if finding else ""
    if finding is None or finding.difference is None or finding.margin is None:
        return "not enough answers to tell"
    d, m = finding.difference, finding.margin
    w, wo = finding.cases_with, finding.cases_without
    numbers = (
        f"{w['score']:.1f} with {name} (n = {w['responses']:,}) against {wo['score']:.1f} "
        f"without (n = {wo['responses']:,})"
    )
    if finding.significant and d < 0:
        return f"yes, by {-d:.1f} {unit} (\u00b1 {m:.1f} at 95 %): {numbers}"
    if finding.significant:
        return f"no, it is {d:.1f} {unit} higher with {name} (\u00b1 {m:.1f}): {numbers}"
    return (
        f"not beyond the margin: {abs(d):.1f} {unit} {'lower' if d < 0 else 'higher'} with "
        f"{name}, \u00b1 {m:.1f} at 95 % ({numbers})"
    )


def drivers_sentence(findings: Sequence[DriverFinding]) -> str:
    """The plain answer to "do transfers and escalations hurt NPS in this data, and by
    how much?", from the findings (never from anything else)."""
    by = {(f.driver, f.metric): f for f in findings}
    return (
        "Do transfers and escalations hurt NPS in this data? Transfers: "
        + _verdict(by.get(("transfers", "nps")), "points")
        + ". Escalations: "
        + _verdict(by.get(("escalations", "nps")), "points")
        + "."
    )


# --- figures -----------------------------------------------------------------------------


def _plot_time(iso: str, shift_s: float = 0.0) -> str:
    """An ISO 8601 UTC time as Plotly reads it (no zone suffix; the axes say UTC)."""
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")) + timedelta(seconds=shift_s)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _label(kind: str, value: str) -> str:
    text = value if kind == "channel" else f"{kind}: {value}"
    return html.escape(text)  # Plotly reads a subset of HTML in labels


def _empty(fig: Any, text: str = "no data in this range") -> Any:
    fig.add_annotation(
        text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 16}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _layout(fig: Any, height: int, **extra: Any) -> Any:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        hovermode="closest",
        **extra,
    )
    return fig


def _series(
    rows: Iterable[Mapping[str, Any]], metric: str
) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    out: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["metric"] == metric and row["responses"]:
            out[(row["segment_kind"], row["segment_value"])].append(row)
    return dict(sorted(out.items()))


def _band(
    fig: Any, xs: list[str], lows: list[float], highs: list[float], colour: str, **cell: Any
) -> None:
    """The margin as a band: an invisible upper edge, then the lower edge filled to it."""
    fig.add_scatter(
        x=xs,
        y=highs,
        mode="lines",
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        **cell,
    )
    fig.add_scatter(
        x=xs,
        y=lows,
        mode="lines",
        line={"width": 0},
        fill="tonexty",
        fillcolor=_rgba(colour, 0.2),
        hoverinfo="skip",
        showlegend=False,
        **cell,
    )


def _score_figure(
    data: Mapping[str, Any], metric: str, step_s: int, bounds: tuple[float, float] | None
) -> Any:
    """Per segment: the score per step with its margin as a band, and the score alerts of
    that segment and metric as markers (one panel per segment)."""
    from plotly.subplots import make_subplots

    series = _series(data["scores"], metric)
    alerts = [a for a in data["score_alerts"] if a["metric"] == metric]
    if not series:
        return _layout(_empty(make_subplots(rows=1, cols=1)), 260)
    keys = list(series)
    cols = 1 if len(keys) == 1 else 2
    rows = math.ceil(len(keys) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        shared_xaxes=True,
        subplot_titles=[_label(*k) for k in keys],
        vertical_spacing=min(0.12, 0.5 / rows),
        horizontal_spacing=0.06,
    )
    name = _METRIC_NAMES[metric]
    for i, key in enumerate(keys):
        cell = {"row": i // cols + 1, "col": i % cols + 1}
        colour = _PALETTE[i % len(_PALETTE)]
        points = series[key]
        xs = [_plot_time(p["period"], step_s / 2) for p in points]
        value = "share_positive" if metric == "csat" else "score"
        ys = [p[value] for p in points]
        margins = [p["margin"] or 0.0 for p in points]
        lows = [y - m for y, m in zip(ys, margins, strict=True)]
        highs = [y + m for y, m in zip(ys, margins, strict=True)]
        if bounds:
            lows = [max(bounds[0], v) for v in lows]
            highs = [min(bounds[1], v) for v in highs]
        _band(fig, xs, lows, highs, colour, **cell)
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            name=_label(*key),
            line={"color": colour},
            customdata=[
                [p["responses"], m, p["period"]] for p, m in zip(points, margins, strict=True)
            ],
            hovertemplate=f"{name} %{{y:.1f}} \u00b1 %{{customdata[1]:.1f}}<br>"
            "n = %{customdata[0]}<br>step from %{customdata[2]}<extra>%{fullData.name}</extra>",
            showlegend=False,
            **cell,
        )
        for kind, colour_, symbol in (
            ("score.dropped", _DROP_COLOUR, "triangle-down"),
            ("score.recovered", _RECOVER_COLOUR, "triangle-up"),
        ):
            marks = [
                a
                for a in alerts
                if a["type"] == kind and (a["segment_kind"], a["segment_value"]) == key
            ]
            if not marks:
                continue
            if kind == "score.dropped":
                for a in marks:  # the window the drop was judged on
                    fig.add_vrect(
                        x0=_plot_time(a["after"]["from"]),
                        x1=_plot_time(a["after"]["to"]),
                        fillcolor=_rgba(_DROP_COLOUR, 0.08),
                        line_width=0,
                        **cell,
                    )
            fig.add_scatter(
                x=[_plot_time(a["at"]) for a in marks],
                y=[a["value"] for a in marks],
                mode="markers",
                name=kind,
                marker={"symbol": symbol, "size": 14, "color": colour_, "line": {"width": 1}},
                customdata=[
                    [
                        a["before"]["value"],
                        a["before"]["responses"],
                        a["after"]["responses"],
                        a["z"],
                        a["after"]["from"],
                        a["after"]["to"],
                    ]
                    for a in marks
                ],
                hovertemplate=f"{kind}<br>{name} %{{customdata[0]:.1f}} (n = %{{customdata[1]}})"
                " \u2192 %{y:.1f} (n = %{customdata[2]})<br>z %{customdata[3]}<br>"
                "window %{customdata[4]} .. %{customdata[5]}<extra></extra>",
                showlegend=False,
                **cell,
            )
    if bounds:
        pad = (bounds[1] - bounds[0]) * 0.05
        fig.update_yaxes(range=[bounds[0] - pad, bounds[1] + pad])
    fig.update_xaxes(title_text="event time (UTC)", row=rows)
    return _layout(fig, 120 + 220 * rows, showlegend=False)


def _lines_figure(
    rows: Iterable[Mapping[str, Any]], kind: str, step_s: int, y: str, title: str
) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    by: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["segment_kind"] == kind:
            by[row["segment_value"]].append(row)
    if not by:
        return _layout(_empty(fig), 300)
    for i, (value, points) in enumerate(sorted(by.items())):
        fig.add_scatter(
            x=[_plot_time(p["period"], step_s / 2) for p in points],
            y=[p[y] for p in points],
            mode="lines+markers",
            name=html.escape(value),
            line={"color": _PALETTE[i % len(_PALETTE)]},
            customdata=[[p["contacts"]] for p in points],
            hovertemplate="%{y:.1f} over %{customdata[0]} contacts<extra>%{fullData.name}</extra>",
        )
    fig.update_xaxes(title_text="event time (UTC)")
    fig.update_yaxes(title_text=title)
    return _layout(fig, 380)


def _stages_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    if not rows:
        return _layout(_empty(fig), 300)
    ordered = sorted(rows, key=lambda r: r["customers"])
    fig.add_bar(
        x=[r["customers"] for r in ordered],
        y=[html.escape(r["stage"]) for r in ordered],
        orientation="h",
        text=[f"{r['customers']:,}" for r in ordered],
        marker={"color": _PALETTE[0]},
        hovertemplate="%{y}: %{x} customers<extra></extra>",
    )
    fig.update_xaxes(title_text="customers")
    return _layout(fig, max(260, 120 + 32 * len(rows)))


def _flow_figure(
    rows: Sequence[Mapping[str, Any]], source: str, target: str, value: str, unit: str
) -> Any:
    """A two-column Sankey: left the state before, right the state after (moves between
    stages go both ways, which one column of nodes would draw as loops)."""
    import plotly.graph_objects as go

    if not rows:
        return _layout(_empty(go.Figure()), 300)
    names = sorted({r[source] for r in rows} | {r[target] for r in rows})
    colour = {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}
    left = {n: i for i, n in enumerate(names)}
    right = {n: len(names) + i for i, n in enumerate(names)}
    fig = go.Figure(
        go.Sankey(
            arrangement="snap",
            node={
                "label": [html.escape(n) for n in names] * 2,
                "color": [colour[n] for n in names] * 2,
                "pad": 12,
                "thickness": 16,
            },
            link={
                "source": [left[r[source]] for r in rows],
                "target": [right[r[target]] for r in rows],
                "value": [r[value] for r in rows],
                "color": [_rgba(colour[r[source]], 0.35) for r in rows],
                "hovertemplate": f"%{{source.label}} \u2192 %{{target.label}}: %{{value}} {unit}"
                "<extra></extra>",
            },
        )
    )
    return _layout(fig, 480)


def _drivers_figure(rows: Sequence[Mapping[str, Any]], metric: str) -> Any:
    from plotly.subplots import make_subplots

    chosen = [r for r in rows if r["metric"] == metric and r["responses"]]
    fig = make_subplots(
        rows=1,
        cols=len(_DRIVERS),
        shared_yaxes=True,
        subplot_titles=[title for title, _ in _DRIVERS.values()],
        horizontal_spacing=0.03,
    )
    if not chosen:
        return _layout(_empty(fig), 300)
    for i, driver in enumerate(_DRIVERS, start=1):
        bars = sorted(
            (r for r in chosen if r["driver"] == driver),
            key=lambda r: DRIVER_LEVELS.index(r["level"]),
        )
        fig.add_bar(
            # the sample size under each bar: "2<br>n=21"
            x=[f"{r['level']}<br>n={r['responses']:,}" for r in bars],
            y=[r["score"] for r in bars],
            error_y={"type": "data", "array": [r["margin"] or 0.0 for r in bars]},
            marker={"color": [_PALETTE[3] if r["level"] != "0" else _PALETTE[0] for r in bars]},
            customdata=[[r["responses"], r["margin"] or 0.0] for r in bars],
            hovertemplate=f"{_METRIC_NAMES[metric]} %{{y:.1f}} \u00b1 %{{customdata[1]:.1f}}"
            "<br>n = %{customdata[0]}<extra></extra>",
            showlegend=False,
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="how many on the case", type="category", row=1, col=i)
    fig.update_yaxes(title_text=_METRIC_NAMES[metric], row=1, col=1)
    if metric == "nps":
        fig.update_yaxes(range=[-110, 110])
    else:
        fig.update_yaxes(range=[0, 7.5])
    return _layout(fig, 400)


def _dead_letters_figure(rows: Sequence[Mapping[str, Any]], step_s: int) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    if not rows:
        return _layout(_empty(fig, "no dead letters in this range"), 300)
    by: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by[row["reason"]].append(row)
    for i, (reason, points) in enumerate(sorted(by.items())):
        fig.add_bar(
            x=[_plot_time(p["period"], step_s / 2) for p in points],
            y=[p["messages"] for p in points],
            name=html.escape(reason),
            marker={"color": _PALETTE[i % len(_PALETTE)]},
            hovertemplate="%{y} messages<extra>%{fullData.name}</extra>",
        )
    fig.update_xaxes(title_text="received (UTC)")
    fig.update_yaxes(title_text="messages")
    return _layout(fig, 380, barmode="stack", bargap=0.1)


def _identity_figure(merges: Sequence[Mapping[str, Any]], refusals: Sequence[Any]) -> Any:
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["merges by reason", "links refused by reason"],
        horizontal_spacing=0.25,
    )
    if not merges and not refusals:
        return _layout(_empty(fig, "no merges or refusals in this range"), 300)
    for col, rows, count, colour in (
        (1, merges, "merges", _PALETTE[0]),
        (2, refusals, "refusals", _PALETTE[3]),
    ):
        ordered = sorted(rows, key=lambda r: r[count])
        fig.add_bar(
            x=[r[count] for r in ordered],
            y=[html.escape(r["reason"]) for r in ordered],
            orientation="h",
            text=[f"{r[count]:,}" for r in ordered],
            marker={"color": colour},
            hovertemplate=f"%{{y}}: %{{x}} {count}<extra></extra>",
            showlegend=False,
            row=1,
            col=col,
        )
    height = max(260, 140 + 30 * max(len(merges), len(refusals)))
    return _layout(fig, height)


def build_charts(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every chart of the page (ids of :data:`QUESTIONS`, in its order), each as
    ``{"id", "title", "question", "figure"}`` with the Plotly figure as JSON."""
    step = int(data["coverage"]["step_s"])
    figures = {
        "nps_over_time": _score_figure(data, "nps", step, (-100.0, 100.0)),
        "csat_over_time": _score_figure(data, "csat", step, (0.0, 100.0)),
        "ces_over_time": _score_figure(data, "ces", step, (1.0, 7.0)),
        "effort_by_channel": _lines_figure(
            data["effort"], "channel", step, "effort_index", "effort index"
        ),
        "effort_by_stage": _lines_figure(
            data["effort"], "journey_stage", step, "effort_index", "effort index"
        ),
        "customers_by_stage": _stages_figure(data["stages"]),
        "stage_flow": _flow_figure(
            data["stage_flow"], "from_stage", "to_stage", "transitions", "moves"
        ),
        "case_switches": _flow_figure(
            data["case_switches"], "from_channel", "to_channel", "switches", "switches"
        ),
        "drivers_nps": _drivers_figure(data["drivers"], "nps"),
        "drivers_ces": _drivers_figure(data["drivers"], "ces"),
        "dead_letters": _dead_letters_figure(
            data["dead_letters"], int(data["coverage"]["dead_letter_step_s"])
        ),
        "identity": _identity_figure(data["merges"], data["refusals"]),
    }
    return [
        {
            "id": chart_id,
            "title": title,
            "question": question,
            "figure": json.loads(figures[chart_id].to_json()),
        }
        for chart_id, (title, question) in QUESTIONS.items()
    ]


# --- the page ----------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1d2733; background: #f5f7fa; }
header { background: #1d2733; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 6px; font-size: 24px; }
header p { margin: 2px 0; color: #c9d3de; }
dl.covers { display: flex; flex-wrap: wrap; gap: 10px 28px; margin: 14px 0 0; }
dl.covers div { min-width: 110px; }
dl.covers dt { font-size: 12px; text-transform: uppercase; color: #9fb0c2; }
dl.covers dd { margin: 0; font-size: 20px; font-weight: 600; }
main { padding: 8px 32px 40px; max-width: 1400px; }
section { background: #fff; border-radius: 6px; margin: 18px 0; padding: 14px 18px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
section h2 { margin: 4px 0; font-size: 19px; }
p.question { margin: 2px 0 8px; color: #4a5868; }
p.finding { font-size: 16px; background: #fff8e1; padding: 10px 12px; border-left: 4px
            solid #f0b429; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e8ee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
"""

_DRAW = """
(function () {
  var doc = JSON.parse(document.getElementById("%s").textContent);
  var drawn = doc.charts.map(function (chart) {
    return Plotly.newPlot(chart.id, chart.figure.data, chart.figure.layout,
                          {displaylogo: false, responsive: true});
  });
  Promise.all(drawn).then(function () { document.body.dataset.drawn = "true"; });
})();
"""


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` left to end it."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fmt(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _covers(document: Mapping[str, Any]) -> str:
    report, covers = document["report"], document["data"]["coverage"]
    first, last = covers["first_event"], covers["last_event"]
    span = (
        f"{first[:16].replace('T', ' ')} to {last[:16].replace('T', ' ')} UTC"
        if first
        else ("no events")
    )
    asked = report["filters"]
    bounds = (
        f"asked for {asked['from'] or 'the start'} to {asked['to'] or 'the end'}"
        if asked["from"] or asked["to"]
        else "every event stored"
    )
    cells = [
        ("events", f"{covers['events']:,}"),
        ("customers", f"{covers['customers']:,}"),
        ("answers", f"{covers['answers']:,}"),
        (
            "NPS / CSAT / CES",
            f"{covers['nps_answers']:,} / {covers['csat_answers']:,} / {covers['ces_answers']:,}",
        ),
        ("about a case", f"{covers['answers_about_a_case']:,}"),
        ("dead letters", f"{covers['dead_letters']:,}"),
    ]
    items = "".join(
        f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>" for k, v in cells
    )
    return (
        f"<p>Event time {html.escape(span)} ({html.escape(bounds)}); segments "
        f"{html.escape(', '.join(asked['segments']))}; one step = "
        f"{html.escape(_duration(covers['step_s']))}.</p>"
        f"<p>Made {html.escape(report['generated_at'])} from ClickHouse database "
        f"<code>{html.escape(report['database'])}</code>.</p>"
        f'<dl class="covers">{items}</dl>'
    )


def _duration(seconds: int) -> str:
    for unit, size in (("week", 604_800), ("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} s"


def _alerts_table(alerts: Sequence[Mapping[str, Any]]) -> str:
    if not alerts:
        return "<p>No score alert fired in this range.</p>"
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                a["type"],
                f"{a['segment_kind']}:{a['segment_value']}",
                _METRIC_NAMES.get(a["metric"], a["metric"]),
                f"{a['after']['from'][:16]} .. {a['after']['to'][:16]}",
                f"{_fmt(a['before']['value'])} (n={a['before']['responses']})",
                f"{_fmt(a['after']['value'])} (n={a['after']['responses']})",
                _fmt(a["z"], 2),
            )
        )
        + "</tr>"
        for a in alerts
    )
    return (
        "<table><tr><th>alert</th><th>segment</th><th>metric</th><th>window judged</th>"
        f"<th>before</th><th>after</th><th>z</th></tr>{rows}</table>"
    )


def _findings_table(findings: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(c)}</td>"
            for c in (
                _DRIVERS[f["driver"]][0],
                _METRIC_NAMES[f["metric"]],
                f"{_fmt(f['cases_without']['score'])} \u00b1 "
                f"{_fmt(f['cases_without']['margin'])} (n={f['cases_without']['responses']:,})",
                f"{_fmt(f['cases_with']['score'])} \u00b1 "
                f"{_fmt(f['cases_with']['margin'])} (n={f['cases_with']['responses']:,})",
                f"{_fmt(f['difference'])} \u00b1 {_fmt(f['margin'])}",
                "yes" if f["significant"] else "no",
            )
        )
        + "</tr>"
        for f in findings
    )
    return (
        "<table><tr><th>on the case</th><th>metric</th><th>none</th><th>one or more</th>"
        f"<th>difference</th><th>beyond the margin</th></tr>{rows}</table>"
    )


def render_report(
    data: Mapping[str, Any],
    *,
    generated_at: datetime,
    database: str,
    query: ReportQuery,
    plotly_js: str | None = None,
) -> str:
    """The whole page for the rows of :func:`sinks.report_queries.load_report_data`.

    The one JSON block holds ``report`` (when made, from where, with which filters),
    ``data`` (the rows), ``findings`` (what drives scores, and the sentence) and
    ``charts`` (each figure as drawn). ``plotly_js`` defaults to the Plotly bundle of
    the installed ``plotly`` package."""
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    if "</script" in plotly_js.lower():  # it is inlined as it is
        raise ValueError("the Plotly bundle contains '</script'; it cannot be inlined")
    findings = driver_findings(data["drivers"])
    document: dict[str, Any] = {
        "report": {
            "title": "Customer experience report",
            "generated_at": generated_at.astimezone(UTC).isoformat(timespec="seconds"),
            "database": database,
            "filters": {
                "from": query.start.astimezone(UTC).isoformat() if query.start else None,
                "to": query.end.astimezone(UTC).isoformat() if query.end else None,
                "segments": list(query.segments),
            },
        },
        "data": data,
        "findings": {
            "drivers": [asdict(f) for f in findings],
            "sentence": drivers_sentence(findings),
        },
        "charts": build_charts(data),
    }
    sections = []
    for chart in document["charts"]:
        extra = ""
        if chart["id"] == "nps_over_time":
            extra = _alerts_table(data["score_alerts"])
        if chart["id"] == "drivers_nps":
            extra = (
                f'<p class="finding" id="drivers-sentence">'
                f"{html.escape(document['findings']['sentence'])}</p>"
                + _findings_table(document["findings"]["drivers"])
            )
        sections.append(
            f"<section><h2>{html.escape(chart['title'])}</h2>"
            f'<p class="question">{html.escape(chart["question"])}</p>'
            f'<div class="chart" id="{chart["id"]}"></div>{extra}</section>'
        )
    title = document["report"]["title"]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script>{plotly_js}</script></head><body>"
        f"<header><h1>{html.escape(title)}</h1>{_covers(document)}</header>"
        f"<main>{''.join(sections)}</main>"
        f'<script type="application/json" id="{DATA_ELEMENT_ID}">{_script_json(document)}</script>'
        f"<script>{_DRAW % DATA_ELEMENT_ID}</script>"
        "</body></html>\n"
    )


async def write_report(
    client: Any, database: str, query: ReportQuery, path: Path, now: datetime
) -> dict[str, Any]:
    """Query ``database`` with clickhouse-connect's async ``client``, write the page to
    ``path`` (replaced whole: written to a sibling file, then renamed) and return the
    rows it was drawn from."""
    data = await load_report_data(client, database, query)
    page = render_report(data, generated_at=now, database=database, query=query)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)
    return data


# --- the command: touchpoint report ------------------------------------------------------


def _report_time(text: str) -> datetime:
    """``--from`` / ``--to``: an ISO 8601 date or date and time; without an offset, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date or time: {text!r} (e.g. 2026-11-01 or 2026-11-01T08:00:00+01:00)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _report_segment(text: str) -> str:
    """``--segment``: ``KIND`` or ``KIND:*`` (every value of a kind) or ``KIND:VALUE``."""
    kind, sep, value = text.partition(":")
    if not kind or (sep and not value):
        raise argparse.ArgumentTypeError(
            f"not a segment: {text!r} (give KIND:VALUE, e.g. region:eu-west, or KIND:* for "
            "every value of a kind, e.g. channel:*)"
        )
    return kind if value in ("", "*") else f"{kind}:{value}"


def _report_step(text: str) -> int:
    from schemas.alert_rules import parse_duration

    try:
        seconds = int(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 60:
        raise argparse.ArgumentTypeError("--step is at least a minute (the score buckets')")
    return seconds


def write_report_file(
    settings: Settings, output: Path, query: ReportQuery | None = None
) -> dict[str, Any]:
    """Write the report of ``settings``' ClickHouse to ``output``; returns what it
    covers (the row of :data:`sinks.report_queries.COVERAGE`)."""

    async def run() -> dict[str, Any]:
        import clickhouse_connect

        client = await clickhouse_connect.get_async_client(
            dsn=settings.clickhouse_url,
            username=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            verify=settings.clickhouse_verify_tls,
            autogenerate_session_id=False,
        )
        try:
            data = await write_report(
                client,
                settings.clickhouse_database,
                query or ReportQuery(),
                output,
                datetime.now(UTC),
            )
        finally:
            await client.close()
        return dict(data["coverage"])

    return asyncio.run(run())


def cmd_report(args: argparse.Namespace) -> int:
    """Write the analysts' report: one self-contained HTML file drawn from ClickHouse."""
    settings = settings_from_args(args)
    configure_logging("WARNING")
    if args.start and args.end and args.start >= args.end:
        raise SystemExit("--from must come before --to")
    query = ReportQuery(
        start=args.start,
        end=args.end,
        segments=tuple(dict.fromkeys(args.segment or ["channel"])),
        step_s=args.step,
    )
    output = Path(args.output)
    try:
        covers = write_report_file(settings, output, query)
    except Exception as exc:
        raise SystemExit(
            f"report failed: {exc}\nIs ClickHouse reachable at {settings.clickhouse_url}"
            " and migrated (touchpoint migrate)?"
        ) from None
    span = (
        f"{covers['first_event']} to {covers['last_event']}"
        if covers["first_event"]
        else "no events in the range"
    )
    print(
        f"wrote {output.resolve()}: {covers['events']:,} events, {covers['customers']:,} "
        f"customers, {covers['answers']:,} answers ({span})"
    )
    return 0
