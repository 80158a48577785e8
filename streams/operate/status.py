"""``touchpoint status``: is a running deployment healthy, and if not, why.

The checks read the deployment the settings name (Kafka, ClickHouse) and the workers'
own pages (``/metrics``, ``/accounting``) given by URL. Each check is one small async
function from a :class:`Deployment` to a :class:`Finding`; :data:`CHECKS` lists them in
the order they are shown, so one more check is one more function in that list. What a
check reads is fetched once per run and shared (the workers' pages, the input topics).

A finding is ``ok``, ``warn`` (worth a look, not a failure) or ``fail``; the deployment
is healthy when nothing fails. A check that cannot read what it needs fails, saying
what it could not reach: an unreachable service is not health.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from schemas.clickhouse import migrations, quote_identifier
from streams.runtime.topics import (
    InputTopics,
    discover_input_topics,
    internal_topics,
    uncommitted,
)
from streams.settings import Settings

__all__ = [
    "CHECKS",
    "Check",
    "Deployment",
    "Finding",
    "WorkerPages",
    "as_json",
    "check_accounting",
    "check_alert_queues",
    "check_consumer_lag",
    "check_input_topics",
    "check_migrations",
    "check_reconciliation",
    "check_sink_backlog",
    "check_workers",
    "healthy",
    "render_text",
    "run_checks",
]

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One check's verdict: a one-line summary, and the numbers behind it."""

    check: str
    level: Level
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerPages:
    """What one worker's web endpoint answered; ``error`` when it did not."""

    url: str
    accounting: dict[str, Any] | None = None
    metrics: dict[str, list[tuple[dict[str, str], float]]] | None = None
    error: str | None = None

    def samples(self, family: str) -> list[tuple[dict[str, str], float]]:
        """The samples of a metric family (counters by their name without ``_total``)."""
        return (self.metrics or {}).get(family, [])


class Deployment:
    """The running deployment as the checks see it; each part is read once, on first use.

    ``workers`` are the base URLs of the workers' web endpoints
    (``http://worker-0:6066``); ``max_lag`` is the consumer lag per topic (messages)
    above which the lag check fails (None: reported, not judged). ``clickhouse`` and
    ``transport`` (for the workers' pages) replace the clients made from the settings.
    """

    def __init__(
        self,
        settings: Settings,
        workers: Sequence[str] = (),
        *,
        max_lag: int | None = None,
        timeout_s: float = 10.0,
        clickhouse: Any = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.workers = [url.rstrip("/") for url in workers]
        self.max_lag = max_lag
        self.timeout_s = timeout_s
        self._clickhouse = clickhouse
        self._transport = transport
        self._topics: InputTopics | None = None
        self._pages: list[WorkerPages] | None = None
        self._lock = asyncio.Lock()

    async def input_topics(self) -> InputTopics:
        async with self._lock:
            if self._topics is None:
                self._topics = await asyncio.wait_for(
                    discover_input_topics(self.settings), self.timeout_s
                )
            return self._topics

    async def clickhouse(self) -> Any:
        if self._clickhouse is None:
            from streams.runtime.app import open_clickhouse

            self._clickhouse = await open_clickhouse(self.settings)
        return self._clickhouse

    async def worker_pages(self) -> list[WorkerPages]:
        async with self._lock:
            if self._pages is None:
                async with httpx.AsyncClient(
                    timeout=self.timeout_s, transport=self._transport
                ) as http:
                    self._pages = list(
                        await asyncio.gather(*(_read_worker(http, url) for url in self.workers))
                    )
            return self._pages

    async def close(self) -> None:
        if self._clickhouse is not None:
            await self._clickhouse.close()


async def _read_worker(http: httpx.AsyncClient, url: str) -> WorkerPages:
    try:
        accounting = await http.get(f"{url}/accounting")
        accounting.raise_for_status()
        metrics = await http.get(f"{url}/metrics")
        metrics.raise_for_status()
    except httpx.HTTPError as exc:
        return WorkerPages(url, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.text):
        families[family.name] = [
            (dict(s.labels), float(s.value))
            for s in family.samples
            if s.name in (family.name, f"{family.name}_total")
        ]
    return WorkerPages(url, accounting=dict(accounting.json()), metrics=families)


Check = Callable[[Deployment], Awaitable[Finding]]


def _no_worker(deployment: Deployment) -> str:
    return "not checked: no worker answered" if deployment.workers else "not checked: no --worker"


# --- the checks ------------------------------------------------------------------------------


async def check_input_topics(deployment: Deployment) -> Finding:
    """Input topics read, and refused for a partition count other than the state's."""
    settings = deployment.settings
    found = await deployment.input_topics()
    details = {"read": list(found.usable), "refused": dict(found.refused)}
    if found.refused:
        names = ", ".join(f"{t} ({n} partitions)" for t, n in sorted(found.refused.items()))
        return Finding(
            "input_topics",
            "fail",
            f"not read: {names}; every input topic needs {settings.topic_partitions} "
            "partitions (TOUCHPOINT_TOPIC_PARTITIONS): recreate these with that many",
            details,
        )
    if not found.usable:
        return Finding(
            "input_topics",
            "warn",
            f"no topic matches {settings.topic_pattern} yet (TOUCHPOINT_TOPIC_PATTERN)",
            details,
        )
    return Finding("input_topics", "ok", f"{len(found.usable)} read, none refused", details)


async def check_consumer_lag(deployment: Deployment) -> Finding:
    """Messages each topic's partitions hold beyond what the worker group committed."""
    settings = deployment.settings
    found = await deployment.input_topics()
    topics = [*found.usable, *internal_topics(settings), settings.alerts_topic]
    behind = await asyncio.wait_for(
        uncommitted(
            settings.kafka_bootstrap,
            settings.app_id,
            topics,
            **settings.kafka_client_options(),
        ),
        deployment.timeout_s * 3,
    )
    lag = dict.fromkeys(topics, 0)
    for (topic, _), (committed, end) in behind.items():
        lag[topic] += end - committed
    details = {"group": settings.app_id, "lag": lag, "max_lag": deployment.max_lag}
    total = sum(lag.values())
    over = {
        t: n for t, n in lag.items() if deployment.max_lag is not None and n > deployment.max_lag
    }
    if over:
        listed = ", ".join(f"{t} {n:,}" for t, n in sorted(over.items()))
        return Finding(
            "consumer_lag",
            "fail",
            f"group {settings.app_id} is more than {deployment.max_lag:,} messages behind on "
            f"{listed}; are the workers running and keeping up?",
            details,
        )
    worst = max(lag.items(), key=lambda kv: kv[1]) if lag else ("", 0)
    summary = f"group {settings.app_id}: {total:,} messages behind over {len(lag)} topics"
    if worst[1]:
        summary += f" (most on {worst[0]}: {worst[1]:,})"
    return Finding("consumer_lag", "ok", summary, details)


async def check_migrations(deployment: Deployment) -> Finding:
    """The ClickHouse schema: migrations applied, pending, changed since applied."""
    settings = deployment.settings
    client = await deployment.clickhouse()
    db = quote_identifier(settings.clickhouse_database)
    exists = await client.query(f"EXISTS TABLE {db}.schema_migrations")
    shipped = {m.version: m for m in migrations()}
    if not exists.result_rows[0][0]:
        return Finding(
            "migrations",
            "fail",
            f"database {settings.clickhouse_database} has no schema yet: run `touchpoint "
            "migrate` (a worker does it at start)",
            {"applied": [], "pending": sorted(shipped), "changed": []},
        )
    rows = await client.query(f"SELECT version, checksum FROM {db}.schema_migrations FINAL")
    applied = {int(v): str(c) for v, c in rows.result_rows}
    pending = sorted(set(shipped) - set(applied))
    changed = sorted(v for v, c in applied.items() if v in shipped and shipped[v].checksum != c)
    unknown = sorted(set(applied) - set(shipped))
    details = {"applied": sorted(applied), "pending": pending, "changed": changed, "newer": unknown}
    if pending:
        return Finding(
            "migrations",
            "fail",
            f"pending {pending}: run `touchpoint migrate` (or start a worker of this version)",
            details,
        )
    if changed or unknown:
        parts = []
        if changed:
            parts.append(f"{changed} changed since they were applied (add a migration instead)")
        if unknown:
            parts.append(f"{unknown} applied by a newer version")
        return Finding("migrations", "warn", "; ".join(parts), details)
    return Finding("migrations", "ok", f"all {len(applied)} applied", details)


async def check_workers(deployment: Deployment) -> Finding:
    """Every worker named answers on its web endpoint."""
    pages = await deployment.worker_pages()
    if not pages:
        return Finding(
            "workers",
            "warn",
            "no worker given (--worker URL): sink backlog, alert queues and accounting "
            "are not checked",
        )
    down = [p for p in pages if p.error]
    details = {
        "answering": [p.url for p in pages if not p.error],
        "down": {p.url: p.error for p in down},
    }
    if down:
        names = "; ".join(f"{p.url} ({p.error})" for p in down)
        return Finding("workers", "fail", f"not answering: {names}", details)
    return Finding("workers", "ok", f"{len(pages)} answering", details)


async def check_sink_backlog(deployment: Deployment) -> Finding:
    """Rows each worker holds for ClickHouse; at the bound the stream waits (back-pressure)."""
    limit = deployment.settings.sink_max_pending_rows
    pages = [p for p in await deployment.worker_pages() if not p.error]
    if not pages:
        return Finding("sink_backlog", "warn", _no_worker(deployment))
    pending = {p.url: sum(v for _, v in p.samples("touchpoint_sink_pending_rows")) for p in pages}
    errors = {p.url: sum(v for _, v in p.samples("touchpoint_sink_insert_errors")) for p in pages}
    details = {"pending_rows": pending, "insert_errors": errors, "max_pending_rows": limit}
    full = [url for url, n in pending.items() if n >= limit]
    if full:
        return Finding(
            "sink_backlog",
            "fail",
            f"{', '.join(full)} at the sink's bound of {limit:,} rows: the stream is waiting "
            "for ClickHouse; is it reachable and accepting inserts?",
            details,
        )
    summary = f"{int(sum(pending.values())):,} rows waiting for ClickHouse"
    if any(errors.values()):
        summary += f", {int(sum(errors.values())):,} failed insert attempts so far (retried)"
        return Finding("sink_backlog", "warn", summary, details)
    return Finding("sink_backlog", "ok", summary, details)


async def check_alert_queues(deployment: Deployment) -> Finding:
    """Alerts waiting per webhook endpoint; a full queue gives new alerts up (``dead``)."""
    sizes = {e.name: e.queue_size for e in deployment.settings.alerts.endpoints}
    pages = [p for p in await deployment.worker_pages() if not p.error]
    if not pages:
        return Finding("alert_queues", "warn", _no_worker(deployment))
    depth: dict[str, float] = {}
    for page in pages:
        for labels, value in page.samples("touchpoint_alert_queue"):
            name = labels.get("endpoint", "")
            depth[name] = depth.get(name, 0) + value
    details = {"queued": depth, "queue_size": sizes}
    full = sorted(n for n, d in depth.items() if n in sizes and d >= sizes[n])
    if full:
        return Finding(
            "alert_queues",
            "fail",
            f"full for {', '.join(full)}: new alerts to them are given up; is the endpoint up?",
            details,
        )
    if not depth:
        return Finding(
            "alert_queues", "ok", f"{len(sizes)} endpoints configured, none queued", details
        )
    listed = ", ".join(f"{n} {int(d):,}" for n, d in sorted(depth.items()))
    return Finding("alert_queues", "ok", f"queued: {listed}", details)


async def check_accounting(deployment: Deployment) -> Finding:
    """consumed = accepted + duplicates + dead_lettered, on every worker."""
    pages = [p for p in await deployment.worker_pages() if p.accounting is not None]
    if not pages:
        return Finding("accounting", "warn", _no_worker(deployment))
    keys = ("consumed", "accepted", "duplicates", "dead_lettered")
    totals = {k: sum(int(p.accounting.get(k, 0)) for p in pages if p.accounting) for k in keys}
    unbalanced = [p.url for p in pages if p.accounting and not p.accounting.get("balanced")]
    details = {"totals": totals, "unbalanced": unbalanced}
    summary = (
        f"consumed {totals['consumed']:,} = accepted {totals['accepted']:,} + duplicates "
        f"{totals['duplicates']:,} + dead-lettered {totals['dead_lettered']:,}"
    )
    if unbalanced:
        return Finding(
            "accounting",
            "fail",
            f"does not balance on {', '.join(unbalanced)}: messages unaccounted for",
            details,
        )
    return Finding("accounting", "ok", summary, details)


async def check_reconciliation(deployment: Deployment) -> Finding:
    """Offsets the consumer group committed that no batch read, as every worker checks
    them against the ledger (``touchpoint_unaccounted_offsets``): a loss, must be 0."""
    pages = [p for p in await deployment.worker_pages() if not p.error]
    if not pages:
        return Finding("reconciliation", "warn", _no_worker(deployment))
    unread = {
        f"{labels.get('topic')}[{labels.get('partition')}]": int(value)
        for page in pages
        for labels, value in page.samples("touchpoint_unaccounted_offsets")
        if value
    }
    details = {"unaccounted_offsets": unread}
    if unread:
        listed = ", ".join(f"{tp} {n:,}" for tp, n in sorted(unread.items()))
        return Finding(
            "reconciliation",
            "fail",
            f"offsets committed without being read: {listed}; touchpoint verify lists them",
            details,
        )
    return Finding(
        "reconciliation",
        "ok",
        "every committed offset was read (the workers' ledger check)",
        details,
    )


#: Every check, in the order shown. One more check: one more function here.
CHECKS: list[Check] = [
    check_input_topics,
    check_consumer_lag,
    check_migrations,
    check_workers,
    check_sink_backlog,
    check_alert_queues,
    check_accounting,
    check_reconciliation,
]


async def run_checks(deployment: Deployment, checks: Sequence[Check] = CHECKS) -> list[Finding]:
    """Every check's finding, in order; a check that raises fails with what it could not
    read (an unreachable service is a failure, not a crash of the command)."""
    findings = []
    for check in checks:
        name = check.__name__.removeprefix("check_")
        try:
            findings.append(await check(deployment))
        except Exception as exc:
            findings.append(
                Finding(name, "fail", f"could not check: {_unreachable(deployment, exc)}")
            )
    return findings


def _unreachable(deployment: Deployment, exc: Exception) -> str:
    """What a check could not read, in the operator's terms (which service, which setting)."""
    settings = deployment.settings
    module = type(exc).__module__
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if module.startswith("aiokafka") or isinstance(exc, TimeoutError):
        return (
            f"Kafka at {settings.kafka_bootstrap} did not answer (TOUCHPOINT_KAFKA_BOOTSTRAP): "
            f"{type(exc).__name__}"
        )
    if module.startswith("clickhouse_connect"):
        return f"ClickHouse at {settings.clickhouse_url} (TOUCHPOINT_CLICKHOUSE_URL): {reason}"
    return reason


def healthy(findings: Sequence[Finding]) -> bool:
    return not any(f.level == "fail" for f in findings)


def render_text(findings: Sequence[Finding]) -> str:
    """A headline with the verdict, then one line per check in the order of the checks."""
    failed = [f for f in findings if f.level == "fail"]
    headline = (
        "healthy"
        if not failed
        else f"UNHEALTHY: {len(failed)} check{'s' if len(failed) > 1 else ''} failed "
        f"({', '.join(f.check for f in failed)})"
    )
    width = max((len(f.check) for f in findings), default=0)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    return "\n".join(
        [headline, *(f"  {marks[f.level]}  {f.check:<{width}}  {f.summary}" for f in findings)]
    )


def as_json(findings: Sequence[Finding]) -> dict[str, Any]:
    """The report for machines: the verdict and every finding with its details."""
    return {"healthy": healthy(findings), "checks": [asdict(f) for f in findings]}
