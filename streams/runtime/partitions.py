"""A customer partition's owner: its customers, cases, markers, high-water mark, versions.

The customers table is co-partitioned with the customers topic. Keys of partition
``p``: ``c/<customer_id>`` (:class:`~schemas.customer.Customer`), ``k/<customer_id>/
<case_id>`` (the case's contacts), ``g/<customer_id>`` (gone: merged into whom, or
erased, at which sequence number), ``f/<p>/<customer_id>`` (the event time at which the
customer's follow-up needs the resolver's progress folded in, see
:class:`~streams.domain.followup.FollowupIndex`) and ``p/<p>`` (the partition's
high-water mark of resolver items, the version of its last rows and the progress
folded).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.alert_rules import AlertRules
from schemas.alerts import Alert
from schemas.customer import Customer, customer_from_json
from streams.domain.alerts import (
    at_risk_alert,
    detractor_alert,
    effort_spike_alert,
    followup_overdue_alert,
)
from streams.domain.customers import (
    CustomerBook,
    Gone,
    PartitionOutput,
    PartitionRules,
    batch_version,
    process_records,
    state_writes,
)
from streams.domain.effort import CaseBook
from streams.domain.followup import FollowupIndex
from streams.domain.journey import compact
from streams.runtime.owners import Owner

__all__ = ["CustomerPartition", "Processed"]

#: Customer alert ids a partition remembers having sent (repeats are not resent).
ALERT_MEMORY = 20_000
#: Customers looked at per compaction request.
COMPACT_SLICE = 2000


@dataclass
class Processed:
    """A processed batch: the output, the alerts it fires and the state to persist."""

    output: PartitionOutput
    alerts: list[Alert]
    state: list[tuple[str, bytes | None]]


class CustomerPartition(Owner):
    """One customers partition on this worker (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        rules: PartitionRules,
        alert_rules: AlertRules,
        idle_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rules = rules
        self.alert_rules = alert_rules
        self.idle_s = idle_s
        self.key = f"p/{self.partition}"
        self.index_prefix = f"f/{self.partition}/"
        self.followups = FollowupIndex()
        self.hwm: int | None = None
        self.version = 0
        #: customer alerts sent recently (insertion order; the oldest are forgotten)
        self.alerts_sent: dict[str, None] = {}
        self._compaction: Iterator[str] | None = None

    def _load(self) -> int:
        if self.hwm is None:
            value = self.store.get(self.key)
            mark = orjson.loads(value) if value else [-1, 0]
            self.hwm, self.version = mark[0], mark[1]
            prefix = self.index_prefix
            entries = []
            for key in self.store.keys(prefix):
                at = self.store.get(key)
                if at is not None:
                    entries.append((key[len(prefix) :], orjson.loads(at)))
            self.followups = FollowupIndex(entries, mark[2] if len(mark) > 2 else 0)
        return self.hwm

    def process(self, records: Sequence[tuple[int, Any]], now_ms: int) -> Processed:
        """Apply consecutive records (``(offset, [complete_to, items])``); nothing is
        written. The partition's high-water mark and version move on with the batch."""
        self.check()
        hwm = self._load()
        store = self.store

        def read_customer(customer_id: str) -> Customer | None:
            value = store.get(f"c/{customer_id}")
            return None if value is None else customer_from_json(value)

        def read_gone(customer_id: str) -> Gone | None:
            value = store.get(f"g/{customer_id}")
            return None if value is None else tuple(orjson.loads(value))

        def read_case(customer_id: str, case_id: str) -> list[Any] | None:
            value = store.get(f"k/{customer_id}/{case_id}")
            return None if value is None else list(orjson.loads(value))

        book = CustomerBook(read_customer, read_gone)
        cases = CaseBook(self.rules.effort, read_case)
        version = batch_version(records, self.version, now_ms)
        out, hwm = process_records(
            records,
            book,
            cases,
            self.rules,
            hwm,
            version,
            now_ms,
            compact=self._compact_slice,
            followups=self.followups,
        )
        self.hwm, self.version = hwm, version
        # in the order that keeps every prefix of the writes replayable
        state = state_writes(book, cases, self.key, hwm, version, self.followups, self.index_prefix)
        return Processed(out, self._alerts(out, book, cases, now_ms), state)

    def _alerts(
        self, out: PartitionOutput, book: CustomerBook, cases: CaseBook, now_ms: int
    ) -> list[Alert]:
        """Detractor answers, cases whose effort crossed the threshold, follow-ups due,
        and customers whose detractor risk crossed the at-risk threshold."""
        rules = self.alert_rules
        fired: list[Alert] = []
        if rules.detractor.enabled:
            for answer in out.answers:
                customer = book.customer(answer.customer_id)
                points = {}
                if customer is not None:
                    for case_id in customer.journey.open_cases:
                        points[case_id] = sum(
                            c.points for c in cases.contacts(customer.customer_id, case_id)
                        )
                alert = detractor_alert(rules.detractor, answer, customer, points, now_ms)
                if alert is not None:
                    fired.append(alert)
        if rules.effort_spike.enabled:
            for (customer_id, case_id), segments in out.cases.items():
                alert = effort_spike_alert(
                    rules.effort_spike,
                    customer_id,
                    case_id,
                    cases.contacts(customer_id, case_id),
                    segments,
                    now_ms,
                )
                if alert is not None:
                    fired.append(alert)
        if rules.at_risk.enabled:
            for r in out.at_risk:
                fired.append(
                    at_risk_alert(
                        rules.at_risk,
                        r.customer_id,
                        r.cause,
                        r.at,
                        r.p,
                        r.band,
                        r.model,
                        r.reasons,
                        book.customer(r.customer_id),
                        now_ms,
                    )
                )
        if rules.followup_overdue.enabled:
            fired += [followup_overdue_alert(c, f, now_ms) for c, f in out.overdue]
        sent = self.alerts_sent
        fresh = [a for a in fired if a.id not in sent]
        for alert in fresh:
            sent[alert.id] = None
        while len(sent) > ALERT_MEMORY:
            del sent[next(iter(sent))]
        return fresh

    def _compact_slice(self, book: CustomerBook, now_ms: int) -> int:
        """Compact the journeys of the next slice of idle customers (in key order)."""
        if self._compaction is None:
            self._compaction = self.store.keys("c/")
        idle_before = now_ms - int(self.idle_s * 1000)
        compacted = 0
        for _ in range(COMPACT_SLICE):
            key = next(self._compaction, None)
            if key is None:
                self._compaction = None
                break
            customer = book.customer(key[2:])
            if customer is None or customer.journey.last_seen >= idle_before:
                continue
            if customer.journey.recent or customer.journey.closed_cases:
                compact(customer.journey)
                book.dirty[customer.customer_id] = None
                compacted += 1
        return compacted
