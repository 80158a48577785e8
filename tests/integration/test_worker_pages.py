"""The worker's web port, asked by someone who should learn nothing personal from it.

One worker on real Apache Kafka and the real ClickHouse engine stitches known people
into customers; then every page Faust knows how to serve, with every table and every
key the worker's state holds (``n/<kind>:<value>``, ``c/<customer id>``), is asked
for, and so are the worker's own pages. No identifier value and no customer id may come
back. The same worker answers the probes, and its ``/metrics`` holds every name the
shipped dashboards, alert rules and README use.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import clickhouse_connect
import httpx
import orjson
import pytest
from faust.web import base as faust_web
from mode.utils.imports import symbol_by_name

from streams.runtime.topics import CUSTOMERS_TABLE, DEDUP_TABLE, DETECTOR_TABLE, RESOLVER_TABLE
from streams.runtime.web import PAGES
from tests.integration.test_worker_end_to_end import (
    RunningWorker,
    Stack,
    channel_topic,
    create_topics,
    produce,
    settled,
    wait_for,
)
from tests.metric_names import (
    PROMETHEUS_BUILTINS,
    dashboard_expressions,
    documented_metric_names,
    promql_metric_names,
    rule_expressions,
    sample_names,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
PEOPLE = 12


def people_events() -> tuple[list[dict[str, Any]], set[str]]:
    """Each person shows an e-mail, a phone, a device and an account over a few events;
    every fourth person's two halves first look like two customers, then merge. Returns
    the events and every identifier value as sent."""
    now = int(time.time() * 1000) - 120_000
    events: list[dict[str, Any]] = []
    values: set[str] = set()
    for p in range(PEOPLE):
        email = f"Pages.Person{p}@Example.com"
        phone = f"+44 20 7946 0{p:03d}"
        device = f"pages-device-{p:04d}"
        account = f"pages-account-{p:04d}"
        values |= {email, phone, device, account}
        shown = [{"email": email, "device_id": device}, {"phone": phone, "account_id": account}]
        if p % 4:
            shown.append({"email": email, "phone": phone})
        for n, identifiers in enumerate(shown):
            events.append(
                {
                    "event_id": f"pages-{p}-{n}",
                    "occurred_at": now + n,
                    "type": "survey_response" if n == 1 else "page_view",
                    "identifiers": identifiers,
                    **({"survey": {"metric": "nps", "score": p % 11}} if n == 1 else {}),
                }
            )
        if p % 4 == 0:  # the merge comes later
            events.append(
                {
                    "event_id": f"pages-{p}-merge",
                    "occurred_at": now + 10,
                    "type": "login",
                    "identifiers": {"email": email, "account_id": account},
                }
            )
    return events, values


@dataclass
class Served:
    """The running worker, what it was sent, and what its state holds."""

    stack: Stack
    worker: RunningWorker
    values: set[str]
    keys: list[str]
    customers: list[str]
    ready_answers: list[tuple[int, dict[str, Any]]]


@pytest.fixture(scope="module")
def module_stack(
    kafka_bootstrap: str, clickhouse_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("pages")
    database = f"test_{uuid.uuid4().hex[:12]}"
    client = clickhouse_connect.get_client(dsn=clickhouse_server.url, autogenerate_session_id=False)
    client.command(f"CREATE DATABASE {database}")
    app_id = f"pages-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "TOUCHPOINT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TOUCHPOINT_CLICKHOUSE_URL": clickhouse_server.url,
        "TOUCHPOINT_CLICKHOUSE_DATABASE": database,
        "TOUCHPOINT_APP_ID": app_id,
        "TOUCHPOINT_DATA_DIR": str(tmp / "state"),
        "TOUCHPOINT_TOPIC_PARTITIONS": str(PARTITIONS),
        "TOUCHPOINT_TOPIC_PATTERN": rf"^touchpoints\.{app_id.replace('-', '_')}_[a-z0-9_]+$",
        "TOUCHPOINT_DLQ_TOPIC": f"touchpoints.{app_id}-dlq",
        "TOUCHPOINT_ALERTS_TOPIC": f"touchpoints.{app_id}-alerts",
        "TOUCHPOINT_MERGES_TOPIC": f"touchpoints.{app_id}-merges",
        "TOUCHPOINT_SINK_LINGER_S": "0.2",
        "TOUCHPOINT_COMMIT_INTERVAL_S": "0.5",
        "TOUCHPOINT_KAFKA_SESSION_TIMEOUT_S": "10",
        "TOUCHPOINT_CONSUMER_LAG_INTERVAL_S": "1",
        "TOUCHPOINT_LOG_LEVEL": "INFO",
        # a stray switch in the environment must not bring Faust's pages back
        "APP_WEB_TABLES_ENABLED": "true",
        "APP_WEB_ROUTER_ENABLED": "true",
        "APP_WEB_STATS_ENABLED": "true",
        "APP_WEB_GRAPH_ENABLED": "true",
        "APP_WEB_METRICS_ENABLED": "true",
    }
    yield Stack(kafka_bootstrap, clickhouse_server.url, database, env, tmp)
    client.command(f"DROP DATABASE IF EXISTS {database}")
    client.close()


async def watch_ready(worker: RunningWorker, answers: list[tuple[int, dict[str, Any]]]) -> None:
    """Ask /ready from the moment the port answers until it says ready."""
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert worker.proc.poll() is None, f"worker exited:\n{worker.log_tail()}"
            try:
                response = await http.get(f"{worker.web}/ready", timeout=5)
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            answers.append((response.status_code, response.json()))
            if response.status_code == 200:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"never ready: {answers[-3:]}\n{worker.log_tail()}")


@pytest.fixture(scope="module")
async def served(module_stack: Stack) -> AsyncIterator[Served]:
    stack = module_stack
    web = channel_topic(stack, "web")
    await create_topics(stack, [web], PARTITIONS)
    events, values = people_events()
    await produce(stack.bootstrap, [(web, None, orjson.dumps(e), []) for e in events], None)
    worker = stack.start_worker("pages")
    answers: list[tuple[int, dict[str, Any]]] = []
    try:
        await watch_ready(worker, answers)
        await settled(stack, [web], worker, timeout=180)
        client = await clickhouse_connect.get_async_client(
            dsn=stack.clickhouse_url, autogenerate_session_id=False
        )
        try:
            db = stack.database
            aliases = (
                await client.query(
                    f"SELECT identifier_kind, identifier_value FROM {db}.customer_aliases"
                )
            ).result_rows
            customers = [
                r[0]
                for r in (
                    await client.query(f"SELECT customer_id FROM {db}.customer_360_store")
                ).result_rows
            ]
        finally:
            await client.close()
        assert len(aliases) == 4 * PEOPLE, aliases
        stored = {str(value) for _kind, value in aliases}
        keys = [f"n/{kind}:{value}" for kind, value in aliases] + [f"c/{c}" for c in customers]
        yield Served(stack, worker, values | stored, keys, customers, answers)
    finally:
        worker.stop()


def faust_paths(tables: list[str], keys: list[str]) -> list[str]:
    """Every path of every page Faust can serve (each blueprint it ships, enabled or
    not), with each table name and each key filled in."""
    blueprints = [
        *faust_web.DEFAULT_BLUEPRINTS,
        *faust_web.PRODUCTION_BLUEPRINTS,
        *faust_web.DEBUG_BLUEPRINTS,
        *faust_web.OPTIONAL_BLUEPRINTS,
    ]
    paths: set[str] = {"/", "/signal/", "/stats/", "/assignment/"}
    for prefix, reference in blueprints:
        for route in symbol_by_name(reference).routes:
            template = (prefix + route.uri).replace("//", "/")
            if "{key}" in template:
                paths.update(
                    template.format(name=t, key=quote(k, safe=":@")) for t in tables for k in keys
                )
            elif "{name}" in template:
                paths.update(template.format(name=t) for t in tables)
            else:
                paths.add(template)
    # with and without the trailing slash
    return sorted(paths | {p.rstrip("/") or "/" for p in paths})


def leaks(body: bytes, values: set[str], customers: list[str]) -> list[str]:
    text = body.decode(errors="replace").lower()
    return sorted(v for v in (*values, *customers) if v.lower() in text)


async def test_no_faust_page_is_served_and_nothing_personal_comes_back(served: Served) -> None:
    paths = faust_paths([RESOLVER_TABLE, CUSTOMERS_TABLE, DETECTOR_TABLE, DEDUP_TABLE], served.keys)
    assert len(paths) > 2 * len(served.keys)  # every key under both /table and /router
    served_paths: list[str] = []
    leaked: dict[str, list[str]] = {}
    async with httpx.AsyncClient() as http:
        for path in paths:
            response = await http.get(served.worker.web + path, timeout=10)
            if response.status_code != 404:
                served_paths.append(f"{path} -> {response.status_code}")
            found = leaks(response.content, served.values, served.customers)
            if found:
                leaked[path] = found
    assert leaked == {}
    assert served_paths == []


async def test_the_workers_own_pages_carry_no_identifier_value(served: Served) -> None:
    async with httpx.AsyncClient() as http:
        for path in [*PAGES, "/scores?window_s=31536000"]:
            response = await http.get(served.worker.web + path, timeout=10)
            assert response.status_code == 200, (path, response.text)
            assert leaks(response.content, served.values, served.customers) == [], path


async def test_ready_only_once_partitions_are_assigned_and_live_answers(served: Served) -> None:
    answers = served.ready_answers
    status, body = answers[-1]
    assert status == 200 and body["ok"] is True
    assert body["checks"]["partitions_assigned"]["detail"].endswith("partitions assigned")
    assert not body["checks"]["partitions_assigned"]["detail"].startswith("0 ")
    before = answers[:-1]
    assert before, "the port answered only once it was ready"
    assert all(s == 503 and b["ok"] is False and b["failed"] for s, b in before)
    assert any("partitions_assigned" in b["failed"] for _s, b in before)
    async with httpx.AsyncClient() as http:
        live = await http.get(f"{served.worker.web}/live", timeout=10)
    assert live.status_code == 200
    assert live.json()["failed"] == []


async def test_every_metric_a_dashboard_rule_or_the_readme_names_is_exported(
    served: Served,
) -> None:
    web = channel_topic(served.stack, "web")

    async def lag_sampled() -> bool:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{served.worker.web}/metrics", timeout=10)).text
        return f'touchpoint_consumer_lag{{partition="0",topic="{web}"}} 0.0' in text

    await wait_for(lag_sampled, served.worker, timeout=60, what="the consumer lag sample")
    async with httpx.AsyncClient() as http:
        exposition = (await http.get(f"{served.worker.web}/metrics", timeout=10)).text
    exported = sample_names(exposition)
    used = {
        name: where
        for where, expression in {**rule_expressions(), **dashboard_expressions()}.items()
        for name in promql_metric_names(expression)
    }
    assert {n: w for n, w in used.items() if n not in exported | PROMETHEUS_BUILTINS} == {}
    assert documented_metric_names() - exported == set()
    ours = {n for n in exported if n.startswith(("touchpoint_", "process_"))}
    assert ours - documented_metric_names() == set()
    assert 'touchpoint_sink_inserted_rows_total{table="events_store"}' in exposition
    assert "touchpoint_ready 1.0" in exposition
