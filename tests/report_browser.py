"""The report in headless Chromium: console errors, requests, what each chart drew.

Chromium comes from the system's package manager (``/usr/bin/chromium``; ``.ci/run``
installs it where absent) and is driven by Playwright's Python package; no browser is
ever downloaded. Without Chromium the browser tests skip on a laptop, never in CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM", "Rendered", "chromium_or_skip", "render"]

CHROMIUM = Path(os.environ.get("TOUCHPOINT_TEST_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: What each chart drew: its Plotly traces, and the SVG (or canvas) elements that show
#: data rather than axes: points and lines, bars, Sankey nodes and links.
_INSPECT = """
() => Array.from(document.querySelectorAll("div.chart")).map((div) => ({
  id: div.id,
  traces: (div.data || []).length,
  svgs: div.querySelectorAll("svg.main-svg").length,
  canvases: div.querySelectorAll("canvas").length,
  marks: div.querySelectorAll(
    "g.trace path.js-line, g.trace path.point, g.trace g.point path, g.points path, "
    + "g.sankey-node rect, path.sankey-link"
  ).length,
  width: div.getBoundingClientRect().width,
  height: div.getBoundingClientRect().height,
  annotations: Array.from(div.querySelectorAll("g.annotation-text-g text")).map(
    (t) => t.textContent),
}))
"""


@dataclass
class Rendered:
    """What the page did in the browser."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    data: Any = None


def chromium_or_skip() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; browser tests never skip in CI")
    pytest.skip(reason)


def render(page_path: Path, screenshot: Path | None = None, width: int = 1400) -> Rendered:
    """Open ``page_path`` in headless Chromium (a fresh profile, every request other
    than the file itself refused and recorded), wait until every chart is drawn, and
    return what happened; with ``screenshot``, write a full-page PNG there."""
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    out = Rendered()
    url = page_path.resolve().as_uri()
    profile = Path(tempfile.mkdtemp(prefix="report-chromium-"))
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(executable),
                headless=True,
                args=FLAGS,
                viewport={"width": width, "height": 900},
            )
            try:
                page = context.new_page()
                page.on(
                    "console",
                    lambda m: out.console_errors.append(m.text) if m.type == "error" else None,
                )
                page.on("pageerror", lambda e: out.page_errors.append(str(e)))

                def route(r: Any) -> None:
                    if r.request.url == url:
                        r.continue_()
                    else:
                        out.requests.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.goto(url, wait_until="load")
                page.wait_for_selector("body[data-drawn='true']", timeout=60_000)
                out.charts = page.evaluate(_INSPECT)
                out.data = page.evaluate(
                    "() => JSON.parse(document.getElementById('report-data').textContent)"
                )
                if screenshot is not None:
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshot), full_page=True)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out
