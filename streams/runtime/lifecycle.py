"""How a worker process starts, rides out outages, and ends.

* **Start**: Kafka and ClickHouse may come up after the worker (a cluster restart, a
  deploy in the wrong order). :func:`retry_until_ready` keeps trying the start-up
  steps with backoff, logging what it waits for, up to ``startup_timeout_s``.
* **Outages while running**: the Kafka clients retry on their own and the ClickHouse
  sink retries every insert; what runs on a timer (topic discovery, compaction,
  alert looks) must not end the app on a connection error: :func:`survives` logs it
  and lets the next tick try again.
* **End**: a stop (SIGTERM, Ctrl-C) is bounded: after ``shutdown_timeout_s`` the process
  exits at once with status 1 (the local state is rebuilt from the changelogs at the
  next start, see ``streams.runtime.app.clean_run``). An app that crashed (an agent's error, a
  failed changelog write) exits promptly with status 1 too, so a supervisor restarts
  it, instead of lingering half-stopped while its web pages still answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust

__all__ = ["SupervisedWorker", "retry_until_ready", "survives"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Exit status of a worker that had to be ended by force or crashed.
EXIT_FAILED = 1


async def retry_until_ready(
    step: Callable[[], Awaitable[T]],
    what: str,
    timeout_s: float,
    *,
    first_delay_s: float = 0.5,
    max_delay_s: float = 10.0,
) -> T:
    """Run ``step`` until it succeeds, with exponential backoff, for at most
    ``timeout_s`` seconds (0: no limit); then raise its last error.

    Every failure is logged with what is awaited and when the next try comes.
    """
    started = time.monotonic()
    delay = first_delay_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await step()
        except Exception as exc:
            waited = time.monotonic() - started
            if timeout_s and waited + delay > timeout_s:
                raise
            logger.warning(
                "waiting for %s (attempt %d, %.0f s so far): %s; trying again in %.1f s",
                what,
                attempt,
                waited,
                _one_line(exc),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(max_delay_s, delay * 2)


def survives(what: str) -> Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]:
    """Make a timer's body log its errors instead of crashing the app; the next tick
    tries again. For work that is safe to skip once (discovery, looks, compaction)."""

    def wrap(fun: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        @functools.wraps(fun)
        async def guarded() -> None:
            try:
                await fun()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("%s failed, trying again at the next tick: %s", what, _one_line(exc))

        return guarded

    return wrap


class SupervisedWorker(faust.Worker):
    """Faust's worker with a bounded stop and a prompt exit after a crash.

    ``shutdown_timeout_s`` bounds a stop from the moment it is asked for; a crash of the
    app or of any of its services ends the process within ``crash_exit_s``.
    """

    def __init__(
        self, *args: Any, shutdown_timeout_s: float = 30.0, crash_exit_s: float = 5.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.crash_exit_s = crash_exit_s
        self._deadline: threading.Timer | None = None
        self._deadline_why = ""

    def _schedule_shutdown(self, signal: Any) -> None:
        self._exit_within(self.shutdown_timeout_s, f"stopping on {signal.name}")
        super()._schedule_shutdown(signal)

    async def on_started(self) -> None:
        await super().on_started()
        self.add_future(self._watch_for_crash())

    async def on_stop(self) -> None:
        # A crash often stops the worker at once, which cancels the watcher below
        # before its next look: every stop is bounded here, whatever started it.
        if not self._report_crash():
            self._exit_within(self.shutdown_timeout_s, "stopping")
        await super().on_stop()

    async def _watch_for_crash(self) -> None:
        app: Any = self.app
        waits = [
            asyncio.ensure_future(app._crashed.wait()),
            asyncio.ensure_future(self._crashed.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        self._report_crash()

    def _report_crash(self) -> bool:
        """Arm the prompt exit if the app or the worker crashed; true if so."""
        app: Any = self.app
        if not (app._crashed.is_set() or self._crashed.is_set()):
            return False
        if self._deadline is not None and self._deadline_why == "crashed":
            return True
        reason = app.crash_reason or self.crash_reason
        logger.critical(
            "the app crashed (%s); exiting within %.0f s so a supervisor restarts it",
            _one_line(reason) if reason else "no reason given",
            self.crash_exit_s,
        )
        self._exit_within(self.crash_exit_s, "crashed")
        return True

    def _exit_within(self, seconds: float, why: str) -> None:
        if self._deadline is not None:
            if why != "crashed":
                return
            self._deadline.cancel()
        timer = threading.Timer(seconds, _force_exit, args=(seconds, why))
        timer.daemon = True
        timer.start()
        self._deadline = timer
        self._deadline_why = why


def _force_exit(seconds: float, why: str) -> None:
    logger.critical(
        "%s: not finished after %.0f s, exiting now (status %d); the local state is "
        "rebuilt from the changelogs at the next start",
        why,
        seconds,
        EXIT_FAILED,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_FAILED)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0][:300] if text else type(exc).__name__
