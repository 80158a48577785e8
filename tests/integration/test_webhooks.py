"""Webhook delivery against a real HTTP server on loopback, with the ledger in the real
ClickHouse engine; signatures checked by an independent verifier of the specification."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas.alert_rules import AlertRules, Endpoint
from schemas.alerts import Alert
from sinks.alerts import ClickHouseLedger, alert_row
from sinks.clickhouse import ClickHouseSink
from sinks.webhooks import Deliverer, Outcome
from streams.runtime.metrics import WorkerMetrics
from tests.standard_webhooks import verify
from tests.webhook_receiver import Receiver, Reply

pytestmark = pytest.mark.integration

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


@pytest.fixture
def ch(clickhouse_client: Any) -> Any:
    return clickhouse_client


@pytest.fixture
async def sink(ch: Any, clickhouse_database: str) -> AsyncIterator[ClickHouseSink]:
    sink = ClickHouseSink(ch, clickhouse_database, linger_s=0.05)
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


def endpoint(receiver: Receiver, name: str = "crm", **options: Any) -> Endpoint:
    settings: dict[str, Any] = {
        "url": f"{receiver.url}/{name}",
        "allow_http": True,
        "allow_private": True,
        "backoff": 0.05,
        "max_backoff": 0.2,
        "timeout": 2.0,
        **options,
    }
    return Endpoint(name=name, **settings)


def alert(n: int, alert_type: str = "customer.detractor") -> Alert:
    return Alert(
        f"msg_test{n:04d}",
        alert_type,
        f"cust-{n}",
        int(time.time() * 1000),
        ("all:all", "channel:web"),
        {"customer_id": f"cust-{n}", "score": 2},
        f"cust-{n}",
    )


async def started(
    sink: ClickHouseSink, ch: Any, database: str, *endpoints: Endpoint
) -> tuple[Deliverer, ClickHouseLedger]:
    ledger = ClickHouseLedger(sink, database)
    await ledger.load(ch)
    deliverer = Deliverer(
        AlertRules(endpoints=endpoints),
        {e.name: KEY for e in endpoints},
        ledger,
        WorkerMetrics(),
    )
    await deliverer.start()
    return deliverer, ledger


async def settle(deliverer: Deliverer, *alerts: Alert, timeout: float = 20) -> list[Outcome]:
    futures = [deliverer.submit(a) for a in alerts]
    done = await asyncio.wait_for(asyncio.gather(*futures), timeout)
    return [o for outcomes in done for o in outcomes]


async def test_a_delivery_is_signed_as_the_specification_says_and_recorded(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    deliverer, _ = await started(sink, ch, clickhouse_database, endpoint(receiver))
    one = alert(1)
    stored = asyncio.Event()
    await sink.add({"alerts_store": [alert_row(one, ["crm"], 1)]}, on_stored=stored.set, token="t1")
    try:
        outcomes = await settle(deliverer, one)
    finally:
        await deliverer.stop()
    assert [(o.status, o.attempts, o.last_status) for o in outcomes] == [("delivered", 1, 204)]
    (request,) = receiver.requests
    body = verify(SECRET, request.headers, request.body)
    assert body == {"type": "customer.detractor", "timestamp": body["timestamp"],
                    "data": {"customer_id": "cust-1", "score": 2}}  # fmt: skip
    assert request.headers["webhook-id"] == one.id
    assert request.headers["content-type"] == "application/json"
    await stored.wait()
    row = await ch.query(
        f"SELECT delivery_status, attempts, deliveries FROM {clickhouse_database}.alerts"
    )
    assert row.result_rows == [("delivered", 1, {"crm": "delivered"})]


async def test_server_errors_and_429_are_retried_with_the_same_id_honouring_retry_after(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    receiver.script(
        "/crm", Reply(500), Reply(503), Reply(429, headers={"Retry-After": "1"}), Reply(200)
    )
    deliverer, _ = await started(sink, ch, clickhouse_database, endpoint(receiver))
    try:
        outcomes = await settle(deliverer, alert(2))
    finally:
        await deliverer.stop()
    assert [(o.status, o.attempts) for o in outcomes] == [("delivered", 4)]
    requests = receiver.requests
    assert len(requests) == 4
    assert {r.headers["webhook-id"] for r in requests} == {alert(2).id}
    for request in requests:  # every attempt is signed afresh and verifies
        verify(SECRET, request.headers, request.body)
    assert requests[3].at - requests[2].at >= 0.95, "Retry-After: 1 was not honoured"
    final = await ch.query(
        f"SELECT status, attempts, last_status FROM {clickhouse_database}.alert_deliveries_store "
        "FINAL"
    )
    assert final.result_rows == [("delivered", 4, 200)]


async def test_a_timeout_is_retried(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    receiver.script("/crm", Reply(200, delay=3.0), Reply(200))
    deliverer, _ = await started(sink, ch, clickhouse_database, endpoint(receiver, timeout=0.5))
    try:
        outcomes = await settle(deliverer, alert(3))
    finally:
        await deliverer.stop()
    assert [(o.status, o.attempts) for o in outcomes] == [("delivered", 2)]


async def test_an_endpoint_down_for_a_while_then_back_gets_each_alert_exactly_once(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    await receiver.down()
    deliverer, _ = await started(
        sink, ch, clickhouse_database, endpoint(receiver, max_attempts=50, max_backoff=0.3)
    )
    alerts = [alert(10 + i) for i in range(8)]
    try:
        pending = asyncio.ensure_future(settle(deliverer, *alerts))
        await asyncio.sleep(1.5)
        assert not pending.done() and receiver.requests == []
        await receiver.up()
        outcomes = await pending
        # the same alerts again (a replay of the alerts topic): nothing is sent twice
        again = await settle(deliverer, *alerts)
    finally:
        await deliverer.stop()
    assert sorted(o.status for o in outcomes) == ["delivered"] * 8
    assert again == []
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert sorted(ids) == sorted(a.id for a in alerts)


async def test_permanent_refusals_and_an_exhausted_budget_give_up_with_the_last_error(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    receiver.script("/bad", Reply(400, body=b"no such customer"))
    receiver.script("/flaky", *[Reply(503)] * 10)
    receiver.script("/moved", Reply(302, headers={"Location": "http://169.254.169.254/"}))
    deliverer, _ = await started(
        sink,
        ch,
        clickhouse_database,
        endpoint(receiver, "bad"),
        endpoint(receiver, "flaky", max_attempts=3),
        endpoint(receiver, "moved"),
    )
    try:
        outcomes = await settle(deliverer, alert(20))
    finally:
        await deliverer.stop()
    by_name = {o.endpoint: o for o in outcomes}
    assert (by_name["bad"].status, by_name["bad"].attempts, by_name["bad"].last_status) == (
        "dead", 1, 400
    )  # fmt: skip
    assert (by_name["flaky"].status, by_name["flaky"].attempts) == ("dead", 3)
    assert by_name["flaky"].last_error == "retries exhausted: HTTP 503"
    # a redirect is an answer, not an instruction: nothing follows it
    assert (by_name["moved"].status, by_name["moved"].last_status) == ("dead", 302)
    assert [r.path for r in receiver.requests].count("/moved") == 1


async def test_loopback_and_private_addresses_are_refused_unless_allowed(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    guarded = endpoint(receiver, "guarded", allow_private=False)
    by_name = endpoint(receiver, "byname", allow_private=False).model_copy(
        update={"url": receiver.url.replace("127.0.0.1", "localhost") + "/byname"}
    )
    deliverer, _ = await started(sink, ch, clickhouse_database, guarded, by_name)
    try:
        outcomes = await settle(deliverer, alert(30))
    finally:
        await deliverer.stop()
    assert sorted((o.endpoint, o.status, o.attempts) for o in outcomes) == [
        ("byname", "dead", 1), ("guarded", "dead", 1)
    ]  # fmt: skip
    assert all("refused" in o.last_error for o in outcomes)
    assert receiver.requests == []


async def test_a_stalled_endpoint_neither_blocks_the_others_nor_grows_without_bound(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    receiver.script("/slow", *[Reply(200, delay=1.5)] * 5)
    slow = endpoint(receiver, "slow", queue_size=1, concurrency=1, timeout=5.0)
    fast = endpoint(receiver, "fast")
    deliverer, _ = await started(sink, ch, clickhouse_database, slow, fast)
    alerts = [alert(40 + i) for i in range(3)]
    try:
        started_at = time.monotonic()
        futures = [deliverer.submit(alerts[0])]
        await receiver.wait_for(1, path="/slow")  # in flight: the queue is empty again
        futures += [deliverer.submit(a) for a in alerts[1:]]
        await receiver.wait_for(3, path="/fast", timeout=5)
        fast_done = time.monotonic() - started_at
        outcomes = [o for f in await asyncio.wait_for(asyncio.gather(*futures), 20) for o in f]
    finally:
        await deliverer.stop()
    assert fast_done < 1.5, "the fast endpoint waited for the slow one"
    slow_outcomes = sorted(
        (o.alert_id, o.status, o.last_error) for o in outcomes if o.endpoint == "slow"
    )
    # one in flight, one queued, the third finds the queue full and is given up at once
    assert [s for _, s, _ in slow_outcomes].count("delivered") == 2
    assert [(s, e) for _, s, e in slow_outcomes if s == "dead"] == [("dead", "queue full")]


async def test_the_ledger_keeps_a_delivered_alert_from_being_sent_again_after_a_restart(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    first, _ = await started(sink, ch, clickhouse_database, endpoint(receiver))
    try:
        assert [o.status for o in await settle(first, alert(50))] == ["delivered"]
    finally:
        await first.stop()
    second, ledger = await started(sink, ch, clickhouse_database, endpoint(receiver))
    try:
        assert ledger.settled(alert(50).id, "crm")
        assert await settle(second, alert(50)) == []
        assert [o.status for o in await settle(second, alert(51))] == ["delivered"]
    finally:
        await second.stop()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [alert(50).id, alert(51).id]


async def test_endpoint_filters_choose_who_gets_what(
    receiver: Receiver, sink: ClickHouseSink, ch: Any, clickhouse_database: str
) -> None:
    crm = endpoint(receiver, "crm", types=("customer.detractor",))
    chat_team = endpoint(receiver, "chat", segments=("channel:chat",))
    deliverer, _ = await started(sink, ch, clickhouse_database, crm, chat_team)
    try:
        outcomes = await settle(deliverer, alert(60), alert(61, "score.dropped"))
    finally:
        await deliverer.stop()
    assert [(o.alert_id, o.endpoint) for o in outcomes] == [(alert(60).id, "crm")]
