"""``touchpoint status``: verdicts, rendering, and reading a worker's pages."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from streams.operate.status import (
    CHECKS,
    Deployment,
    Finding,
    check_accounting,
    check_alert_queues,
    check_reconciliation,
    check_sink_backlog,
    healthy,
    render_text,
    run_checks,
)
from streams.settings import Settings


def exposition() -> str:
    """A worker's /metrics: the sink at its bound, errors as a counter, a queue of 10."""
    registry = CollectorRegistry()
    Gauge("touchpoint_sink_pending_rows", "rows", registry=registry).set(200_000)
    Counter("touchpoint_sink_insert_errors", "errors", registry=registry).inc(3)
    queue = Gauge("touchpoint_alert_queue", "queued", ["endpoint"], registry=registry)
    queue.labels("crm").set(10)
    return generate_latest(registry).decode()


def worker_transport(accounting: dict[str, object]) -> httpx.MockTransport:
    """A worker's web endpoint as seen over HTTP (outside the code under test)."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(200, text=exposition())
        if request.url.path == "/accounting":
            return httpx.Response(200, json=accounting)
        return httpx.Response(404)

    return httpx.MockTransport(answer)


async def read_with(transport: httpx.MockTransport, settings: Settings) -> Deployment:
    deployment = Deployment(settings, ["http://w0:6066/"], transport=transport)
    await deployment.worker_pages()
    return deployment


ALERTS = {"endpoints": [{"name": "crm", "url": "https://h.example/x", "queue_size": 10}]}


async def test_a_sink_at_its_bound_and_a_full_alert_queue_fail_with_the_reason() -> None:
    balanced = {"consumed": 5, "accepted": 3, "duplicates": 1, "dead_lettered": 1, "balanced": True}
    deployment = await read_with(worker_transport(balanced), Settings(alerts=ALERTS))  # type: ignore[arg-type]
    sink = await check_sink_backlog(deployment)
    assert sink.level == "fail"
    assert "http://w0:6066" in sink.summary and "200,000" in sink.summary
    assert sink.details["insert_errors"] == {"http://w0:6066": 3.0}  # a counter, read by its name
    queues = await check_alert_queues(deployment)
    assert queues.level == "fail" and "crm" in queues.summary
    accounting = await check_accounting(deployment)
    assert accounting.level == "ok"
    assert accounting.summary == ("consumed 5 = accepted 3 + duplicates 1 + dead-lettered 1")


async def test_an_accounting_that_does_not_balance_fails() -> None:
    off = {"consumed": 5, "accepted": 3, "duplicates": 0, "dead_lettered": 1, "balanced": False}
    deployment = await read_with(worker_transport(off), Settings())
    finding = await check_accounting(deployment)
    assert finding.level == "fail" and "unaccounted" in finding.summary


async def test_a_check_that_raises_fails_instead_of_ending_the_run() -> None:
    async def broken(deployment: Deployment) -> Finding:
        raise RuntimeError("the disk is on fire")

    async def fine(deployment: Deployment) -> Finding:
        return Finding("fine", "ok", "all good")

    findings = await run_checks(Deployment(Settings()), [broken, fine])
    assert [(f.check, f.level) for f in findings] == [("broken", "fail"), ("fine", "ok")]
    assert findings[0].summary == "could not check: the disk is on fire"
    assert not healthy(findings)


def test_warnings_are_not_failures_and_the_headline_names_what_failed() -> None:
    warned = [Finding("a", "ok", "fine"), Finding("b", "warn", "look")]
    assert healthy(warned)
    assert render_text(warned).splitlines()[0] == "healthy"
    failed = [*warned, Finding("c", "fail", "broken"), Finding("d", "fail", "also")]
    assert render_text(failed).splitlines()[0] == "UNHEALTHY: 2 checks failed (c, d)"
    assert "  FAIL  c  broken" in render_text(failed)


def test_every_check_is_named_check_something() -> None:
    assert all(check.__name__.startswith("check_") for check in CHECKS)


async def test_offsets_committed_without_being_read_fail_the_reconciliation() -> None:
    registry = CollectorRegistry()
    unread = Gauge(
        "touchpoint_unaccounted_offsets", "lost", ["topic", "partition"], registry=registry
    )
    unread.labels("touchpoints.web", "2").set(80)
    unread.labels("touchpoints.web", "3").set(0)
    text = generate_latest(registry).decode()

    balanced = {"consumed": 0, "accepted": 0, "duplicates": 0, "dead_lettered": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(200, text=text)
        return httpx.Response(200, json={**balanced, "balanced": True})

    deployment = await read_with(httpx.MockTransport(answer), Settings())
    finding = await check_reconciliation(deployment)
    assert finding.level == "fail"
    assert "touchpoints.web[2] 80" in finding.summary and "touchpoint verify" in finding.summary
    unread.labels("touchpoints.web", "2").set(0)
    text = generate_latest(registry).decode()
    deployment = await read_with(httpx.MockTransport(answer), Settings())
    assert (await check_reconciliation(deployment)).level == "ok"
