"""Alerts in ClickHouse: the ``alerts_store`` row of an alert, and the delivery ledger.

The ledger is ``alert_deliveries_store``: one row per alert, endpoint and outcome. The
worker that delivers a partition of the alerts topic reads the settled pairs (delivered
or dead) when it gets the partition, and writes each outcome through the sink; a settled
one is stored before the alert is acknowledged, so the next owner never sends it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from schemas.alerts import Alert
from schemas.clickhouse import quote_identifier
from sinks.clickhouse import ClickHouseSink
from sinks.webhooks import Outcome

__all__ = ["ClickHouseLedger", "alert_row"]

_RANK = {"retrying": 0, "dead": 1, "delivered": 2}


def alert_row(alert: Alert, endpoints: Sequence[str], version: int) -> tuple[Any, ...]:
    """The ``alerts_store`` row (``ALERT_COLUMNS`` order)."""
    return (
        alert.id,
        alert.type,
        alert.subject,
        alert.customer_id,
        list(alert.segments),
        alert.fired_at,
        alert.body().decode(),
        list(endpoints),
        version,
    )


class ClickHouseLedger:
    """The delivery ledger, read from and written to ClickHouse, with the settled pairs
    held in memory."""

    def __init__(
        self, sink: ClickHouseSink, database: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._sink = sink
        self._database = quote_identifier(database)
        self._clock = clock
        self._settled: set[tuple[str, str]] = set()

    async def load(self, client: Any, days: int = 30) -> int:
        """Read the pairs settled in the last ``days``; returns how many."""
        result = await client.query(
            f"SELECT alert_id, endpoint FROM {self._database}.alert_deliveries_store FINAL "
            "WHERE status IN ('delivered', 'dead') "
            "AND updated_at >= now64(3) - toIntervalDay({days:UInt32})",
            parameters={"days": days},
        )
        self._settled.update((str(a), str(e)) for a, e in result.result_rows)
        return len(result.result_rows)

    def settled(self, alert_id: str, endpoint: str) -> bool:
        return (alert_id, endpoint) in self._settled

    async def record(self, outcome: Outcome) -> None:
        final = outcome.status != "retrying"
        if final:
            self._settled.add((outcome.alert_id, outcome.endpoint))
        now = int(self._clock() * 1000)
        row = (
            outcome.alert_id,
            outcome.endpoint,
            outcome.status,
            outcome.attempts,
            outcome.last_status,
            outcome.last_error[:1000],
            now,
            now * 4 + _RANK[outcome.status],
        )
        stored = asyncio.Event()
        await self._sink.add(
            {"alert_deliveries_store": [row]},
            on_stored=stored.set,
            token=f"delivery:{outcome.alert_id}:{outcome.endpoint}:{outcome.attempts}:{now}",
        )
        if final:
            await stored.wait()
