"""What every embedded server has in common: a child process on a free loopback port."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ChildProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChildProcess:
    """A server run as a child process: start, stop (SIGTERM, then SIGKILL), log tail.

    Subclasses implement :meth:`start`, set ``_proc`` and ``_log_path``, and may extend
    :meth:`stop` to clean up their files.
    """

    _proc: subprocess.Popen[bytes] | None = None
    _log_path: Path

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would stop it; its files stay as they are,
        so :meth:`start` runs it again on the same data (and the same port)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """SIGTERM, wait up to 20 s, then SIGKILL. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
