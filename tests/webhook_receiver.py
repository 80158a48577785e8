"""A real HTTP server on loopback for the webhook tests: scripted answers, every request
recorded, and a switch to stop and resume listening on the same port."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Received", "Receiver", "Reply"]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds before answering (to provoke client timeouts)


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic() on arrival


class Receiver:
    """``async with Receiver() as r``: serves ``r.url`` until the block ends."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Received] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        self._site: web.TCPSite | None = None

    async def __aenter__(self) -> Receiver:
        await self._runner.setup()
        await self.up()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._runner.cleanup()

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, then with 204."""
        self._scripts.setdefault(path, deque()).extend(replies)

    async def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up`."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def up(self) -> None:
        if self._site is None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await self._site.start()

    async def wait_for(
        self, n: int, path: str | None = None, timeout: float = 15.0
    ) -> list[Received]:
        def matching() -> list[Received]:
            return [r for r in self.requests if path is None or r.path == path]

        async with self._arrived:
            try:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: len(matching()) >= n), timeout
                )
            except TimeoutError:
                got = [(r.path, r.headers.get("webhook-id")) for r in self.requests]
                raise AssertionError(f"expected {n} requests to {path}, got {got}") from None
        return matching()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(
            request.path, {k.lower(): v for k, v in request.headers.items()}, body, time.monotonic()
        )
        self.requests.append(received)
        async with self._arrived:
            self._arrived.notify_all()
        queue = self._scripts.get(request.path)
        reply = queue.popleft() if queue else Reply(204)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
