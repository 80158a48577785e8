"""The score-drop detector's owner: one partition (``<app_id>-tallies``), one worker.

Its table holds one key, ``w/lookout``: the detector's hysteresis and cooldowns and each
customer partition's progress (:class:`~streams.domain.detect.Lookout`). The rolling view
is rebuilt from the tallies that arrive.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from schemas.alert_rules import ScoreDropRule
from schemas.alerts import Alert
from streams.domain.detect import Lookout, decode_tallies
from streams.runtime.owners import Owner

__all__ = ["LOOKOUT_KEY", "Detector"]

LOOKOUT_KEY = "w/lookout"


class Detector(Owner):
    """The tallies partition on this worker."""

    def __init__(
        self,
        *args: Any,
        rule: ScoreDropRule,
        bucket_ms: int,
        horizon_ms: int,
        partitions: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rule = rule
        self.bucket_ms = bucket_ms
        self.horizon_ms = horizon_ms
        self.partitions = partitions
        self.lookout: Lookout | None = None

    def _load(self) -> Lookout:
        if self.lookout is None:
            self.lookout = Lookout(
                self.rule,
                self.bucket_ms,
                self.horizon_ms,
                self.partitions,
                self.store.get(LOOKOUT_KEY),
            )
        return self.lookout

    def take(
        self, values: Sequence[bytes]
    ) -> tuple[int, list[Alert], list[tuple[str, bytes | None]]]:
        """Add the tallies messages and look at the scores: how many records were new,
        the alerts that fire, the state to persist."""
        self.check()
        lookout = self._load()
        added = 0
        for value in values:
            partition, complete_to, entries = decode_tallies(value)
            added += lookout.add(partition, complete_to, entries)
        alerts = (
            lookout.look(time.monotonic(), int(time.time() * 1000)) if self.rule.enabled else []
        )
        state: list[tuple[str, bytes | None]] = []
        if lookout.changed:
            state.append((LOOKOUT_KEY, lookout.state()))
        return added, alerts, state

    @property
    def complete_to(self) -> int | None:
        return None if self.lookout is None else self.lookout.complete_to()
