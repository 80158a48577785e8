"""The commands of the tooling: ``touchpoint faults``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def cmd_faults(args: argparse.Namespace) -> int:
    """Run the fault suite; exit 1 if any run found a loss, a double count or a crash."""
    import logging

    from streams.tools.faults import PROFILES, results_json, run_profile, summary_table

    # the runner's own clients see every outage it causes; their retries are not news
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    profile = PROFILES[args.profile]
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="touchpoint-faults-"))
    _say(f"fault suite, profile {profile.name}: results and kept runs in {work}")
    results = asyncio.run(
        run_profile(profile, args.seed, work, runs=args.runs, keep=args.keep, say=_say)
    )
    table = summary_table(results)
    print(table)
    if args.json:
        Path(args.json).write_text(results_json(results) + "\n")
    (work / "summary.md").write_text(table + "\n")
    return 0 if all(r.ok for r in results) else 1


def register(add: Callable[..., Any]) -> None:
    """Add the tooling's commands to the ``touchpoint`` parser."""
    from streams.tools.faults import PROFILES

    faults = add(
        "faults",
        cmd_faults,
        "the fault suite: real Kafka and ClickHouse, several workers, restarts, kills, "
        "outages and hostile input; checks from ClickHouse that nothing was lost or "
        "counted twice",
    )
    faults.add_argument("--profile", choices=sorted(PROFILES), default="short")
    faults.add_argument("--seed", type=int, default=1, help="seed of the first run")
    faults.add_argument("--runs", type=int, default=None, help="override the profile's runs")
    faults.add_argument("--dir", default=None, help="working directory (default: a temp dir)")
    faults.add_argument("--keep", action="store_true", help="keep every run's directory")
    faults.add_argument("--json", default=None, help="also write the results to this file")
