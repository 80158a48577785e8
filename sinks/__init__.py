"""I/O to the outside world: ClickHouse, dead letters. Imports only ``schemas``."""

from sinks.clickhouse import ClickHouseSink
from sinks.dead_letters import DeadLetterPublisher
from sinks.migrations import MigrationReport, migrate

__all__ = ["ClickHouseSink", "DeadLetterPublisher", "MigrationReport", "migrate"]
