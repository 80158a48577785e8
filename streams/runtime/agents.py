"""The flow, on one screen.

    touchpoints.<channel>  --(record batches)-->  ingest          (any number of workers)
        ingest: parse, validate, normalise identifiers, correct clock skew,
                drop repeats of an event_id (duplicate window, changelogged table)
          -> <app_id>-stitch (1 partition): accepted events as events_store rows
          -> touchpoints.dlq + ClickHouse dead_letters_store   (rejected, with reason)

    <app_id>-stitch  -->  stitch                              (one worker at a time)
        stitch: identity (identifiers -> customer, guards, merges), journey state, case
                contacts and event-time watermarks in the identity table (RocksDB,
                changelogged), one write per touched key
          -> ClickHouse events_store (with customer_id and journey stage), customer_360_store,
             customer_aliases_store, identity_merges_store, customer_redirects_store,
             identity_refusals_store, scores_store (survey tallies per stitch record),
             effort_store (one row per assisted contact, see streams/effort.py)
          -> touchpoints.identity_merges
        control records on the same topic: erasure requests, idle-customer compaction

Offsets are acked only once what a batch produced is durable: ingest waits for its
stitch records to be acknowledged by Kafka and its dead letters to be in ClickHouse;
stitch waits for its rows to be in ClickHouse. Faust flushes the producer (dead
letters, merges, changelogs) before it commits: at-least-once end to end, with
idempotent sinks and replay-safe state (see ``streams/identity.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from mode import CrashingSupervisor

from schemas.alerts import Alert
from schemas.customer import customer_from_json, customer_to_json
from sinks.alerts import alert_row
from sinks.rows import dead_letter_row, duplicate_of, ledger_row
from streams.domain.alerts import DropDetector, detractor_alert, effort_spike_alert, looks
from streams.domain.dedup import Chunk
from streams.domain.effort import CaseBook
from streams.domain.identity import Stitcher, node_key
from streams.domain.ingest import triage
from streams.domain.journey import compact
from streams.domain.scores import Watermarks
from streams.domain.stitching import StitchOutput, chunk_rows, stitch_rows
from streams.runtime.batching import RecordBatch
from streams.runtime.lifecycle import retry_until_ready, survives
from streams.runtime.state import send_changelog, write_local

if TYPE_CHECKING:
    from streams.runtime.worker import Worker

__all__ = ["register_agents"]

logger = logging.getLogger(__name__)

#: Largest stitch record (bytes of JSON); below Kafka's default message.max.bytes of 1 MiB.
STITCH_RECORD_BYTES = 512 * 1024
#: Identity-table key of the version of the last effort rows written.
EFFORT_VERSION_KEY = "w/effort_version"
#: Identity-table key of the input partitions' watermarks.
WATERMARKS_KEY = "w/event_time"
#: Identity-table key of the score-drop detector's states (hysteresis, cooldowns).
ALERT_STATE_KEY = "w/alert_state"
#: How long a revocation of alerts partitions waits for their deliveries to settle.
ALERT_REVOKE_WAIT_S = 10.0
#: How often (wall clock, seconds) every series of the rolling view is checked for drops.
FULL_DROP_CHECK_S = 60.0
#: Looks at the scores per window length of event time (every 30 minutes for a day).
LOOKS_PER_WINDOW = 48
#: At most this many looks at once (a clock far ahead must not cost one per step).
MAX_LOOKS = 1000
#: Customer alert ids the stitch agent remembers having sent (repeats are not resent).
ALERT_MEMORY = 100_000
#: Customers looked at per compaction tick.
COMPACT_SLICE = 2000


def register_agents(worker: Worker) -> None:
    """Attach the agents to ``worker.app``."""
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
        """Validate, normalise and de-duplicate touchpoints; forward them to stitching."""
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
            for chunk in chunk_rows(encoded, STITCH_RECORD_BYTES):
                forwarded.append(
                    await app.producer.send(worker.stitch_topic_name, None, chunk, 0, None, None)
                )
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
        worker.stitch_topic,
        name="stitch",
        concurrency=1,
        supervisor_strategy=CrashingSupervisor,
    )
    async def stitch(stream: Any) -> None:
        """Stitch identifiers into customers, keep their journeys, store the 360 view."""
        sink = await worker.wait_for_sink()
        logger.info("stitch agent running")
        compaction: Iterator[Any] | None = None
        async for event in stream.noack().events():
            batch: RecordBatch = event.value
            started = time.perf_counter()
            epoch = worker.stitch_epoch
            try:
                compaction = await _stitch_batch(worker, sink, batch, event, epoch, compaction)
            except Fenced:
                # revoked while it was stitched: the next owner stitches it from the
                # state in the changelog; nothing of it was written or acked here
                logger.warning(
                    "stitch batch at offset %d dropped: partition revoked", batch.last_offset
                )
                compaction = None
                continue
            metrics.stitch_lag.set(time.perf_counter() - started)

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
            # stitch agent's rows share it), which must not hold the webhook back
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
    async def reload_ledger(sender: Any, assigned: Any, **kwargs: Any) -> None:
        """A worker that gets alerts partitions reads what the others settled (in the
        background, retried: ClickHouse may be down, and a rebalance must not wait)."""
        if any(tp.topic == settings.alerts_topic for tp in assigned) and worker.ledger:
            ledger = worker.ledger

            async def load() -> None:
                settled = await retry_until_ready(
                    lambda: ledger.load(worker.clickhouse), "the alert ledger", 0
                )
                logger.info("alert ledger reloaded: %d settled deliveries", settled)

            worker.spawn(load())

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def fence_on_stop(sender: Any, **kwargs: Any) -> None:
        """Streams are drained by now; nothing more may reach the changelog once this
        worker leaves the group."""
        await worker.fence_stitch("the worker is stopping")

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    @survives("looking at the scores")
    async def look_while_quiet() -> None:
        """Event time is complete further once partitions go quiet, with no record to
        bring the stitch agent round: look at the scores then too (on the stitch owner)."""
        if worker.watermarks is None or not settings.alerts.score_drop.enabled:
            return
        await _publish_alerts(worker, look_at_scores(worker, int(time.time() * 1000)))

    @app.timer(interval=settings.journey_compact_interval_s)  # type: ignore[untyped-decorator]
    @survives("asking for compaction")
    async def request_compaction() -> None:
        """Ask the stitch agent to look at the next slice of customers for idleness."""
        await app.producer.send(
            worker.stitch_topic_name, None, b'{"control":"compact"}', 0, None, None
        )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A partition that moves to another worker takes its duplicate window along."""
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
        if any(tp.topic == worker.stitch_topic_name for tp in revoked):
            await worker.fence_stitch("the stitch partition was revoked")
            worker.stitch_window.forget([0])
            worker.watermarks = None
            worker.effort_version = None
            worker.rolling.clear()  # the worker that takes over keeps its own
            worker.drop_detector = None
            worker.last_look = None
            worker.alert_series.clear()
            worker.alerts_sent.clear()


def _no_op() -> None:
    return None


class Fenced(Exception):
    """The stitch partition was revoked while a batch was being stitched."""


async def _stitch_batch(
    worker: Worker,
    sink: Any,
    batch: RecordBatch,
    event: Any,
    epoch: int,
    compaction: Iterator[Any] | None,
) -> Iterator[Any] | None:
    """Stitch one batch of the stitch topic: event records in segments, control records
    (erasure, compaction) between them. Raises :class:`Fenced` when the partition moved
    away meanwhile (before anything of the batch was written)."""
    segment: list[tuple[int, list[Any]]] = []
    for record in batch.records:
        document = orjson.loads(record.value)
        if isinstance(document, list):
            segment.append((int(record.offset), document))
            continue
        # a control record acts between the events before and after it
        await _stitch_segment(worker, sink, segment, batch, _no_op, epoch)
        segment = []
        stitcher = _stitcher(worker)
        now_ms = int(time.time() * 1000)
        if document.get("control") == "erase":
            await _erase(worker, stitcher, document, sink, now_ms, epoch)
        elif document.get("control") == "compact":
            compaction = compaction or iter(worker.identity_table.keys())
            try:
                compaction = _compact_slice(worker, stitcher, compaction, now_ms)
            except Exception:  # the store changed under the scan (rebalance)
                logger.exception("compaction scan interrupted; starting over")
                compaction = None
        _write_state(worker, stitcher, epoch)
    await _stitch_segment(worker, sink, segment, batch, event.ack, epoch)
    return compaction


def _stitcher(worker: Worker) -> Stitcher:
    identity = worker.identity_table
    return Stitcher(
        worker.identity_rules,
        worker.journey_rules,
        lambda key: _read_node(identity, key),
        lambda customer_id: _read_customer(identity, customer_id),
    )


async def _stitch_segment(
    worker: Worker,
    sink: Any,
    records: list[tuple[int, list[Any]]],
    batch: RecordBatch,
    on_stored: Any,
    epoch: int,
) -> None:
    """Stitch consecutive event records, persist the state, publish merges, store rows.

    Raises :class:`Fenced`, having written nothing, when the partition was revoked since
    the batch began (``epoch``)."""
    _check_fence(worker, epoch)
    metrics = worker.metrics
    stitcher = _stitcher(worker)
    identity = worker.identity_table
    window = worker.stitch_window
    if not window.is_loaded(0):
        window.load(0, _stitch_chunks(identity))
    if worker.watermarks is None:
        worker.watermarks = _load_watermarks(identity, worker.settings.grace_s)
    watermarks = worker.watermarks
    last = records[-1][0] if records else batch.last_offset
    now_ms = int(time.time() * 1000)
    if worker.effort_version is None:
        stored = identity.get(EFFORT_VERSION_KEY)
        worker.effort_version = int(stored) if stored else 0
    worker.effort_version = version = max(now_ms, worker.effort_version + 1)
    cases = CaseBook(worker.effort_rules, lambda case_id: _read_case(identity, case_id))
    out = stitch_rows(
        records,
        stitcher,
        window,
        batch.topic,
        last,
        now_ms,
        watermarks,
        worker.score_rules,
        cases,
        version,
    )
    sealed = window.seal(batch.topic, 0, now_ms)
    window_items: list[tuple[str, bytes | None]] = [
        (f"k/{case_id}", orjson.dumps(contacts) if contacts else None)
        for case_id, contacts in cases.changes().items()
    ]
    window_items.append((EFFORT_VERSION_KEY, str(version).encode()))
    # the window's chunk goes after the state it vouches for
    window_items += [(f"d/{key}", None) for key in sealed.delete]
    if sealed.write is not None:
        window_items.append((f"d/{sealed.write.key}", orjson.dumps(sealed.write.to_value())))
    if watermarks.changed:
        window_items.append((WATERMARKS_KEY, orjson.dumps(watermarks.marks)))
        watermarks.changed = False
    worker.rolling.add(out.on_time)
    worker.rolling.prune()
    alerts = _fire_alerts(worker, stitcher, cases, out, now_ms)
    detector = worker.drop_detector
    if detector is not None and detector.changed:
        window_items.append((ALERT_STATE_KEY, detector.to_json()))
        detector.changed = False
    # what the batch publishes is acked with it: the ack waits for the broker to have it
    sends = await _publish_alerts(worker, alerts)
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
    _write_state(
        worker, stitcher, epoch, window_items, after=rows_stored, sends=sends, then=on_stored
    )
    metrics.late.inc(out.late)
    low = watermarks.low()
    if low is not None:
        metrics.watermark.set(low / 1000)
    for reason, n in out.refusals.items():
        metrics.refusals.labels(reason).inc(n)
    metrics.stitched.inc(sum(len(rows) for _, rows in records))
    metrics.stitch_replayed.inc(out.replayed)
    metrics.stitch_duplicates.inc(out.duplicates)
    first = records[0][0] if records else batch.last_offset
    # the token names this attempt: a replay must replace the record's scores row, and
    # the events rows written with it, never be dropped as a repeat of an earlier insert
    await sink.add(out.rows, on_stored=rows_stored.set, token=f"stitch:{first}-{last}@{now_ms}")


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


def _fire_alerts(
    worker: Worker,
    stitcher: Stitcher,
    cases: CaseBook,
    out: StitchOutput,
    now_ms: int,
) -> list[Alert]:
    """The alerts a stitched batch fires: detractor answers, cases whose effort crossed
    the threshold, and (at most every ``evaluate_every``) significant score drops."""
    rules = worker.settings.alerts
    fired: list[Alert] = []
    if rules.detractor.enabled:
        for answer in out.answers:
            customer = stitcher.customer(answer.customer_id)
            points = {}
            if customer is not None:
                for case_id in customer.journey.open_cases:
                    points[case_id] = sum(c.points for c in cases.contacts(case_id))
            alert = detractor_alert(rules.detractor, answer, customer, points, now_ms)
            if alert is not None:
                fired.append(alert)
    if rules.effort_spike.enabled:
        for (customer_id, case_id), segments in out.cases.items():
            alert = effort_spike_alert(
                rules.effort_spike,
                customer_id,
                case_id,
                cases.contacts(case_id),
                segments,
                now_ms,
            )
            if alert is not None:
                fired.append(alert)
    sent = worker.alerts_sent
    fresh = [a for a in fired if a.id not in sent]
    for alert in fresh:
        sent[alert.id] = None
    while len(sent) > ALERT_MEMORY:
        del sent[next(iter(sent))]
    if rules.score_drop.enabled:
        pending = worker.alert_series
        for start, kind, value, metric in out.on_time:
            key = (kind, value, metric)
            pending[key] = max(start, pending.get(key, start))
        fresh += look_at_scores(worker, now_ms)
    return fresh


def look_at_scores(worker: Worker, now_ms: int) -> list[Alert]:
    """Significant score drops and recoveries, looked at every step of event time since
    the last look, up to the event time every partition still sending has reached
    (``Watermarks.complete_to``): what fires depends on event time only, not on how
    records batch or how fast partitions are read. At most every ``evaluate_every``."""
    rule = worker.settings.alerts.score_drop
    watermarks = worker.watermarks
    wall = time.monotonic()
    if watermarks is None or wall - worker.last_drop_check < rule.evaluate_every:
        return []
    complete = watermarks.complete_to(worker.settings.watermark_idle_s)
    if complete is None:
        return []
    bucket = worker.score_rules.bucket_ms
    end = complete - complete % bucket  # buckets before it are whole
    if worker.last_look is not None and end <= worker.last_look:
        return []
    worker.last_drop_check = wall
    if worker.drop_detector is None:
        raw = worker.identity_table.get(ALERT_STATE_KEY)
        worker.drop_detector = DropDetector.from_json(rule, raw)
    pending = worker.alert_series
    series = set(pending)
    if wall - worker.last_full_drop_check >= FULL_DROP_CHECK_S:
        # windows move on without new answers too: look at every series now and then
        worker.last_full_drop_check = wall
        series |= set(worker.rolling.series)
    step = max(bucket, int(rule.window * 1000) // LOOKS_PER_WINDOW)
    previous = worker.last_look
    if previous is None:  # this run's first look: step through everything it holds
        oldest = min((min(b) for b in worker.rolling.series.values() if b), default=end)
        previous = oldest - step
    ends = looks(previous, end, step, MAX_LOOKS)
    fired = worker.drop_detector.evaluate_looks(worker.rolling, ends, series, now_ms)
    worker.last_look = end
    for key in [k for k, newest in pending.items() if newest < end]:
        del pending[key]  # looked at with every answer it has
    return fired


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


def _load_watermarks(identity: Any, grace_s: float) -> Watermarks:
    value = identity.get(WATERMARKS_KEY)
    marks = orjson.loads(value) if value else {}
    return Watermarks(int(grace_s * 1000), marks)


def _read_case(identity: Any, case_id: str) -> list[Any] | None:
    value = identity.get(f"k/{case_id}")
    return None if value is None else list(orjson.loads(value))


def _read_node(identity: Any, key: str) -> str | None:
    value = identity.get(f"n/{key}")
    return None if value is None else bytes(value).decode()


def _read_customer(identity: Any, customer_id: str) -> Any:
    value = identity.get(f"c/{customer_id}")
    return None if value is None else customer_from_json(value)


def _check_fence(worker: Worker, epoch: int) -> None:
    if worker.stitch_epoch != epoch:
        raise Fenced()


def _write_state(
    worker: Worker,
    stitcher: Stitcher,
    epoch: int,
    extra: Sequence[tuple[str, bytes | None]] = (),
    *,
    after: asyncio.Event | None = None,
    sends: Sequence[Awaitable[Any]] = (),
    then: Callable[[], None] = _no_op,
) -> asyncio.Task[None]:
    """Write a batch's state changes to the local store now, and to the changelog once
    ``after`` is set (the batch's rows are stored in ClickHouse) and every earlier
    batch's changes are sent; then, once the broker has the changelog records and the
    batch's other ``sends`` (alerts, merges), call ``then`` (the ack).

    Changes go in replay-safe order (live customers, identifier nodes, deleted
    customers), then ``extra`` (cases, the duplicate window's chunk, watermarks). A
    worker that dies before its rows are stored has sent nothing: whoever takes the
    partition over replays the batch from the state before it and writes every row
    again (merges and refusals included), instead of finding the batch applied and its
    rows lost. The local store is ahead of the changelog meanwhile, which
    ``worker.unsent_state`` counts.

    Fencing: nothing is written, locally or to the changelog, once the stitch partition
    was revoked after the batch began (``epoch``, see :meth:`Worker.fence_stitch`). A
    revocation that leaves batches unsent resets the local store, so that it is
    restored from the changelog, the truth every worker shares; a stop that leaves
    them has it rebuilt at the next start (``streams.runtime.app.clean_run``).
    """
    _check_fence(worker, epoch)
    changes = stitcher.changes()
    live = [(k, c) for k, c in changes.customers.items() if c is not None]
    items: list[tuple[str, bytes | None]] = [
        (f"c/{customer_id}", customer_to_json(customer)) for customer_id, customer in live
    ]
    items += [
        (f"n/{key}", None if owner is None else owner.encode())
        for key, owner in changes.nodes.items()
    ]
    items += [(f"c/{k}", None) for k, c in changes.customers.items() if c is None]
    items += extra
    identity = worker.identity_table
    encoded = write_local(identity, 0, items)
    previous = worker.state_chain
    worker.unsent_state += 1

    async def send() -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if after is not None:
            await after.wait()
        if worker.stitch_epoch != epoch:
            return  # revoked meanwhile: the next owner replays this batch
        worker.sending = sending = asyncio.get_running_loop().create_future()
        try:
            written = await send_changelog(identity, 0, encoded)
            await asyncio.gather(*written, *sends)
        except Exception as exc:  # committing after this would lose the state change
            logger.critical("writing the identity changelog failed, stopping: %s", exc)
            await worker.app.crash(exc)
            return
        finally:
            sending.set_result(None)
            worker.sending = None
        if worker.stitch_epoch != epoch:
            return  # revoked while it went out: its offsets are the next owner's
        worker.unsent_state -= 1
        then()

    worker.state_chain = task = worker.spawn(send())
    return task


def _compact_slice(
    worker: Worker, stitcher: Stitcher, keys: Iterator[Any], now_ms: int
) -> Iterator[Any] | None:
    idle_before = now_ms - int(worker.settings.journey_idle_s * 1000)
    for _ in range(COMPACT_SLICE):
        key = next(keys, None)
        if key is None:
            return None
        if not isinstance(key, str) or not key.startswith("c/"):
            return None  # keys are sorted: customers (c/) come before identifiers (n/)
        customer = stitcher.customer(key[2:])
        if customer is None or customer.journey.last_seen >= idle_before:
            continue
        if customer.journey.recent or customer.journey.closed_cases:
            compact(customer.journey)
            stitcher.mark_dirty(customer)
            worker.metrics.compacted.inc()
    return keys


async def _erase(
    worker: Worker,
    stitcher: Stitcher,
    request: dict[str, Any],
    sink: Any,
    now_ms: int,
    epoch: int,
) -> None:
    kind, value = request["kind"], request["value"]
    owner = stitcher.owner(kind, value)
    customer = stitcher.customer(owner) if owner else None
    ids = [owner, *customer.absorbed] if owner and customer else []
    removed = stitcher.forget(owner) if owner else []
    # tombstones (after every earlier change) before the rows are deleted
    await _write_state(worker, stitcher, epoch)
    if ids:
        await sink.erase(ids)
    done = asyncio.Event()
    await sink.add(
        {
            "erasures_store": [
                (request["request_id"], kind, ids, len(removed), request["requested_at"], now_ms)
            ]
        },
        on_stored=done.set,
        token=f"erase:{request['request_id']}",
    )
    await done.wait()
    worker.metrics.erasures.inc()
    logger.info(
        "erasure %s: %d customer ids, %d identifiers removed (%s)",
        request["request_id"],
        len(ids),
        len(removed),
        node_key(kind, "..."),
    )


def _stitch_chunks(identity: Any) -> list[Chunk]:
    return [
        Chunk.from_value(key[2:], orjson.loads(value))
        for key, value in identity.items()
        if isinstance(key, str) and key.startswith("d/") and value
    ]


def _chunks_of(table: Any, partition: int) -> list[Chunk]:
    prefix = f"{partition}/"
    return [
        Chunk.from_value(key, value)
        for key, value in table.items()
        if isinstance(key, str) and key.startswith(prefix) and value
    ]
