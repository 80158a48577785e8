"""Webhook delivery: Standard Webhooks signatures, retries, a ledger, address guards.

Each endpoint has its own bounded queue and its own connections, so a slow or dead
endpoint delays only itself; an alert that finds its endpoint's queue full is given up
at once (``dead``, "queue full") rather than stalling the others.

One attempt is one ``POST`` of the alert's body with the headers ``webhook-id`` (the
alert id, the same on every retry), ``webhook-timestamp`` (seconds, at the attempt) and
``webhook-signature`` (``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body`` under
the endpoint's key). A 2xx answer delivers it. Timeouts, connection errors, 408, 429 and
5xx are retried after an exponential backoff with full jitter, or after the endpoint's
``Retry-After``; any other answer (a redirect, a 4xx) gives up at once, as does running
out of attempts or of the retry budget. Every settled delivery goes to the ledger, which
the next owner of the alerts reads, so an alert is delivered at most once per endpoint
across restarts and rebalances (short of a crash between the endpoint's 2xx and the
ledger write, where the endpoint sees the same ``webhook-id`` again).

Connections go only where the endpoint's rules allow: every address the host resolves
to is checked at connect time (private, loopback, link-local, shared and reserved
ranges, cloud metadata addresses are refused unless the endpoint allows private
addresses), the connection is made to the address checked, redirects are not followed,
proxies from the environment are ignored and response bodies are read up to a cap.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import httpcore
import httpx

from schemas.alert_rules import AlertRules, Endpoint
from schemas.alerts import Alert

__all__ = [
    "Deliverer",
    "GuardedBackend",
    "Ledger",
    "Outcome",
    "RefusedAddress",
    "is_refused_address",
    "sign",
]

logger = logging.getLogger(__name__)

USER_AGENT = "touchpoint-streams-webhooks/1"
#: answers worth trying again
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64(HMAC-SHA256(id.timestamp.body))."""
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# --- Where connections may go ----------------------------------------------------------

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}


def is_refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private, loopback, link-local, shared, reserved, multicast or metadata addresses."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in _METADATA or not ip.is_global or ip.is_multicast


class RefusedAddress(httpcore.ConnectError):
    """The endpoint's host resolves only to addresses its rules refuse."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that resolves the host itself, refuses forbidden addresses and
    connects to an address it checked (so a second DNS answer cannot slip past)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        found = []
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if ip not in found:
                found.append(ip)
        allowed = [ip for ip in found if self._allow_private or not is_refused_address(ip)]
        if not allowed:
            raise RefusedAddress(
                f"{host} resolves to {', '.join(map(str, found))}: private, loopback, "
                "link-local or metadata addresses are refused (allow_private is off)"
            )
        error: Exception | None = None
        for ip in allowed:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("unix sockets are not webhook endpoints")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def client_for(endpoint: Endpoint) -> httpx.AsyncClient:
    """An HTTP client for one endpoint: guarded connections, no redirects, no proxies."""
    transport = httpx.AsyncHTTPTransport(retries=0)
    pool: Any = transport._pool  # httpx builds the pool; the guard goes under it
    pool._network_backend = GuardedBackend(pool._network_backend, endpoint.allow_private)
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(endpoint.timeout),
        limits=httpx.Limits(max_connections=endpoint.concurrency),
        headers={"user-agent": USER_AGENT, "content-type": "application/json"},
    )


# --- Outcomes and the ledger -----------------------------------------------------------

Status = Literal["retrying", "delivered", "dead"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where one alert's delivery to one endpoint stands."""

    alert_id: str
    endpoint: str
    status: Status
    attempts: int
    last_status: int  # HTTP status of the last answer, 0 when none came
    last_error: str


class Ledger(Protocol):
    """What was settled (delivered or dead) per alert and endpoint, kept durably."""

    def settled(self, alert_id: str, endpoint: str) -> bool: ...

    async def record(self, outcome: Outcome) -> None:
        """Keep ``outcome``; for a settled one, durably before returning."""


@dataclass(frozen=True, slots=True)
class _Try:
    status: int
    error: str
    retry_after: float | None
    result: str  # for the attempts metric: 2xx, 4xx, 5xx, 429, timeout, error

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retriable(self) -> bool:
        return self.status in RETRY_STATUSES or (self.status == 0 and self.result != "refused")


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class _Job:
    alert: Alert
    done: Callable[[Outcome | None], None]
    owner: asyncio.Future[list[Outcome]]  # cancelled: the alert was abandoned


class Deliverer:
    """Delivers alerts to every endpoint whose filters take them, beside the stream."""

    def __init__(
        self,
        rules: AlertRules,
        keys: Mapping[str, bytes],
        ledger: Ledger,
        metrics: Any = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rules = rules
        self._keys = dict(keys)
        self._ledger = ledger
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()  # jitter only, never a secret
        self._sleep = sleep
        self._queues: dict[str, asyncio.Queue[_Job]] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: dict[str, int] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._futures: dict[str, asyncio.Future[list[Outcome]]] = {}

    async def start(self) -> None:
        for endpoint in self.rules.endpoints:
            self._queues[endpoint.name] = asyncio.Queue(endpoint.queue_size)
            self._clients[endpoint.name] = client_for(endpoint)
            self._busy[endpoint.name] = 0
            for i in range(endpoint.concurrency):
                self._tasks.append(
                    asyncio.create_task(self._work(endpoint), name=f"webhook-{endpoint.name}-{i}")
                )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*self._settling, return_exceptions=True)  # outcomes being stored
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def matching(self, alert: Alert) -> list[str]:
        """The endpoints whose filters take ``alert``."""
        return [e.name for e in self.rules.endpoints if e.wants(alert.type, alert.segments)]

    def submit(self, alert: Alert) -> asyncio.Future[list[Outcome]]:
        """Queue ``alert`` for each matching endpoint that has not settled it; the future
        resolves once every one of them has (a full queue settles it as dead at once)."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[list[Outcome]] = loop.create_future()
        running = self._futures.get(alert.id)
        if running is not None:  # the same alert again (a replay) while it is in delivery

            def follow(f: asyncio.Future[list[Outcome]]) -> None:
                if not result.done():
                    result.set_result([] if f.cancelled() else f.result())

            running.add_done_callback(follow)
            return result
        self._futures[alert.id] = result
        result.add_done_callback(lambda _f: self._futures.pop(alert.id, None))
        names = [n for n in self.matching(alert) if not self._ledger.settled(alert.id, n)]
        outcomes: list[Outcome] = []
        waiting = len(names)

        def done(outcome: Outcome | None) -> None:
            nonlocal waiting
            if outcome is not None:
                outcomes.append(outcome)
            waiting -= 1
            if waiting == 0 and not result.done():
                result.set_result(outcomes)

        if not names:
            result.set_result([])
        for name in names:
            try:
                self._queues[name].put_nowait(_Job(alert, done, result))
            except asyncio.QueueFull:
                self._settle_soon(Outcome(alert.id, name, "dead", 0, 0, "queue full"), done)
            self._gauge(name)
        return result

    def abandon(self, futures: Iterable[asyncio.Future[Any]]) -> None:
        """Stop delivering the alerts of these ``submit`` futures (their partition moved
        to another worker, which sends what is not settled); the futures are cancelled."""
        for future in futures:
            future.cancel()

    def _gauge(self, name: str) -> None:
        if self._metrics is not None:
            depth = self._queues[name].qsize() + self._busy[name]
            self._metrics.alert_queue.labels(name).set(depth)

    def _settle_soon(self, outcome: Outcome, done: Callable[[Outcome | None], None]) -> None:
        """Store ``outcome`` in its own task (``stop`` waits for it), then call ``done``."""
        task = asyncio.create_task(self._settle(outcome, done))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, outcome: Outcome, done: Callable[[Outcome | None], None]) -> None:
        try:
            await self._ledger.record(outcome)
        except Exception:
            logger.exception("could not record the outcome of %s", outcome.alert_id)
            done(None)
            return
        if self._metrics is not None:
            self._metrics.alert_deliveries.labels(outcome.endpoint, outcome.status).inc()
        if outcome.status == "dead":
            logger.warning(
                "alert %s given up for endpoint %s after %d attempts: %s",
                outcome.alert_id,
                outcome.endpoint,
                outcome.attempts,
                outcome.last_error or f"HTTP {outcome.last_status}",
            )
        done(outcome)

    async def _work(self, endpoint: Endpoint) -> None:
        queue = self._queues[endpoint.name]
        while True:
            job = await queue.get()
            self._busy[endpoint.name] += 1
            try:
                outcome = await self._deliver(endpoint, job.alert, job.owner)
                if outcome is None:
                    job.done(None)
                else:
                    # the next alert goes out while this outcome is being stored: its
                    # ledger write waits for a sink flush, which must not pace delivery
                    self._settle_soon(outcome, job.done)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("delivering %s to %s failed", job.alert.id, endpoint.name)
            finally:
                self._busy[endpoint.name] -= 1
                self._gauge(endpoint.name)

    async def _deliver(
        self, endpoint: Endpoint, alert: Alert, owner: asyncio.Future[Any]
    ) -> Outcome | None:
        """Attempt until delivered or given up; ``None`` if another delivery settled it."""
        name = endpoint.name
        body = alert.body()
        started = time.monotonic()
        attempt = 0
        while True:
            if self._ledger.settled(alert.id, name) or owner.cancelled():
                return None
            attempt += 1
            tried = await self._post(endpoint, alert.id, body)
            if self._metrics is not None:
                self._metrics.alert_attempts.labels(name, tried.result).inc()
            if tried.ok:
                if self._metrics is not None:
                    lag = max(0.0, self._clock() - alert.fired_at / 1000)
                    self._metrics.alert_latency.labels(name).observe(lag)
                return Outcome(alert.id, name, "delivered", attempt, tried.status, "")
            error = tried.error or f"HTTP {tried.status}"
            if not tried.retriable:
                return Outcome(alert.id, name, "dead", attempt, tried.status, error)
            delay = self._backoff(endpoint, attempt, tried.retry_after)
            elapsed = time.monotonic() - started
            if attempt >= endpoint.max_attempts or elapsed + delay > endpoint.retry_budget:
                return Outcome(
                    alert.id, name, "dead", attempt, tried.status, f"retries exhausted: {error}"
                )
            await self._ledger.record(
                Outcome(alert.id, name, "retrying", attempt, tried.status, error)
            )
            await self._sleep(delay)

    def _backoff(self, endpoint: Endpoint, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, endpoint.retry_budget)
        ceiling = min(endpoint.max_backoff, endpoint.backoff * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    async def _post(self, endpoint: Endpoint, msg_id: str, body: bytes) -> _Try:
        timestamp = int(self._clock())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._keys[endpoint.name], msg_id, timestamp, body),
        }
        client = self._clients[endpoint.name]
        cap = self.rules.max_response_bytes
        try:
            async with client.stream("POST", endpoint.url, content=body, headers=headers) as answer:
                read = 0
                async for chunk in answer.aiter_raw():
                    read += len(chunk)
                    if read >= cap:
                        break
                status = answer.status_code
                retry_after = retry_after_seconds(answer.headers.get("retry-after"), self._clock())
        except httpx.TimeoutException as exc:
            return _Try(0, f"timeout: {type(exc).__name__}", None, "timeout")
        except httpx.TransportError as exc:
            if isinstance(exc.__cause__, RefusedAddress):
                return _Try(0, str(exc), None, "refused")
            return _Try(0, f"{type(exc).__name__}: {exc}", None, "error")
        family = "429" if status == 429 else f"{status // 100}xx"
        return _Try(status, "", retry_after, family)
