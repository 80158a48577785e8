"""The worker's web pages, and nothing else: ``/metrics``, ``/accounting``, ``/scores``,
``/live`` and ``/ready``.

Faust serves pages of its own by default: ``/table/<name>/<key>/`` returns any table
value (here a customer with every identifier and the journey), ``/router/`` the
cluster's topology, and statistics pages when debugging is on. Each of them can be
switched back on by an ``APP_WEB_*`` environment variable, so this module does not
rely on those settings: it empties Faust's blueprint list, and only the pages below
are routed. None of them carries an identifier value: counters are labelled by topic,
channel, reason, table and endpoint; scores by segment.

``/live`` and ``/ready`` answer 200 or 503 with a JSON body that names each check and
what it saw (see ``streams/health.py``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from faust.web.base import BlueprintManager
from mode import Service

from streams.runtime.health import (
    AssignmentWatch,
    LoopWatch,
    ReadyLimits,
    Verdict,
    liveness,
    readiness,
)
from streams.runtime.lag import LagSampler

if TYPE_CHECKING:
    from streams.runtime.worker import Worker

__all__ = ["PAGES", "Probes", "install_pages", "main", "probe"]

logger = logging.getLogger(__name__)

#: Every path the worker serves.
PAGES: tuple[str, ...] = ("/metrics", "/accounting", "/scores", "/live", "/ready")


class Probes:
    """What ``/live`` and ``/ready`` look at, collected from the running worker."""

    def __init__(self, worker: Worker) -> None:
        settings = worker.settings
        self.worker = worker
        self.loop = LoopWatch()
        self.assignment = AssignmentWatch()
        self.limits = ReadyLimits(
            clickhouse_max_age_s=settings.ready_clickhouse_max_age_s,
            sink_max_age_s=settings.ready_sink_max_age_s,
        )
        self.max_loop_lag_s = settings.live_max_loop_lag_s
        #: monotonic time of the last successful ClickHouse ping
        self.pinged_at: float | None = None

    def crashed(self) -> str | None:
        """Why the app, or one of its agents, crashed; None while nothing did."""
        app = self.worker.app
        if app.crashed:
            return repr(app.crash_reason)
        for name, agent in app.agents.items():
            if agent.crashed:
                return f"agent {name}: {agent.crash_reason!r}"
        return None

    def live(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        return liveness(
            crashed=self.crashed(),
            loop_lag_s=self.loop.lag(now),
            max_loop_lag_s=self.max_loop_lag_s,
        )

    def ready(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        sink = self.worker.sink
        stats = sink.stats if sink is not None else None
        stored_at = stats.last_stored_at if stats is not None else None
        ok_at = max((t for t in (stored_at, self.pinged_at) if t is not None), default=None)
        assigned = self.assignment.assigned
        return readiness(
            assigned=None if assigned is None else len(assigned),
            rebalancing=bool(self.worker.app.rebalancing),
            sink_started=self.worker.sink_ready.is_set(),
            clickhouse_ok_at=ok_at,
            oldest_pending_at=stats.oldest_pending_at if stats is not None else None,
            now=now,
            limits=self.limits,
        )

    def consumed_partitions(self) -> list[tuple[str, int]]:
        """The partitions this worker holds of the topics its agents read (not the
        changelogs, which only recovery reads)."""
        worker = self.worker
        read = {
            *worker.input_topic.topics,
            worker.resolve_topic_name,
            worker.customers_topic_name,
            worker.tallies_topic_name,
            worker.settings.alerts_topic,
        }
        return [
            (tp.topic, tp.partition) for tp in self.assignment.assigned or () if tp.topic in read
        ]

    def refresh(self) -> None:
        """Bring the worker's gauges, and the probes' own, up to date (before a scrape)."""
        self.worker.refresh_gauges()
        metrics = self.worker.metrics
        metrics.loop_lag.set(self.loop.lag())
        metrics.ready.set(1 if self.ready().ok else 0)


def _serve_only_own_pages(app: Any) -> None:
    """No Faust blueprint is routed, whatever ``APP_WEB_*_ENABLED`` says."""
    app.web.blueprints = BlueprintManager()


def install_pages(worker: Worker) -> Probes:
    """Route the worker's pages (and only them) and start what the probes watch:
    the event loop's heartbeat, the rebalance signals, a ClickHouse ping while no
    insert succeeds, and the consumer lag sample."""
    app = worker.app
    settings = worker.settings
    probes = Probes(worker)
    _serve_only_own_pages(app)

    # Faust starts app tasks only once the tables are recovered, which can take minutes
    # after a restart; the web server answers from the start, and so must /live
    @app.page("/metrics")
    async def metrics_page(view: Any, request: Any) -> Any:
        """Prometheus metrics of this worker."""
        probes.loop.start()
        return view.bytes(
            worker.metrics.exposition(probes.refresh),
            content_type="text/plain; version=0.0.4",
        )

    @app.page("/accounting")
    async def accounting_page(view: Any, request: Any) -> Any:
        """Totals since start: consumed = accepted + duplicates + dead_lettered."""
        totals = worker.metrics.accounting()
        return view.json({**totals.__dict__, "balanced": totals.balanced})

    @app.page("/scores")
    async def scores_page(view: Any, request: Any) -> Any:
        """The stream's rolling scores (on-time answers), ``?window_s=`` (default 24 h),
        ending at the newest bucket; empty on a worker that does not hold the detector."""
        try:
            window_s = float(request.query.get("window_s", 86_400))
        except ValueError:
            return view.json({"error": "window_s must be a number of seconds"}, status=400)
        detector = worker.detector()
        if detector is None or detector.lookout is None:
            return view.json({"window_s": window_s, "scores": {}})
        lookout = detector.lookout
        rolling = lookout.rolling
        end = rolling.newest + rolling.bucket_ms
        return view.json(
            {
                "window_s": window_s,
                "end_ms": end,
                # event time every customers partition has completed
                "watermark_ms": lookout.complete_to(),
                # score alerts have looked at every window ending up to here
                "alerts_looked_to_ms": lookout.last_look,
                # the newest bucket any answer or contact reached
                "newest_event_ms": end - 1 if rolling.series else None,
                "scores": rolling.report(end, int(window_s * 1000)),
            }
        )

    @app.page("/live")
    async def live_page(view: Any, request: Any) -> Any:
        """200 while the app has not crashed and its event loop keeps time, else 503."""
        probes.loop.start()
        verdict = probes.live()
        return view.json(verdict.to_json(), status=200 if verdict.ok else 503)

    @app.page("/ready")
    async def ready_page(view: Any, request: Any) -> Any:
        """200 once partitions are assigned and recovered, ClickHouse answers and the
        sink is not stuck, else 503."""
        probes.loop.start()
        verdict = probes.ready()
        return view.json(verdict.to_json(), status=200 if verdict.ok else 503)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def probe_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        probes.assignment.on_revoked(revoked)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def probe_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        probes.assignment.on_assigned(assigned)

    @app.task  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        """The event loop's heartbeat (``/live``), in case no probe started it."""
        probes.loop.start()

    @app.timer(interval=max(1.0, settings.ready_clickhouse_max_age_s / 3))  # type: ignore[untyped-decorator]
    async def ping_clickhouse() -> None:
        """Ping ClickHouse while no insert has succeeded recently (``/ready``)."""
        sink, client = worker.sink, worker.clickhouse
        if sink is None or client is None:
            return
        stored_at = sink.stats.last_stored_at
        recent = settings.ready_clickhouse_max_age_s / 3
        if stored_at is not None and time.monotonic() - stored_at < recent:
            return
        try:
            if await client.ping():
                probes.pinged_at = time.monotonic()
        except Exception as exc:  # an unreachable server is what this finds out
            logger.warning("ClickHouse ping failed: %s", exc)

    sampler = LagSampler(settings)

    @app.service
    class LagService(Service):
        """Owns the lag sampler's consumer for the life of the worker."""

        async def on_stop(self) -> None:
            await sampler.stop()

    @app.timer(interval=settings.consumer_lag_interval_s)  # type: ignore[untyped-decorator]
    async def sample_lag() -> None:
        """Consumer lag of the partitions this worker holds (``touchpoint_consumer_lag``)."""
        try:
            lag = await sampler.sample(probes.consumed_partitions())
        except Exception as exc:  # the last sample stays; the broker may be back soon
            logger.warning("consumer lag not sampled: %s", exc)
            return
        worker.metrics.set_consumer_lag(lag)

    return probes


def probe(page: str, port: int, timeout_s: float = 3.0) -> int:
    """Ask this machine's worker for ``/live`` or ``/ready``: 0 when it passes, else 1
    (a container healthcheck's exit code). The failed checks go to stderr."""
    import json
    import sys
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{port}/{page}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            response.read()
        return 0
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        sys.stderr.write(f"{page}: failed {', '.join(body.get('failed', [])) or exc.code}\n")
    except OSError as exc:
        sys.stderr.write(f"{page}: no answer from {url}: {exc}\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m streams.runtime.web live|ready``: the worker's probes for a healthcheck."""
    import argparse

    from streams.settings import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m streams.runtime.web",
        description="Ask the worker on this machine (TOUCHPOINT_WEB_PORT) for a probe; "
        "exit 0 when it passes.",
    )
    parser.add_argument("page", choices=["live", "ready"])
    args = parser.parse_args(argv)
    return probe(args.page, load_settings().web_port)


if __name__ == "__main__":
    raise SystemExit(main())
