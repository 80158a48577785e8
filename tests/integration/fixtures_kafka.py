"""A real Apache Kafka broker for the whole test session.

Without Java or Maven the integration tests skip on a laptop, but never in CI
(``CI`` set): there a missing broker is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.tools.embedded.kafka import ApacheKafka, java_available

__all__ = ["kafka_bootstrap", "kafka_broker"]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    if not java_available():
        reason = "Apache Kafka needs Java 17+ and Maven on the PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; integration tests never skip in CI")
        pytest.skip(reason)
    broker = ApacheKafka(Path(tmp_path_factory.mktemp("kafka")), partitions=4)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: ApacheKafka) -> str:
    return kafka_broker.bootstrap
