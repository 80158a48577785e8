"""What the commands share on the command line: their settings, ``--config``, the log
format, waiting for Kafka, and messages about a run on stderr.

A mistake in the settings or an unreachable service ends a command with one line on
stderr saying what to do, and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from time import monotonic

from pydantic import ValidationError

from streams.settings import ConfigurationError, Settings, describe_error, load_settings

__all__ = ["config_option", "configure_logging", "say", "settings_from_args", "wait_for_kafka"]


def settings_from_args(args: argparse.Namespace, **overrides: object) -> Settings:
    """The settings, or exit with one line saying what is wrong with them."""
    try:
        return load_settings(
            getattr(args, "config", None), **{k: v for k, v in overrides.items() if v is not None}
        )
    except (ValidationError, ConfigurationError, FileNotFoundError) as exc:
        raise SystemExit(f"touchpoint: {describe_error(exc)}") from None


async def wait_for_kafka(settings: Settings, timeout_s: float) -> None:
    """Return once the brokers answer; exit with what to check after ``timeout_s``.

    aiokafka logs each failed connection attempt at ERROR; those lines are held back
    here, so the operator reads one message, not a log per retry.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError, KafkaError

    deadline = monotonic() + timeout_s
    noisy = logging.getLogger("aiokafka")
    level = noisy.level
    noisy.setLevel(logging.CRITICAL)
    last = ""
    try:
        while True:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=settings.kafka_bootstrap,
                request_timeout_ms=int(max(1.0, min(10.0, timeout_s)) * 1000),
                **settings.kafka_client_options(),
            )
            try:
                await asyncio.wait_for(admin.start(), max(0.5, deadline - monotonic()))
                return
            except KafkaConnectionError:
                last = "no broker answered"
            except (KafkaError, OSError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            finally:
                await admin.close()
            if monotonic() >= deadline:
                raise SystemExit(
                    f"touchpoint: cannot reach Kafka at {settings.kafka_bootstrap} within "
                    f"{timeout_s:g} s ({last.strip()}); check TOUCHPOINT_KAFKA_BOOTSTRAP and "
                    "that the brokers are running"
                )
            await asyncio.sleep(min(1.0, max(0.0, deadline - monotonic())))
    finally:
        noisy.setLevel(level)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def config_option() -> argparse.ArgumentParser:
    """A parent parser with ``--config``, for the commands that read settings: the option
    is accepted after the command too (``touchpoint worker --config FILE``). Its default
    is SUPPRESS, so a ``--config`` given before the command stays when none follows."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML settings file (or TOUCHPOINT_CONFIG); also accepted before the command",
    )
    return parent


def say(message: str) -> None:
    """A message about the run, on stderr (a command's report goes to stdout)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
