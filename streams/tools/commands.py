"""The commands of the tooling, run from a checkout: ``touchpoint generate``, ``demo``,
``benchmark`` and ``faults``.

The worker image holds this module (the parser lists every command) but not the
modules the commands run (:mod:`streams.tools.demo`, :mod:`streams.tools.benchmark`,
the embedded servers): each command imports its module when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.console import say

__all__ = ["cmd_benchmark", "cmd_demo", "cmd_faults", "cmd_generate", "register"]


def cmd_generate(args: argparse.Namespace) -> int:
    """Publish synthetic touchpoints to the configured Kafka."""
    from streams.tools import demo

    return demo.cmd_generate(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """Broker, ClickHouse, worker and generator on embedded infrastructure."""
    from streams.tools import demo

    return demo.cmd_demo(args)


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Ceiling, bare Faust and this worker on the same broker and data, in one run."""
    from streams.tools import benchmark

    return benchmark.cmd_benchmark(args)


def cmd_faults(args: argparse.Namespace) -> int:
    """Run the fault suite; exit 1 if any run found a loss, a double count or a crash."""
    import logging

    from streams.tools.faults import PROFILES, results_json, run_profile, summary_table

    # the runner's own clients see every outage it causes; their retries are not news
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    profile = PROFILES[args.profile]
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="touchpoint-faults-"))
    say(f"fault suite, profile {profile.name}: results and kept runs in {work}")
    results = asyncio.run(
        run_profile(profile, args.seed, work, runs=args.runs, keep=args.keep, say=say)
    )
    table = summary_table(results)
    print(table)
    if args.json:
        Path(args.json).write_text(results_json(results) + "\n")
    (work / "summary.md").write_text(table + "\n")
    return 0 if all(r.ok for r in results) else 1


#: ``GeneratorConfig.answers`` (the generator's ANSWER_MODELS; named here because the
#: worker image lists these commands without holding the generator)
ANSWER_MODELS = ("effort", "independent")


def _answers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--answers",
        choices=ANSWER_MODELS,
        default="effort",
        help="how survey answers are drawn (default: effort): effort from the hardship of "
        "the case, the behaviour the effort points count; independent from a temperament of each "
        "customer, the case's total wait and its time to resolution (of these the points "
        "count only the wait, a point a minute per contact): the same touchpoints, other "
        "scores",
    )


def register(add: Callable[..., Any]) -> None:
    """Add the tooling's commands to the ``touchpoint`` parser."""
    from streams.tools.faults import PROFILES

    generate = add("generate", cmd_generate, "publish realistic synthetic touchpoints to Kafka")
    generate.add_argument("--events", type=int, default=10_000, help="how many (default 10000)")
    generate.add_argument("--customers", type=int, default=1_000, help="population size")
    generate.add_argument("--seed", type=int, default=7, help="same seed, same events")
    generate.add_argument("--days", type=float, default=14, help="event-time span, ending now")
    generate.add_argument("--rate", type=float, default=None, help="events per second cap")
    generate.add_argument("--bad-share", type=float, default=0.0, help="share of broken messages")
    generate.add_argument("--duplicate-share", type=float, default=0.0, help="share of re-sends")
    generate.add_argument("--compression", choices=["gzip", "snappy", "lz4", "zstd"], default=None)
    generate.add_argument(
        "--incident",
        metavar="CHANNEL",
        default=None,
        help="script an incident: from 60%% of the span, for three days, this channel's "
        "contacts go badly and its answers fall (default: none)",
    )
    _answers_option(generate)
    generate.add_argument(
        "--benchmark", action="store_true", help="simple ~300-byte events (as the benchmark)"
    )
    generate.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the brokers to answer before giving up",
    )

    demo = add("demo", cmd_demo, "everything on embedded infrastructure, one command")
    demo.add_argument("--events", type=int, default=20_000, help="touchpoints to publish")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--bad-share", type=float, default=0.02, help="share of broken messages")
    demo.add_argument("--duplicate-share", type=float, default=0.01, help="share of re-sends")
    demo.add_argument(
        "--broker",
        choices=["auto", "tansu", "kafka"],
        default="tansu",
        help="tansu (no JVM, default), kafka (Apache Kafka, needs Java), or auto",
    )
    demo.add_argument(
        "--incident",
        metavar="CHANNEL",
        default="mobile_app",
        help="the channel of the scripted incident the alerts must notice "
        "(default mobile_app; none for no incident)",
    )
    _answers_option(demo)
    demo.add_argument(
        "--dir",
        default="var/demo",
        help="working directory: created, or emptied if an earlier demo created it; any "
        "other non-empty directory is refused",
    )
    demo.add_argument(
        "--keep-running", action="store_true", help="keep everything up for queries until Ctrl-C"
    )

    bench = add("benchmark", cmd_benchmark, "ceiling vs bare Faust vs this worker, one run")
    bench.add_argument("--events", type=int, default=200_000)
    bench.add_argument("--customers", type=int, default=100_000)
    bench.add_argument("--partitions", type=int, default=4)
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--json", help="also write the results to this file")
    bench.add_argument(
        "--only",
        dest="loops",
        default="a,b,r,c1,c2",
        help="which loops to run, comma-separated: a (ceiling), b (bare Faust), r (the "
        "resolver alone), c1 and c2 (this worker with one and two processes); default all "
        "(the option is not called --loops: Faust takes any argument starting with --loop "
        "as its event loop)",
    )
    bench.add_argument(
        "--latency",
        action="store_true",
        help="also time alerts: detractor answer sent to webhook received, at 75%% of (c1)'s rate",
    )
    bench.add_argument("--latency-seconds", type=float, default=60.0, help="how long to offer")
    bench.add_argument("--latency-rate", type=float, default=None, help="events/s to offer")
    bench.add_argument(
        "--every-customer",
        action="store_true",
        help="show every customer at least once (to measure memory for the whole population)",
    )

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
