"""The ``touchpoint`` command: its parser and dispatch.

The commands themselves are in :mod:`streams.operate.commands` (worker, migrate,
schema, config, erase, verify, effort-check, report, status, dlq) and
:mod:`streams.tools.commands` (generate, demo, benchmark, faults). Every command reads
the same settings (``TOUCHPOINT_*`` environment variables or the TOML file given by
``--config`` / ``TOUCHPOINT_CONFIG``, before or after the command) and has ``--help``
showing its defaults. A mistake in the settings or an unreachable service ends a
command with one line on stderr saying what to do, and a non-zero exit; never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from streams.console import config_option
from streams.operate import commands as operate
from streams.tools import commands as tools

__all__ = ["SETTINGS_HELP", "build_parser", "main"]


#: Where every setting is described; the help of the commands that read settings says so.
SETTINGS_HELP = (
    "Settings come from TOUCHPOINT_* environment variables or a TOML file (--config FILE, "
    "or TOUCHPOINT_CONFIG). `touchpoint config` prints the values in effect; the settings "
    "reference (docs/settings.md, or `touchpoint config --reference`) describes each one."
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, unless the help already states it, or there
    is nothing to state (no default, or an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "(default" in text
            or "%(default)" in text
            or not action.option_strings
            or _no_default(action.default)
        ):
            return text
        return text + " (default: %(default)s)"


def _no_default(value: object) -> bool:
    # by identity: 0 and 0.0 equal False, and a default of 0 is worth showing
    return value is None or value is False or value is argparse.SUPPRESS


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("touchpoint-streams")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


#: Commands whose help points to ``touchpoint config`` and the settings reference.
_READS_SETTINGS = frozenset(
    {
        "worker",
        "migrate",
        "config",
        "generate",
        "erase",
        "effort-check",
        "verify",
        "report",
        "status",
        "dlq",
        "model",
    }
)


def _show_every_default(parser: argparse.ArgumentParser) -> None:
    """Give options without help a help line, so their default shows too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_every_default(sub)
        elif action.option_strings and action.help is None and not _no_default(action.default):
            action.help = "default: %(default)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchpoint",
        description="Customer-experience touchpoints from Kafka into one customer picture.",
        epilog=SETTINGS_HELP,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"touchpoint {_version()}")
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML settings file (or TOUCHPOINT_CONFIG)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: object, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=SETTINGS_HELP if name in _READS_SETTINGS else None,
            formatter_class=_HelpFormatter,
            parents=[config_option()] if name in _READS_SETTINGS else [],
        )
        sub.set_defaults(func=func)
        return sub

    # in the order the help lists them
    operate.register(add)
    tools.register(add)
    operate.register_deployment(add)
    _show_every_default(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``touchpoint`` console script."""
    args = build_parser().parse_args(argv)
    if (
        args.func is not operate.cmd_worker
        and threading.current_thread() is threading.main_thread()
    ):
        # SIGTERM (``timeout``, a supervisor) unwinds like Ctrl-C, so the embedded Kafka
        # and ClickHouse a command started are stopped, not left running
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``touchpoint schema | head``): nothing to trace; point
        # stdout at nothing so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
