"""Embedded infrastructure for the demo, the tests and the benchmark.

``kafka``: Apache Kafka (from Maven Central jars) or Tansu on loopback.
``clickhouse``: the ClickHouse engine (chdb) behind the ClickHouse HTTP interface.
"""
