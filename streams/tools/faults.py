"""The fault suite: real Kafka, real ClickHouse, several workers, and things going wrong.

One *run* starts Apache Kafka and the ClickHouse engine on loopback, two or three
``touchpoint worker`` processes, and publishes a known, seeded set of touchpoints
(journeys with merges, survey answers, support cases; re-deliveries of the same
``event_id`` on other partitions; broken messages) steadily over a while. Meanwhile it
injects faults at seeded random moments:

* ``kill9``: a worker is killed (SIGKILL) and started again a few seconds later,
  sometimes on an empty state directory (another machine);
* ``sigterm``: a worker is stopped (SIGTERM) and started again at once, so it rejoins
  while the group is still rebalancing; how long the stop took is recorded;
* ``clickhouse``: the ClickHouse engine is killed and restarted on its data;
* ``broker``: the broker is stopped (SIGTERM or SIGKILL) for 5-12 s and restarted on
  its log;
* ``hostile``: a burst of hostile messages (wrong types, huge numbers, deep nesting,
  not JSON, ...), each of which must cost exactly one dead letter.

Then it lets the workers drain, publishes a canary, reads back every record of the
input topics (the truth: what the broker holds, duplicates a producer retry may have
written included) and checks, from ClickHouse alone as an analyst would: no event
lost, none twice, none made up; every broken record dead-lettered exactly once and no
valid one; every score bucket, journey and effort row equal to a recomputation from
the raw ``events`` (:mod:`sinks.truth`); the customers equal the connected components
of the events' identifiers; the canary arrived; every worker alive, no worker crashed
on its own, every stop within the bound.

``touchpoint faults --profile short`` is what CI runs; ``--profile long`` is the
acceptance run (20 runs, 100 graceful restarts and 100 kill -9 in all).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from sinks.truth import Difference, truth_checks
from streams.runtime.reconcile import reconcile
from streams.tools.workers import WorkerProcess

__all__ = [
    "FAULT_KINDS",
    "PROFILES",
    "FaultRun",
    "Profile",
    "RunResult",
    "hostile_messages",
    "run_profile",
    "summary_table",
]

#: What can go wrong, in the order the summary lists it.
FAULT_KINDS = ("kill9", "sigterm", "clickhouse", "broker", "hostile")
#: A graceful stop must end within this many seconds (the worker's own bound is 30 s).
STOP_BOUND_S = 35.0
#: The header that tells the checker what a record was meant to be.
KIND_HEADER = "x-touchpoint-fault"
#: Partitions of the customers topic in a fault run.
CUSTOMER_PARTITIONS = 8
PARTITIONS = 4
CHANNELS = (
    "web", "mobile_app", "email", "sms", "push", "call_center", "chat", "social", "store",
    "survey", "billing", "support", "product",
)  # fmt: skip
APP_ID = "faults"


@dataclass(frozen=True)
class Profile:
    """How big a run is and which faults it suffers (counts per run)."""

    name: str
    runs: int
    events: int
    publish_s: float
    faults: Mapping[str, int]
    workers: tuple[int, ...] = (2, 3)
    session_timeout_s: float = 10.0
    drain_timeout_s: float = 300.0


PROFILES: dict[str, Profile] = {
    # CI, on every change: every kind of fault once or twice, a few minutes
    "short": Profile(
        "short",
        runs=1,
        events=3000,
        publish_s=45.0,
        faults={"kill9": 2, "sigterm": 2, "clickhouse": 1, "broker": 1, "hostile": 2},
        workers=(2,),
    ),
    # before an issue about trust is called done: >= 100 graceful restarts and 100 kill -9
    "long": Profile(
        "long",
        runs=20,
        events=6000,
        publish_s=90.0,
        faults={"kill9": 5, "sigterm": 5, "clickhouse": 1, "broker": 1, "hostile": 2},
    ),
    # finding 3 of the trust issue: two workers, one stopped and started again and again
    "restarts": Profile(
        "restarts",
        runs=1,
        events=8000,
        publish_s=150.0,
        faults={"sigterm": 15},
        workers=(2,),
    ),
    # the default timeouts of a production deployment (30 s sessions): slower rebalances
    "defaults": Profile(
        "defaults",
        runs=3,
        events=6000,
        publish_s=90.0,
        faults={"kill9": 3, "sigterm": 3, "clickhouse": 1, "broker": 1, "hostile": 1},
        session_timeout_s=30.0,
    ),
}


@dataclass
class RunResult:
    """What one run did and found. ``ok`` when every check found nothing."""

    run: int
    seed: int
    workers: int
    faults: Counter[str] = field(default_factory=Counter)
    records: int = 0
    valid_events: int = 0
    broken: int = 0
    lost: int = 0
    duplicated: int = 0
    phantom: int = 0
    dead_letters_missing: int = 0
    dead_letters_extra: int = 0
    differences: list[Difference] = field(default_factory=list)
    #: reconciliation (touchpoint verify): committed and never read; read and not stored
    unread: int = 0
    missing: int = 0
    #: what the workers' touchpoint_unaccounted_offsets metric said at the end
    unaccounted_metric: int = 0
    canary: bool = False
    drained: bool = False
    crashes: list[str] = field(default_factory=list)
    hung_stops: int = 0
    stop_seconds: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def mismatches(self) -> int:
        return sum(d.differing for d in self.differences)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.drained
            and self.canary
            and not self.crashes
            and self.hung_stops == 0
            and self.lost == self.duplicated == self.phantom == 0
            and self.dead_letters_missing == self.dead_letters_extra == 0
            and self.mismatches == 0
            and self.unread == self.missing == self.unaccounted_metric == 0
        )

    def describe(self) -> str:
        lines = [
            f"run {self.run} (seed {self.seed}, {self.workers} workers): "
            + ("ok" if self.ok else "FAILED")
            + f" in {self.seconds:.0f} s",
            "  faults: " + ", ".join(f"{k} {self.faults[k]}" for k in FAULT_KINDS),
            f"  records {self.records}, valid events {self.valid_events}, broken {self.broken}",
            f"  lost {self.lost}, duplicated {self.duplicated}, phantom {self.phantom}, "
            f"dead letters missing {self.dead_letters_missing} / extra "
            f"{self.dead_letters_extra}",
            *(f"  {d}" for d in self.differences),
            f"  reconciliation: unread {self.unread}, missing {self.missing}; workers' "
            f"touchpoint_unaccounted_offsets {self.unaccounted_metric}",
            f"  drained {self.drained}, canary {self.canary}, hung stops {self.hung_stops}, "
            f"slowest stop {max(self.stop_seconds, default=0):.1f} s",
            *(f"  crash: {c}" for c in self.crashes),
            *(f"  e.g. {e}" for e in self.examples[:8]),
        ]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["faults"] = dict(self.faults)
        data["ok"] = self.ok
        data["mismatches"] = self.mismatches
        data["differences"] = [
            {"check": d.check, "compared": d.compared, "differing": d.differing}
            for d in self.differences
        ]
        data["stop_seconds"] = [s if s != float("inf") else None for s in self.stop_seconds]
        return data


def hostile_messages(rng: random.Random, tag: str) -> list[bytes]:
    """Messages no producer should send; each must become exactly one dead letter.

    Every one is refused by the contract: wrong JSON types, numbers out of any range
    ClickHouse or the contract allows, integers beyond 64 bits, nesting beyond any
    sensible depth, bytes that are not JSON or not UTF-8.
    """
    now = int(time.time() * 1000)

    def event(n: int, **extra: Any) -> dict[str, Any]:
        document: dict[str, Any] = {
            "event_id": f"hostile-{tag}-{n}",
            "occurred_at": now - rng.randrange(3_600_000),
            "type": "page_view",
            "identifiers": {"email": f"hostile.{tag}.{n}@example.org"},
        }
        document.update(extra)
        return document

    big = 123456789012345678901234567890
    documents: list[bytes] = [
        orjson.dumps(event(0, properties={"n": 1})).replace(b'"n":1', f'"n":{big}'.encode()),
        orjson.dumps(event(1, properties={"a": {"b": [1, 3]}})).replace(b"3]", b"%d]" % -big),
        orjson.dumps(event(2, type="survey_response", survey={"metric": "nps", "score": True})),
        orjson.dumps(event(3, type="survey_response", survey={"metric": "nps", "score": "9"})),
        orjson.dumps(event(4, interaction={"transferred": "yes"})),
        orjson.dumps(event(5, interaction={"wait_seconds": "60"})),
        orjson.dumps(event(6, commerce={"amount": True})),
        orjson.dumps(event(7, schema_version="1")),
        orjson.dumps(event(8, interaction={"wait_seconds": 1e30})),
        b'{"event_id": "h-' + tag.encode() + b'-9", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe not utf-8 at all",
        b"[1, 2, 3]",
        b'{"event_id": "hostile-' + tag.encode() + b'-12", "occurred_at": NaN}',
        orjson.dumps(event(13, occurred_at=int(now / 1000))),  # seconds, not milliseconds
        orjson.dumps(event(14, identifiers={})),
        b"",
    ]  # fmt: skip
    return documents


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    kind: str
    value: bytes


class FaultRun:
    """One run of the fault suite in its own directory (see the module docstring)."""

    def __init__(
        self,
        run: int,
        seed: int,
        profile: Profile,
        work: Path,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.run_index = run
        self.seed = seed
        self.profile = profile
        self.work = work
        self.say = say
        self.rng = random.Random(seed)
        self.result = RunResult(run, seed, self.rng.choice(profile.workers))
        self.kafka: Any = None
        self.clickhouse: Any = None
        self.workers: list[WorkerProcess] = []
        #: workers the injector is restarting on purpose right now
        self._expected_down: set[str] = set()
        self._publishing_done = asyncio.Event()

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> RunResult:
        started = time.monotonic()
        try:
            await self._start_stack()
            watchdog = asyncio.ensure_future(self._watch_workers())
            try:
                await asyncio.gather(self._publish(), self._inject())
                await self._ensure_running()
                self.result.drained = await self._drain()
                self.result.canary = await self._canary()
                await self._check()
            finally:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
        except Exception as exc:  # the run could not complete: that is a finding too
            self.result.error = f"{type(exc).__name__}: {exc}"
        finally:
            await asyncio.to_thread(self._stop_stack)
            self.result.seconds = time.monotonic() - started
        return self.result

    async def bounded_run(self, limit_s: float = 1800.0) -> RunResult:
        """:meth:`run`, recorded as an error (not waited for) when it takes longer."""
        try:
            return await asyncio.wait_for(self.run(), limit_s)
        except TimeoutError:
            self.result.error = f"the run did not finish within {limit_s:.0f} s"
            await asyncio.to_thread(self._stop_stack)
            return self.result

    # -- the stack ----------------------------------------------------------------------

    async def _start_stack(self) -> None:
        from streams.tools.embedded.clickhouse import EmbeddedClickHouse
        from streams.tools.embedded.kafka import ApacheKafka

        self.work.mkdir(parents=True, exist_ok=True)
        self.kafka = ApacheKafka(self.work / "kafka", partitions=PARTITIONS, heap="512m")
        await asyncio.to_thread(self.kafka.start)
        self.clickhouse = EmbeddedClickHouse(self.work / "clickhouse")
        await asyncio.to_thread(self.clickhouse.start)
        await self._create_topics()
        env = {
            "TOUCHPOINT_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "TOUCHPOINT_CLICKHOUSE_URL": self.clickhouse.url,
            "TOUCHPOINT_APP_ID": APP_ID,
            "TOUCHPOINT_TOPIC_PARTITIONS": str(PARTITIONS),
            # more customers partitions than workers and input partitions: hand-overs
            # between partitions, and partitions moving at every restart
            "TOUCHPOINT_CUSTOMER_PARTITIONS": str(CUSTOMER_PARTITIONS),
            "TOUCHPOINT_KAFKA_SESSION_TIMEOUT_S": str(self.profile.session_timeout_s),
            "TOUCHPOINT_MAX_AGE_S": str(30 * 86400),
            "TOUCHPOINT_LOG_LEVEL": "INFO",
        }
        import os

        base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
        for n in range(self.result.workers):
            name = f"w{n + 1}"
            worker = WorkerProcess(
                name,
                {**base, **env, "TOUCHPOINT_DATA_DIR": str(self.work / f"state-{name}")},
                self.work / f"{name}.log",
            )
            worker.start()
            self.workers.append(worker)
        for worker in self.workers:
            await asyncio.to_thread(worker.wait_ready)
        self.say(f"  stack up: {self.kafka.bootstrap}, {self.clickhouse.url}, "
                 f"{len(self.workers)} workers")  # fmt: skip

    async def _create_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(f"touchpoints.{c}", PARTITIONS, 1) for c in CHANNELS]
            )
        finally:
            await admin.close()

    def _stop_stack(self) -> None:
        for worker in self.workers:
            took = worker.stop(signal.SIGTERM, timeout=90)
            if worker.starts:
                self.result.stop_seconds.append(took)
        for server in (self.clickhouse, self.kafka):
            if server is not None:
                server.stop()

    # -- publishing ---------------------------------------------------------------------

    def _messages(self) -> list[tuple[str, int, bytes | None, bytes, list[Any], int | None]]:
        from streams.tools.generator import GeneratorConfig, generate

        now = datetime.now(UTC)
        config = GeneratorConfig(
            seed=self.seed,
            events=self.profile.events,
            customers=max(20, self.profile.events // 15),
            start=now - timedelta(days=3),
            span=timedelta(days=3) - timedelta(minutes=5),
            bad_share=0.01,
            duplicate_share=0.03,
            link_traps=False,
        )
        placed: dict[bytes, int] = {}
        out = []
        for message in generate(config):
            kind = message.kind.split(":")[0]
            if kind == "duplicate":  # the same bytes again, on another partition
                first = placed.get(message.value, 0)
                partition = (first + 1 + self.rng.randrange(PARTITIONS - 1)) % PARTITIONS
            else:
                partition = self.rng.randrange(PARTITIONS)
                placed[message.value] = partition
            headers = [*message.headers, (KIND_HEADER, kind.encode())]
            out.append(
                (
                    message.topic,
                    partition,
                    message.key,
                    message.value,
                    headers,
                    message.timestamp_ms,
                )
            )
        return out

    async def _publish(self) -> None:
        from aiokafka import AIOKafkaProducer

        messages = self._messages()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap, acks="all", linger_ms=10
        )
        await producer.start()
        started = time.monotonic()
        try:
            for n, (topic, partition, key, value, headers, ts) in enumerate(messages):
                due = started + self.profile.publish_s * n / len(messages)
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._send(producer, topic, partition, key, value, headers, ts)
            await producer.flush()
        finally:
            await producer.stop()
            self._publishing_done.set()
        self.say(f"  published {len(messages)} messages")

    async def _send(
        self,
        producer: Any,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: list[Any],
        timestamp_ms: int | None,
    ) -> None:
        """Send until the broker takes it, as a producer would (a retry after a failed
        send may write the record twice: the checker reads the truth back from Kafka)."""
        while True:
            try:
                await producer.send(
                    topic,
                    value,
                    key=key,
                    partition=partition,
                    headers=headers,
                    timestamp_ms=timestamp_ms,
                )
                return
            except Exception:  # the broker is down: wait for it, then send again
                await asyncio.sleep(0.5)

    # -- faults -------------------------------------------------------------------------

    def _schedule(self) -> list[tuple[float, str]]:
        horizon = self.profile.publish_s + 15
        plan = [
            (self.rng.uniform(3, horizon), kind)
            for kind, count in self.profile.faults.items()
            for _ in range(count)
        ]
        return sorted(plan)

    async def _inject(self) -> None:
        started = time.monotonic()
        for at, kind in self._schedule():
            delay = started + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.say(f"  t+{time.monotonic() - started:5.1f} s  {kind}")
            await getattr(self, f"_fault_{kind}")()
            self.result.faults[kind] += 1

    def _pick_worker(self) -> WorkerProcess:
        alive = [w for w in self.workers if w.alive and w.name not in self._expected_down]
        return self.rng.choice(alive or self.workers)

    async def _fault_kill9(self) -> None:
        worker = self._pick_worker()
        self._expected_down.add(worker.name)
        try:
            await asyncio.to_thread(worker.kill)
            await asyncio.sleep(self.rng.uniform(0.5, 5))
            if self.rng.random() < 0.2:  # back on another machine: no local state
                shutil.rmtree(worker.env["TOUCHPOINT_DATA_DIR"], ignore_errors=True)
            worker.start()
        finally:
            self._expected_down.discard(worker.name)

    async def _fault_sigterm(self) -> None:
        worker = self._pick_worker()
        self._expected_down.add(worker.name)
        try:
            took = await asyncio.to_thread(worker.stop, signal.SIGTERM, 90.0)
            self.result.stop_seconds.append(took)
            if took > STOP_BOUND_S:
                self.result.hung_stops += 1
                self.result.examples.append(f"{worker.name} took {took:.0f} s to stop")
            if worker.exit_code not in (0, -signal.SIGTERM, -signal.SIGKILL):
                self.result.crashes.append(
                    f"{worker.name} exited {worker.exit_code} on SIGTERM: {_last_error(worker)}"
                )
            await asyncio.sleep(self.rng.uniform(0, 2))
            worker.start()
        finally:
            self._expected_down.discard(worker.name)

    async def _fault_clickhouse(self) -> None:
        await asyncio.to_thread(self.clickhouse.kill)
        await asyncio.sleep(self.rng.uniform(1, 8))
        await asyncio.to_thread(self.clickhouse.start)

    async def _fault_broker(self) -> None:
        # the log stays: the broker was given its directory, so stop() keeps it
        stop = self.kafka.kill if self.rng.random() < 0.5 else self.kafka.stop
        await asyncio.to_thread(stop)
        await asyncio.sleep(self.rng.uniform(5, 12))
        await asyncio.to_thread(self.kafka.start)

    async def _fault_hostile(self) -> None:
        from aiokafka import AIOKafkaProducer

        tag = f"{self.seed}-{self.result.faults['hostile']}"
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for value in hostile_messages(self.rng, tag):
                topic = f"touchpoints.{self.rng.choice(CHANNELS)}"
                await self._send(
                    producer,
                    topic,
                    self.rng.randrange(PARTITIONS),
                    None,
                    value,
                    [(KIND_HEADER, b"hostile")],
                    None,
                )
            await producer.flush()
        finally:
            await producer.stop()

    async def _watch_workers(self) -> None:
        """A worker that exits when nobody stopped it has crashed: record it, restart it
        (the run goes on, and fails)."""
        while True:
            await asyncio.sleep(0.5)
            for worker in self.workers:
                if worker.alive or worker.name in self._expected_down:
                    continue
                self.result.crashes.append(
                    f"{worker.name} exited {worker.exit_code} by itself: {_last_error(worker)}"
                )
                worker.start()

    async def _ensure_running(self) -> None:
        for worker in self.workers:
            if not worker.alive:
                worker.start()

    # -- draining -----------------------------------------------------------------------

    def _settled_topics(self) -> list[str]:
        return [
            *(f"touchpoints.{c}" for c in CHANNELS),
            f"{APP_ID}-resolve",
            f"{APP_ID}-customers",
            f"{APP_ID}-tallies",
            "touchpoints.alerts",
        ]

    async def _drain(self) -> bool:
        from streams.runtime.topics import uncommitted

        deadline = time.monotonic() + self.profile.drain_timeout_s
        quiet = 0
        behind: dict[Any, Any] = {}
        while time.monotonic() < deadline:
            try:
                behind = await uncommitted(self.kafka.bootstrap, APP_ID, self._settled_topics())
            except Exception as exc:  # the broker is still coming back
                behind = {"error": str(exc)}
            quiet = quiet + 1 if not behind else 0
            if quiet >= 2:
                return True
            await asyncio.sleep(2)
        self.result.examples.append(f"not drained: {dict(list(behind.items())[:6])}")
        return False

    async def _canary(self) -> bool:
        from aiokafka import AIOKafkaProducer

        event_id = f"canary-{self.seed}"
        document = {
            "event_id": event_id,
            "occurred_at": int(time.time() * 1000),
            "type": "page_view",
            "identifiers": {"anonymous_id": f"canary-{self.seed}"},
        }
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all")
        await producer.start()
        try:
            await self._send(
                producer,
                "touchpoints.web",
                0,
                None,
                orjson.dumps(document),
                [(KIND_HEADER, b"canary")],
                None,
            )
            await producer.flush()
        finally:
            await producer.stop()
        client = await self._client()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                found = await client.query(
                    "SELECT count() FROM touchpoints.events WHERE event_id = {e:String}",
                    parameters={"e": event_id},
                )
                if found.result_rows[0][0]:
                    return await self._drain()
                await asyncio.sleep(1)
            return False
        finally:
            await client.close()

    # -- checking -----------------------------------------------------------------------

    async def _client(self) -> Any:
        import clickhouse_connect

        return await clickhouse_connect.get_async_client(
            dsn=self.clickhouse.url, autogenerate_session_id=False
        )

    async def _read_back(self) -> list[_Record]:
        """Every record the broker holds on the input topics: the truth to check against.

        Read until the consumer's position reaches each partition's end (a position, not
        a last record: an offset may hold no record), within a bound.
        """
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap, enable_auto_commit=False
        )
        await consumer.start()
        records: list[_Record] = []
        try:
            parts = [
                TopicPartition(f"touchpoints.{c}", p) for c in CHANNELS for p in range(PARTITIONS)
            ]
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            starts = await consumer.beginning_offsets(parts)
            for tp in parts:
                consumer.seek(tp, starts[tp])
            remaining = {tp for tp in parts if ends[tp] > starts[tp]}
            deadline = time.monotonic() + 300
            while remaining:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not read back {sorted(remaining)[:4]}")
                batch = await consumer.getmany(*remaining, timeout_ms=2000, max_records=5000)
                for tp, rows in batch.items():
                    for r in rows:
                        if r.offset >= ends[tp]:
                            continue
                        kind = dict(r.headers).get(KIND_HEADER, b"unknown").decode()
                        records.append(_Record(tp.topic, tp.partition, r.offset, kind, r.value))
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return records

    async def _check(self) -> None:
        from streams.domain.identifiers import normalise_identifiers
        from streams.runtime.app import ingest_rules
        from streams.settings import Settings

        records = await self._read_back()
        result = self.result
        result.records = len(records)
        broken = {(r.topic, r.partition, r.offset) for r in records if r.kind in ("bad", "hostile")}
        result.broken = len(broken)
        valid: dict[str, dict[str, Any]] = {}
        for r in records:
            if r.kind in ("valid", "duplicate", "canary"):
                document = orjson.loads(r.value)
                valid.setdefault(document["event_id"], document)
        result.valid_events = len(valid)
        settings = Settings.model_construct()
        policy = ingest_rules(settings).identifiers
        client = await self._client()
        try:
            stored = {
                r[0]: r[1]
                for r in (
                    await client.query(
                        "SELECT event_id, count() FROM touchpoints.events GROUP BY event_id"
                    )
                ).result_rows
            }
            result.lost = len(set(valid) - set(stored))
            result.phantom = len(set(stored) - set(valid))
            result.duplicated = sum(n - 1 for n in stored.values())
            result.examples += [f"lost {e}" for e in sorted(set(valid) - set(stored))[:3]]
            result.examples += [f"phantom {e}" for e in sorted(set(stored) - set(valid))[:3]]
            letters = Counter(
                (t, p, o)
                for t, p, o in (
                    await client.query(
                        "SELECT source_topic, source_partition, source_offset "
                        "FROM touchpoints.dead_letters"
                    )
                ).result_rows
            )
            result.dead_letters_missing = len(broken - set(letters))
            result.dead_letters_extra = len(set(letters) - broken) + sum(
                n - 1 for n in letters.values()
            )
            result.examples += [f"not dead-lettered {c}" for c in sorted(broken - set(letters))[:3]]
            components = _components(
                normalise_identifiers(d["identifiers"], policy).kept for d in valid.values()
            )
            result.differences = await truth_checks(
                client,
                "touchpoints",
                dimensions=settings.score_segments,
                assisted=sorted(settings.effort_assisted_channels),
                components=components,
            )
            report = await reconcile(self._settings(), client)
            result.unread, result.missing = report.unread, report.missing
            result.examples += [line for line in report.lines()[3:8]]
        finally:
            await client.close()
        result.unaccounted_metric = sum(_unaccounted(w) for w in self.workers)

    def _settings(self) -> Any:
        from streams.settings import load_settings

        return load_settings(
            None,
            kafka_bootstrap=self.kafka.bootstrap,
            clickhouse_url=self.clickhouse.url,
            app_id=APP_ID,
            topic_partitions=PARTITIONS,
        )


def _components(identifier_sets: Any) -> list[frozenset[str]]:
    """Connected components of identifiers shown together (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for identifiers in identifier_sets:
        keys = [f"{k}:{v}" for k, v in identifiers.items()]
        for key in keys:
            find(key)
        for a, b in itertools.pairwise(keys):
            parent[find(a)] = find(b)
    groups: dict[str, set[str]] = {}
    for key in parent:
        groups.setdefault(find(key), set()).add(key)
    return [frozenset(g) for g in groups.values()]


def _unaccounted(worker: WorkerProcess) -> int:
    """The sum of a running worker's touchpoint_unaccounted_offsets gauges."""
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("touchpoint_unaccounted_offsets{")
    )


def _last_error(worker: WorkerProcess) -> str:
    lines = [
        line
        for line in worker.tail(20_000).splitlines()
        if "Error" in line or "CRITICAL" in line or "Traceback" in line or "crash" in line
    ]
    return lines[-1][:300] if lines else "(no error in its log)"


async def run_profile(
    profile: Profile,
    seed: int,
    work: Path,
    *,
    runs: int | None = None,
    keep: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> list[RunResult]:
    """Run a profile's runs one after the other (seeds ``seed``, ``seed + 1``, ...);
    a failed run's directory (logs, data) is kept for a post-mortem."""
    results = []
    for n in range(runs or profile.runs):
        run_seed = seed + n
        directory = work / f"run-{n + 1:02d}-seed-{run_seed}"
        say(f"run {n + 1} of {runs or profile.runs}: seed {run_seed}, in {directory}")
        result = await FaultRun(n + 1, run_seed, profile, directory, say).bounded_run()
        results.append(result)
        say(result.describe())
        if result.ok and not keep:
            shutil.rmtree(directory, ignore_errors=True)
    return results


def summary_table(results: Sequence[RunResult]) -> str:
    """The Markdown table the README shows: one row per run and a total."""
    head = (
        "| run | seed | workers | "
        + " | ".join(FAULT_KINDS)
        + " | records | lost | double counted | mismatches | crashes | hung stops | verdict |"
    )
    rule = "|" + "---|" * (head.count("|") - 1)
    rows = []
    for r in results:
        double = r.duplicated + r.dead_letters_extra
        rows.append(
            f"| {r.run} | {r.seed} | {r.workers} | "
            + " | ".join(str(r.faults[k]) for k in FAULT_KINDS)
            + f" | {r.records} | {r.lost + r.dead_letters_missing} | {double} | "
            f"{r.mismatches + r.phantom} | {len(r.crashes)} | {r.hung_stops} | "
            + ("ok" if r.ok else "FAILED")
            + " |"
        )
    total = Counter[str]()
    for r in results:
        total.update(r.faults)
    rows.append(
        "| all | | | "
        + " | ".join(str(total[k]) for k in FAULT_KINDS)
        + f" | {sum(r.records for r in results)} | "
        f"{sum(r.lost + r.dead_letters_missing for r in results)} | "
        f"{sum(r.duplicated + r.dead_letters_extra for r in results)} | "
        f"{sum(r.mismatches + r.phantom for r in results)} | "
        f"{sum(len(r.crashes) for r in results)} | {sum(r.hung_stops for r in results)} | "
        f"{sum(r.ok for r in results)} of {len(results)} ok |"
    )
    return "\n".join([head, rule, *rows])


def results_json(results: Sequence[RunResult]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)
