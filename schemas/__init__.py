"""Every shape that crosses a boundary: the event, dead letters, ClickHouse DDL.

Imports nothing else of this project.
"""

from schemas.dead_letter import DeadLetter, Reason
from schemas.event import TouchpointEvent, event_json_schema
from schemas.ingested import IngestedEvent, SourceRecord

__all__ = [
    "DeadLetter",
    "IngestedEvent",
    "Reason",
    "SourceRecord",
    "TouchpointEvent",
    "event_json_schema",
]
