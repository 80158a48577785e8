"""The flow, on one screen. Loops only: each stateful partition's state and decisions
live in its owner (``streams.runtime.resolver``, ``partitions``, ``detector``).

    touchpoints.<channel>  --(record batches)-->  ingest          (any number of workers)
        parse, validate, normalise identifiers, correct clock skew, drop repeats of an
        event_id within the input partition (duplicate window, changelogged table)
          -> <app_id>-resolve (1 partition): accepted events as events_store rows
          -> touchpoints.dlq + ClickHouse dead_letters_store   (rejected, with reason)

    <app_id>-resolve  -->  resolve                            (one worker at a time)
        identity only: identifiers -> customer id, guards, merges, refusals; repeats of
        an event_id across every input partition; event-time watermarks
          -> <app_id>-customers (P partitions, keyed by customer id): the events, each
             with its customer id, identity changes, merges (hand over), erasures
          -> ClickHouse customer_aliases_store, identity_merges_store,
             customer_redirects_store, identity_refusals_store
          -> touchpoints.identity_merges
        control records on the same topic: erasure requests, progress ticks

    <app_id>-customers  -->  customers                        (any number of workers)
        per customer: journey, cases and their effort, answers, score tallies; merges
        hand a customer's state to the survivor's partition (on this same topic)
          -> ClickHouse events_store (with customer_id and journey stage),
             customer_360_store, scores_store, effort_store
          -> touchpoints.alerts (detractor answers, effort spikes)
          -> <app_id>-tallies (1 partition): each batch's tally deltas and progress

    <app_id>-tallies  -->  detect                             (one worker at a time)
        the rolling score view of every partition's tallies; score drops and recoveries
        looked at up to the event time every partition has completed
          -> touchpoints.alerts

Offsets are acked only once what a batch produced is durable: its records for other
topics acknowledged by the broker, its rows stored in ClickHouse, then its state's
changelog records (:meth:`~streams.runtime.owners.Owner.persist`). At-least-once end to
end, with idempotent sinks and replay-safe state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from mode import CrashingSupervisor

from schemas.alerts import Alert
from sinks.alerts import alert_row
from sinks.rows import dead_letter_row, duplicate_of, ledger_row
from streams.domain.dedup import Chunk
from streams.domain.detect import encode_tallies
from streams.domain.ingest import chunk_rows, triage
from streams.runtime.batching import RecordBatch
from streams.runtime.lifecycle import retry_until_ready, survives
from streams.runtime.owners import Fenced
from streams.runtime.resolver import RECORD_BYTES, encode_records

if TYPE_CHECKING:
    from streams.runtime.detector import Detector
    from streams.runtime.partitions import CustomerPartition
    from streams.runtime.resolver import ResolverOwner
    from streams.runtime.worker import Worker

__all__ = ["register_agents"]

logger = logging.getLogger(__name__)

#: How long a revocation of alerts partitions waits for their deliveries to settle.
ALERT_REVOKE_WAIT_S = 10.0
#: Control record of the resolve topic: send the resolver's progress to every partition.
TICK = b'{"control":"tick"}'
#: How often the worker holding the resolver asks it for progress (wall seconds).
TICK_INTERVAL_S = 1.0


def register_agents(worker: Worker) -> None:
    """Attach the agents, timers and rebalance hooks to ``worker.app``."""
    app = worker.app
    table = worker.dedup_table
    window = worker.window
    metrics = worker.metrics
    settings = worker.settings

    # an agent that raises has left its batch unacked while later ones may be acked:
    # the app must end (and a supervisor restart it), never restart the agent in place
    @app.agent(
        worker.input_topic,
        name="ingest",
        concurrency=1,
        supervisor_strategy=CrashingSupervisor,
    )
    async def ingest(stream: Any) -> None:
        """Validate, normalise and de-duplicate touchpoints; forward them to the resolver."""
        sink = await worker.wait_for_sink()
        logger.info("ingest agent running")
        acks_in_flight: dict[tuple[Any, int], asyncio.Task[None]] = {}
        async for event in stream.noack().events():
            batch: RecordBatch = event.value
            now = datetime.now(UTC)
            if not window.is_loaded(batch.partition):
                window.load(batch.partition, _chunks_of(table, batch.partition))

            result = triage(batch.source_records(), worker.rules, window, now)

            sealed = window.seal(batch.topic, batch.partition, int(now.timestamp() * 1000))
            if sealed.write is not None:
                table[sealed.write.key] = sealed.write.to_value()
            for key in sealed.delete:
                del table[key]
            # the ack waits for the broker to have the dead letters and the forwarded events
            forwarded: list[Any] = [
                await worker.dead_letters.publish(d) for d in result.dead_letters
            ]
            encoded = [e.row for e in result.accepted]  # serialised by ingest, per message
            for chunk in chunk_rows(encoded, RECORD_BYTES):
                forwarded.append(await _send(worker, worker.resolve_topic_name, chunk, 0))
            metrics.forwarded.inc(len(encoded))

            metrics.count_batch(
                batch.topic,
                consumed=len(batch),
                accepted=Counter(e.channel for e in result.accepted),
                duplicates=len(result.duplicates),
                dead_lettered=Counter(d.reason.value for d in result.dead_letters),
                flags=Counter(f for e in result.accepted for f in e.flags),
            )
            stored = asyncio.Event()
            outcomes = (len(result.accepted), len(result.duplicates), len(result.dead_letters))
            ledger = ledger_row(
                batch.topic,
                batch.partition,
                batch.first_offset,
                batch.last_offset,
                batch.settle_from,
                outcomes,
                now,
            )
            # the ledger row goes with the batch's dead letters and duplicates, before the
            # ack: every committed offset is covered by a stored row (streams.runtime.reconcile)
            await sink.add(
                {
                    "dead_letters_store": [dead_letter_row(d) for d in result.dead_letters],
                    "duplicates_store": [duplicate_of(e) for e in result.duplicates],
                    "ingest_ledger_store": [ledger],
                },
                on_stored=stored.set,
                token=f"{batch.topic}:{batch.partition}:{batch.first_offset}-{batch.last_offset}",
            )
            # acks of one partition stay in order: Faust's commit assumes they arrive so
            partition_key = (batch.topic, batch.partition)
            previous = acks_in_flight.get(partition_key)
            acks_in_flight[partition_key] = worker.spawn(
                _ack_when_durable(worker, event, forwarded, stored, previous)
            )

    @app.agent(
        worker.resolve_topic,
        name="resolve",
        concurrency=1,
        supervisor_strategy=CrashingSupervisor,
    )
    async def resolve(stream: Any) -> None:
        """Resolve every event's customer; route it to the customer's partition."""
        sink = await worker.wait_for_sink()
        logger.info("resolve agent running")
        async for event in stream.noack().events():
            batch: RecordBatch = event.value
            owner = worker.resolver()
            if owner is None:
                continue  # revoked: whoever holds the partition reads the batch again
            started = time.perf_counter()
            try:
                await _resolve_batch(worker, owner, sink, batch, event)
            except Fenced:
                logger.warning(
                    "resolve batch at offset %d dropped: partition revoked", batch.last_offset
                )
                continue
            metrics.stitch_lag.set(time.perf_counter() - started)

    @app.agent(
        worker.customers_topic,
        name="customers",
        concurrency=1,
        supervisor_strategy=CrashingSupervisor,
    )
    async def customers(stream: Any) -> None:
        """Journeys, cases, effort and answers of the customers of each partition."""
        sink = await worker.wait_for_sink()
        logger.info("customers agent running")
        async for event in stream.noack().events():
            batch: RecordBatch = event.value
            owner = worker.customer_partition(batch.partition)
            if owner is None:
                continue  # revoked: whoever holds the partition reads the batch again
            started = time.perf_counter()
            try:
                await _customers_batch(worker, owner, sink, batch, event)
            except Fenced:
                logger.warning(
                    "customers batch %d@%d dropped: partition revoked",
                    batch.partition,
                    batch.last_offset,
                )
                continue
            metrics.customer_batch_seconds.observe(time.perf_counter() - started)

    @app.agent(
        worker.tallies_topic,
        name="detect",
        concurrency=1,
        supervisor_strategy=CrashingSupervisor,
    )
    async def detect(stream: Any) -> None:
        """Sum every partition's tallies into the rolling view; look at the scores."""
        logger.info("score-drop detector running")
        async for event in stream.noack().events():
            batch: RecordBatch = event.value
            owner = worker.detector()
            if owner is None:
                continue
            try:
                await _look(worker, owner, [bytes(r.value) for r in batch.records], event.ack)
            except Fenced:
                continue

    @app.agent(
        worker.alerts_topic,
        name="alerts",
        concurrency=1,
        supervisor_strategy=CrashingSupervisor,
    )
    async def deliver_alerts(stream: Any) -> None:
        """Store every alert in ClickHouse and deliver it to the endpoints that take it;
        an alert is acked once it is stored and every delivery is settled."""
        sink = await worker.wait_for_sink()
        deliverer, _ledger = await worker.wait_for_delivery()
        logger.info("alert delivery agent running")
        async for event in stream.noack().events():
            message = event.message
            try:
                alert = Alert.from_json(event.value)
            except (ValueError, KeyError, TypeError) as exc:
                logger.error(
                    "not an alert at %s[%d]@%d, skipped: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                )
                event.ack()
                continue
            # delivery first: storing the alert may wait for room in the sink (the
            # customers agent's rows share it), which must not hold the webhook back
            settled = deliverer.submit(alert)
            in_flight = worker.alerts_in_flight.setdefault(message.partition, {})
            in_flight[alert.id] = settled
            stored = asyncio.Event()
            now_ms = int(time.time() * 1000)
            await sink.add(
                {"alerts_store": [alert_row(alert, deliverer.matching(alert), now_ms)]},
                on_stored=stored.set,
                token=f"alert:{alert.id}@{now_ms}",
            )
            worker.spawn(_ack_alert(event, stored, settled, in_flight, alert.id))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def take_partitions(sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Owners for the stateful partitions; the alert ledger for alerts partitions
        (in the background, retried: ClickHouse may be down, a rebalance must not wait)."""
        worker.on_assigned((tp.topic, tp.partition) for tp in assigned)
        if any(tp.topic == settings.alerts_topic for tp in assigned) and worker.ledger:
            ledger = worker.ledger

            async def load() -> None:
                settled = await retry_until_ready(
                    lambda: ledger.load(worker.clickhouse), "the alert ledger", 0
                )
                logger.info("alert ledger reloaded: %d settled deliveries", settled)

            worker.spawn(load())

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def give_partitions_back(sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A partition that moves takes its state along: its owner is fenced and dropped,
        ingest's duplicate window forgets it, its alert deliveries are let go."""
        window.forget({tp.partition for tp in revoked if tp.topic in worker.input_topic.topics})
        leaving = [
            future
            for tp in revoked
            if tp.topic == settings.alerts_topic
            for future in worker.alerts_in_flight.pop(tp.partition, {}).values()
        ]
        if leaving and worker.deliverer is not None:
            # the next owner sends what is not settled: stop retrying, let requests end
            _done, pending = await asyncio.wait(leaving, timeout=ALERT_REVOKE_WAIT_S)
            worker.deliverer.abandon(pending)
        await worker.on_revoked(
            [(tp.topic, tp.partition) for tp in revoked], "the partition was revoked"
        )

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def fence_on_stop(sender: Any, **kwargs: Any) -> None:
        """Streams are drained by now; nothing more may reach a changelog once this
        worker leaves the group."""
        await worker.fence_all("the worker is stopping")

    @app.timer(interval=TICK_INTERVAL_S)  # type: ignore[untyped-decorator]
    @survives("sending the resolver's progress")
    async def tick() -> None:
        """Event time completes as input partitions go quiet too, with no record to bring
        the resolver round: ask it (through its own topic, in order with the events)."""
        owner = worker.resolver()
        if owner is not None and owner.progress_due():
            await _send(worker, worker.resolve_topic_name, TICK, 0)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    @survives("looking at the scores")
    async def look_while_quiet() -> None:
        """Windows move on in wall-clock time: look at the scores with no new tallies."""
        owner = worker.detector()
        if owner is not None:
            await _look(worker, owner, [], None)

    @app.timer(interval=settings.journey_compact_interval_s)  # type: ignore[untyped-decorator]
    @survives("asking for compaction")
    async def request_compaction() -> None:
        """Ask each customers partition held here to compact its next slice of idle
        customers (through its own topic, in order with its items)."""
        compact = encode_records(None, [["c"]])[0]
        for owner in worker.customer_partitions():
            await _send(worker, worker.customers_topic_name, compact, owner.partition)


async def _send(worker: Worker, topic: str, value: bytes, partition: int | None) -> Any:
    return await worker.app.producer.send(topic, None, value, partition, None, None)


async def _resolve_batch(
    worker: Worker, owner: ResolverOwner, sink: Any, batch: RecordBatch, event: Any
) -> None:
    """Resolve one batch of the resolve topic: event records in segments, control
    records (erasure, tick) between them; the last write acks the batch."""
    segment: list[tuple[int, list[Any]]] = []
    for record in batch.records:
        document = orjson.loads(record.value)
        if isinstance(document, list):
            segment.append((int(record.offset), document))
            continue
        # a control record acts between the events before and after it
        if segment:
            await _resolve_segment(worker, owner, sink, segment, None)
            segment = []
        control = document.get("control")
        if control == "erase":
            await _resolve_erase(worker, owner, sink, document, int(record.offset))
        elif control == "tick":
            _complete_to, records = owner.progress()
            sends = [
                await _send(worker, worker.customers_topic_name, value, p)
                for p, values in records.items()
                for value in values
            ]
            owner.persist([], sends=sends)
        else:
            logger.error("unknown control record at %s@%d, skipped", batch.topic, record.offset)
    await _resolve_segment(worker, owner, sink, segment, event.ack)


async def _resolve_segment(
    worker: Worker,
    owner: ResolverOwner,
    sink: Any,
    records: list[tuple[int, list[Any]]],
    ack: Any,
) -> None:
    """Resolve consecutive event records, route their items, store identity rows, and
    persist the state once all of that is durable; then ``ack`` (if given)."""
    metrics = worker.metrics
    now_ms = int(time.time() * 1000)
    resolved = owner.resolve(records, now_ms)
    out = resolved.output
    sends: list[Awaitable[Any]] = []
    for partition, values in resolved.records.items():
        for value in values:
            sends.append(await _send(worker, worker.customers_topic_name, value, partition))
    for merge in out.merges:
        sends.append(
            await worker.app.producer.send(
                worker.settings.merges_topic,
                merge.merged_from.encode(),
                orjson.dumps(merge),
                None,
                None,
                None,
            )
        )
        metrics.merges.labels(merge.reason).inc()
    rows_stored = asyncio.Event()
    owner.persist(
        resolved.state, after=rows_stored, sends=sends, then=ack if ack is not None else _no_op
    )
    for reason, n in out.refusals.items():
        metrics.refusals.labels(reason).inc(n)
    metrics.late.inc(out.late)
    if resolved.complete_to is not None:
        metrics.watermark.set(resolved.complete_to / 1000)
    metrics.stitched.inc(sum(len(rows) for _, rows in records))
    metrics.stitch_replayed.inc(out.replayed)
    metrics.stitch_duplicates.inc(out.duplicates)
    first = records[0][0] if records else 0
    last = records[-1][0] if records else 0
    await sink.add(out.rows, on_stored=rows_stored.set, token=f"resolve:{first}-{last}@{now_ms}")


async def _resolve_erase(
    worker: Worker, owner: ResolverOwner, sink: Any, request: dict[str, Any], offset: int
) -> None:
    """Forget the customer's identifiers here, then tell its partition, which deletes its
    state and its rows in ClickHouse and records the erasure."""
    state, item, partition = owner.erase(request)
    if item is None:
        # nobody holds the identifier: nothing to delete, the erasure is recorded as done
        await _erase_rows(
            worker, sink, {**request, "ids": [], "removed": 0}, int(time.time() * 1000)
        )
        return
    record = owner.erase_record(item, offset)
    sends = [await _send(worker, worker.customers_topic_name, record, partition)]
    await owner.persist(state, sends=sends)


async def _customers_batch(
    worker: Worker, owner: CustomerPartition, sink: Any, batch: RecordBatch, event: Any
) -> None:
    """Apply one batch of a customers partition and persist what it produced."""
    metrics = worker.metrics
    now_ms = int(time.time() * 1000)
    records = [(int(r.offset), orjson.loads(r.value)) for r in batch.records]
    processed = owner.process(records, now_ms)
    out = processed.output
    sends: list[Awaitable[Any]] = []
    for partition, item in out.handovers:
        value = encode_records(None, [item])[0]
        sends.append(await _send(worker, worker.customers_topic_name, value, partition))
    sends += await _publish_alerts(worker, processed.alerts)
    if out.tallies or out.complete_to is not None:
        value = encode_tallies(owner.partition, out.complete_to, out.tallies)
        sends.append(await _send(worker, worker.tallies_topic_name, value, 0))
    rows_stored = asyncio.Event()
    if out.erasures:
        # the state's tombstones first, then the rows: a replay re-deletes, never restores
        await sink.add(
            out.rows,
            on_stored=rows_stored.set,
            token=f"customers:{owner.partition}:{batch.first_offset}@{now_ms}",
        )
        await owner.persist(processed.state, after=rows_stored, sends=sends)
        for request in out.erasures:
            await _erase_rows(worker, sink, request, now_ms)
        event.ack()
    else:
        owner.persist(processed.state, after=rows_stored, sends=sends, then=event.ack)
        await sink.add(
            out.rows,
            on_stored=rows_stored.set,
            # names this attempt: a replay must replace the rows it wrote, never be
            # dropped as a repeat of an earlier insert
            token=f"customers:{owner.partition}:{batch.first_offset}-{batch.last_offset}@{now_ms}",
        )
    metrics.customer_events.inc(out.applied)
    metrics.handovers.labels("sent").inc(out.handed_over)
    metrics.handovers.labels("combined").inc(out.combined)
    metrics.handovers.labels("forwarded").inc(out.forwarded)
    metrics.compacted.inc(out.compacted)


async def _erase_rows(worker: Worker, sink: Any, request: dict[str, Any], now_ms: int) -> None:
    ids = [i for i in request.get("ids", ()) if i]
    if ids:
        await sink.erase(ids)
    done = asyncio.Event()
    await sink.add(
        {
            "erasures_store": [
                (
                    request["request_id"],
                    request["kind"],
                    ids,
                    request.get("removed", 0),
                    request["requested_at"],
                    now_ms,
                )
            ]
        },
        on_stored=done.set,
        token=f"erase:{request['request_id']}",
    )
    await done.wait()
    worker.metrics.erasures.inc()
    logger.info(
        "erasure %s: %d customer ids, %d identifiers removed",
        request["request_id"],
        len(ids),
        request.get("removed", 0),
    )


async def _look(worker: Worker, owner: Detector, values: Sequence[bytes], ack: Any) -> None:
    """Add tallies to the rolling view, look at the scores, publish what fires."""
    _added, alerts, state = owner.take(values)
    if not state and not alerts and ack is None:
        return
    sends = await _publish_alerts(worker, alerts)
    owner.persist(state, sends=sends, then=ack if ack is not None else _no_op)


async def _publish_alerts(worker: Worker, alerts: Sequence[Alert]) -> list[Awaitable[Any]]:
    """Send alerts to the alerts topic (key: the alert id), where the alerts agent stores
    and delivers them; return the sends' futures."""
    sends = []
    for alert in alerts:
        sends.append(
            await worker.app.producer.send(
                worker.settings.alerts_topic, alert.id.encode(), alert.to_json(), None, None, None
            )
        )
        worker.metrics.alerts_fired.labels(alert.type).inc()
    return sends


def _no_op() -> None:
    return None


async def _ack_alert(
    event: Any,
    stored: asyncio.Event,
    settled: asyncio.Future[Any],
    in_flight: dict[str, asyncio.Future[Any]],
    alert_id: str,
) -> None:
    try:
        await stored.wait()
        await settled
    except asyncio.CancelledError:  # abandoned on revocation: the next owner sends it
        return
    finally:
        if in_flight.get(alert_id) is settled:
            del in_flight[alert_id]
    event.ack()


async def _ack_when_durable(
    worker: Worker,
    event: Any,
    forwarded: list[Any],
    stored: asyncio.Event,
    previous: asyncio.Task[None] | None,
) -> None:
    if previous is not None:
        await asyncio.wait([previous])
    try:
        await asyncio.gather(*forwarded)
    except Exception as exc:  # the producer gave up: committing now would lose events
        logger.critical("forwarding or dead-lettering failed, stopping: %s", exc)
        await worker.app.crash(exc)
        return
    await stored.wait()
    event.ack()


def _chunks_of(table: Any, partition: int) -> list[Chunk]:
    prefix = f"{partition}/"
    return [
        Chunk.from_value(key, value)
        for key, value in table.items()
        if isinstance(key, str) and key.startswith(prefix) and value
    ]
