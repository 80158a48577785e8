"""Fixtures for tests against the real Apache Kafka broker and the real ClickHouse engine.

The fixtures themselves live in ``fixtures_kafka.py`` and ``fixtures_clickhouse.py``;
this module only makes them visible to every test in the folder.
"""

from tests.integration.fixtures_clickhouse import *  # noqa: F403
from tests.integration.fixtures_kafka import *  # noqa: F403
