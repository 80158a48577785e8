"""Identity stitching end to end: 4 partitions, 2 workers, one restarted mid-stream.

What analysts read in ClickHouse must equal a reference computed from the raw events:
the grouping of identifiers into customers equals the connected components (where no
guard applies), the guards hold where they do, every event is counted once in its
customer's journey, and every event row resolves to a current customer.
"""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import orjson
import pytest

from tests.integration.test_worker_end_to_end import (
    Stack,
    accounting,
    ch,
    channel_topic,
    create_topics,
    produce,
    scalar,
    settled,
    stack,
    started,
    wait_for,
)
from tests.test_identity import UnionFind

__all__ = ["ch", "stack"]  # fixtures used by name

pytestmark = pytest.mark.integration


def free_people_events(rng: random.Random, people: int) -> list[dict[str, Any]]:
    """Touchpoints where no guard can trigger: each person's identifiers, shown a few at a
    time, never more than the limits allow and never shared between people."""
    events = []
    for p in range(people):
        ids = [
            ("email", f"p{p}@free.example"),
            ("anonymous_id", f"free-anon-{p}-a"),
            ("anonymous_id", f"free-anon-{p}-b"),
            ("device_id", f"free-dev-{p}"),
            ("x_loyalty_card", f"free-card-{p}"),
        ]
        for n in range(rng.randrange(3, 12)):
            shown = dict(rng.sample(ids[:1] + ids[1:], rng.randrange(1, 3)))
            events.append(
                {
                    "event_id": f"free-{p}-{n}",
                    "occurred_at": int(time.time() * 1000) - rng.randrange(86_400_000),
                    "type": rng.choice(("page_view", "login", "purchase", "app_open")),
                    "identifiers": shown,
                }
            )
    return events


def shared_tablet_events(households: int) -> list[dict[str, Any]]:
    """Two accounts per household share one tablet: the unique account_id must keep them
    apart, and the refusal must be recorded."""
    events = []
    now = int(time.time() * 1000)
    for h in range(households):
        for member in ("a", "b"):
            account = f"acc-{h}-{member}"
            events.append(
                {
                    "event_id": f"tablet-{h}-{member}-login",
                    "occurred_at": now - 3_600_000,
                    "type": "login",
                    "identifiers": {"account_id": account, "device_id": f"tablet-{h}"},
                }
            )
            events.append(
                {
                    "event_id": f"tablet-{h}-{member}-mail",
                    "occurred_at": now - 1_800_000,
                    "type": "email_open",
                    "identifiers": {"account_id": account, "email": f"{account}@home.example"},
                }
            )
    return events


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_two_workers_and_a_restart_stitch_exactly_the_connected_components(
    stack: Stack, ch: Any, stop: signal.Signals
) -> None:
    rng = random.Random(7)
    free = free_people_events(rng, 300)
    tablet = shared_tablet_events(20)
    events = free + tablet
    rng.shuffle(events)
    topics = [channel_topic(stack, c) for c in ("web", "mobile_app", "email")]
    await create_topics(stack, topics)
    messages = [(topics[i % len(topics)], None, orjson.dumps(e), []) for i, e in enumerate(events)]
    half = len(messages) // 2
    db = stack.database

    w1 = await started(stack.start_worker("w1", state=stack.tmp / "w1"))
    w2 = await started(stack.start_worker("w2", state=stack.tmp / "w2"))
    later: list[Any] = []
    try:
        await produce(stack.bootstrap, messages[:half], "zstd")

        async def some_stitched() -> bool:
            return bool(await scalar(ch, f"SELECT count() FROM {db}.events_store") > half // 4)

        await wait_for(some_stitched, w1, what="the first events to be stitched")
        w1.stop(stop)  # restarted mid-stream: a rolling deploy, or a crash
        await produce(stack.bootstrap, messages[half:], "zstd")
        w1 = stack.start_worker("w1-again", state=stack.tmp / "w1")

        async def all_stored() -> bool:
            return bool(await scalar(ch, f"SELECT count() FROM {db}.events") == len(events))

        await wait_for(all_stored, w2, timeout=60, what="every event stitched and stored")

        async def journeys_complete() -> bool:
            total = await scalar(ch, f"SELECT sum(touchpoints) FROM {db}.customer_360")
            return bool(total == len(events))

        await wait_for(journeys_complete, w2, timeout=60, what="every journey to be stored")
        await settled(stack, topics, w2)  # and the rows of every other table

        # -- the grouping equals the connected components where no guard applies --------
        reference = UnionFind()
        for e in free:
            reference.union([f"{k}:{v}" for k, v in e["identifiers"].items()])
        rows = (
            await ch.query(
                f"SELECT customer_id, groupArray(concat(identifier_kind, ':', identifier_value)) "
                f"FROM {db}.customer_aliases GROUP BY customer_id"
            )
        ).result_rows
        stitched = {frozenset(nodes) for _, nodes in rows}
        free_groups = {g for g in stitched if any("free" in n for n in g)}
        assert free_groups == reference.groups()

        # -- guards: no customer holds two accounts; every refusal is recorded -------------
        two_accounts = await scalar(
            ch,
            f"SELECT count() FROM {db}.customer_360 WHERE length(identifiers['account_id']) > 1",
        )
        assert two_accounts == 0
        refused = await scalar(
            ch,
            f"SELECT count() FROM {db}.identity_refusals WHERE reason = 'unique:account_id'",
        )
        assert refused == 20  # the second account of each household to show the tablet
        for h in range(20):
            owners = await scalar(
                ch,
                f"SELECT uniqExact(customer_id) FROM {db}.customer_aliases "
                f"WHERE identifier_value IN ('acc-{h}-a', 'acc-{h}-b')",
            )
            assert owners == 2

        # -- every identifier belongs to exactly one customer, and the views agree --------
        distinct_nodes = {f"{k}:{v}" for e in events for k, v in e["identifiers"].items()}
        aliases = (
            await ch.query(
                f"SELECT concat(identifier_kind, ':', identifier_value) FROM {db}.customer_aliases"
            )
        ).result_rows
        assert sorted(node for (node,) in aliases) == sorted(distinct_nodes)
        from_360 = await scalar(
            ch, f"SELECT sum(length(arrayFlatten(mapValues(identifiers)))) FROM {db}.customer_360"
        )
        assert from_360 == len(distinct_nodes)

        # -- each event counted once, in the journey of the customer its row resolves to --
        mismatched = await scalar(
            ch,
            f"SELECT count() FROM (SELECT customer_id, count() AS n FROM {db}.events "
            f"GROUP BY customer_id) AS e FULL OUTER JOIN {db}.customer_360 AS c "
            f"ON e.customer_id = c.customer_id WHERE e.n != c.touchpoints",
        )
        assert mismatched == 0
        merges = await scalar(ch, f"SELECT count() FROM {db}.identity_merges")
        assert merges > 0  # anonymous ids seen alone first, then with the e-mail

        for worker in (w1, w2):
            if worker.proc.poll() is None:
                assert (await accounting(await started(worker)))["balanced"]

        # -- a new machine rebuilds the identity state from the changelog alone -----------
        w1.stop()
        w2.stop()
        w3 = stack.start_worker("w3", state=stack.tmp / "w3-fresh")
        later.append(w3)
        await started(w3)
        owners = dict(
            (
                await ch.query(
                    f"SELECT identifier_value, customer_id FROM {db}.customer_aliases "
                    f"WHERE identifier_kind = 'email' AND identifier_value LIKE '%@free.example'"
                )
            ).result_rows
        )
        returning = [
            {
                "event_id": f"back-{p}",
                "occurred_at": int(time.time() * 1000),
                "type": "login",
                "identifiers": {"email": f"p{p}@free.example", "anonymous_id": f"back-anon-{p}"},
            }
            for p in range(0, 300, 10)
            if f"p{p}@free.example" in owners  # some people never showed their e-mail
        ]
        assert len(returning) > 10
        await produce(
            stack.bootstrap, [(topics[0], None, orjson.dumps(e), []) for e in returning], "zstd"
        )

        async def returning_stored() -> bool:
            total = await scalar(ch, f"SELECT count() FROM {db}.events")
            return bool(total == len(events) + len(returning))

        await wait_for(returning_stored, w3, timeout=60, what="the returning customers' events")
        await settled(stack, topics, w3)
        resolved = dict(
            (
                await ch.query(
                    f"SELECT event_id, customer_id FROM {db}.events WHERE event_id LIKE 'back-%'"
                )
            ).result_rows
        )
        assert resolved == {
            e["event_id"]: owners[e["identifiers"]["email"]] for e in returning
        }  # the customers the old workers stitched, not new ones
        assert await scalar(ch, f"SELECT count() FROM {db}.identity_merges") == merges
    finally:
        for worker in (w1, w2, *later):
            worker.stop()
