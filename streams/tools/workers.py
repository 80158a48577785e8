"""``touchpoint worker`` as a child process: start, ask its web pages, stop, kill."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from streams.tools.embedded.process import free_port

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """One worker process with its own environment, web port and log file.

    The same object can be started again after it stopped or was killed: it keeps its
    environment (and so its state directory), as a restarted machine would.
    """

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.env = env
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the process (a fresh web port each time: the old one may linger)."""
        self.port = free_port()
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts + 1} of {self.name} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env={**self.env, "TOUCHPOINT_WEB_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def get(self, path: str) -> dict[str, Any] | None:
        """One of the worker's JSON pages; None while it does not answer."""
        import httpx

        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2)
            return dict(response.json()) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Wait until its web pages answer; raise with its log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"worker {self.name} exited; its log:\n{self.tail()}")
            if self.get("/accounting") is not None:
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker {self.name} not ready within {timeout:.0f} s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90.0) -> float:
        """Send ``sig`` and wait for the exit (SIGKILL after ``timeout``); return the
        seconds it took to exit, ``inf`` when it had to be killed."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return float("inf")
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash, an OOM kill)."""
        self.stop(signal.SIGKILL)

    def tail(self, chars: int = 5000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
