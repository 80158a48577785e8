"""The touchpoint stream processor: Faust agents from Kafka to ClickHouse.

Pure logic lives in noun-named modules (``ingest``, ``identifiers``, ``dedup``) that
import neither Faust nor I/O; ``app`` composes, ``agents`` shows the flow.
"""

__all__: list[str] = []
