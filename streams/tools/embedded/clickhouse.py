"""The ClickHouse engine (chdb) behind the ClickHouse HTTP interface, on loopback.

No ClickHouse server is needed for the demo or the tests: this module serves the
real ClickHouse engine in-process (``chdb``) over the same HTTP interface a server
offers, so the worker's one sink code path (clickhouse-connect), ``curl`` and any
ClickHouse HTTP client work against it unchanged. Production points
``TOUCHPOINT_CLICKHOUSE_URL`` at a real server instead.

What it implements of the interface: ``GET /ping``; queries in the ``query`` URL
parameter and/or the body (GET or POST); inserts whose data follows in the body in
any input format, chunked or not, compressed with any ``Content-Encoding`` that
clickhouse-connect or curl send (gzip, deflate, br, zstd, lz4); the ``database``
parameter; every other URL parameter that names a ClickHouse setting, applied to
that query only; the ``X-ClickHouse-*`` response headers; errors as
``Code: N. DB::Exception: ...`` with HTTP 500 and ``X-ClickHouse-Exception-Code``.
Queries run one at a time: a chdb session is not safe for concurrent use.

Run it with ``python -m streams.tools.embedded.clickhouse --path DIR [--port N]``; it
prints its URL on the first line of standard output.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from base64 import b64decode
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from streams.tools.embedded.process import ChildProcess, free_port

__all__ = ["ClickHouseHTTPServer", "EmbeddedClickHouse", "EmbeddedClickHouseError"]

logger = logging.getLogger(__name__)

#: URL parameters that steer the HTTP exchange rather than the query.
_TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "quota_key",
        "buffer_size",
        "wait_end_of_query",
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "client_protocol_version",
    }
)
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_INSERT = re.compile(r"^\s*INSERT\b", re.IGNORECASE)
_INSERT_FORMAT = re.compile(
    r"^(?P<head>.*?)\bFORMAT\s+(?P<fmt>\w+)[ \t]*\r?\n?(?P<rest>.*)$", re.S | re.I
)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")


class EmbeddedClickHouseError(RuntimeError):
    """The embedded server could not start; the message carries its log tail."""


def _decompress(body: bytes, encoding: str) -> bytes:
    """Decode a request body; a body may be several concatenated frames.

    clickhouse-connect compresses each block of an insert as a frame of its own, so
    reading only the first frame would silently drop every block after it.
    """
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)  # reads every member
    if encoding == "deflate":
        return _each_frame(body, lambda: zlib.decompressobj())
    if encoding == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(body), read_across_frames=True
        )
        return bytes(reader.read())
    if encoding == "lz4":
        import lz4.frame

        return _each_frame(body, lambda: lz4.frame.LZ4FrameDecompressor())
    if encoding == "br":
        import brotli

        return bytes(brotli.decompress(body))
    raise ValueError(f"unsupported Content-Encoding: {encoding}")


def _each_frame(body: bytes, decompressor: Any) -> bytes:
    out = bytearray()
    rest = body
    while rest:
        frame = decompressor()
        out += frame.decompress(rest)
        rest = frame.unused_data
    return bytes(out)


_BODY_INSERT = re.compile(rb"^\s*INSERT\b.*?\bFORMAT\s+\w+[ \t]*\r?\n?", re.S | re.I)


def _split_request(query: str, body: bytes) -> tuple[str, bytes | None]:
    """The statement and the data that follows it, wherever the client put them.

    As in ClickHouse, the ``query`` parameter and the body are one text; for an
    ``INSERT ... FORMAT X`` everything after the format name is data (binary allowed).
    """
    if query:
        return query, body or None
    match = _BODY_INSERT.match(body)
    if match:
        return match.group(0).decode(), body[match.end() :] or None
    return body.decode(), None


def _sql_literal(value: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Engine:
    """One chdb connection, used by one request at a time."""

    def __init__(self, path: Path) -> None:
        import chdb

        path.mkdir(parents=True, exist_ok=True)
        self._conn = chdb.connect(str(path))
        self._lock = threading.Lock()

    def execute(
        self,
        sql: str,
        data: bytes | None,
        database: str | None,
        settings: dict[str, str],
        default_format: str,
    ) -> tuple[bytes, str, dict[str, int]]:
        """Run one statement; returns (body, format, summary)."""
        with self._lock:
            applied: list[str] = []
            try:
                self._conn.query(f"USE `{database or 'default'}`")
                for name, value in settings.items():
                    self._conn.query(f"SET {name} = {_sql_literal(value)}")
                    applied.append(name)
                if _INSERT.match(sql):
                    return self._insert(sql, data)
                if data:
                    sql = f"{sql}\n{data.decode()}" if sql else data.decode()
                match = _TRAILING_FORMAT.search(sql)
                fmt = match.group(1) if match else default_format
                result = self._conn.query(sql, fmt)
                body = result.bytes() or b""
                summary = {
                    "read_rows": int(result.rows_read()),
                    "read_bytes": int(result.bytes_read()),
                    "written_rows": 0,
                    "written_bytes": 0,
                    "result_rows": 0,
                    "result_bytes": len(body),
                    "elapsed_ns": int(result.elapsed() * 1e9),
                }
                return body, fmt, summary
            finally:
                for name in applied:
                    self._conn.query(f"SET {name} = DEFAULT")

    def _insert(self, sql: str, data: bytes | None) -> tuple[bytes, str, dict[str, int]]:
        match = _INSERT_FORMAT.match(sql)
        if match is None:  # INSERT ... SELECT / VALUES: the statement carries its data
            result = self._conn.query(sql + ("\n" + data.decode() if data else ""), "TabSeparated")
            return b"", "TabSeparated", {"written_rows": int(result.rows_written())}
        head, fmt, rest = match["head"], match["fmt"], match["rest"].encode()
        payload = rest + (data or b"")
        with self._conn.send_insert(head.strip(), fmt) as inserter:
            if payload:
                inserter.append(payload)
            outcome = inserter.finish()
        summary = {
            "written_rows": int(outcome.rows_written),
            "written_bytes": int(outcome.bytes_written),
            "elapsed_ns": int(outcome.elapsed * 1e9),
        }
        return b"", fmt, summary


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out as separate writes; with Nagle's algorithm and the
    # client's delayed ACK each answer waited about 40 ms
    disable_nagle_algorithm = True
    server: ClickHouseHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._guarded(lambda: b"")

    def do_POST(self) -> None:
        self._guarded(self._read_body)

    def _guarded(self, body: Any) -> None:
        try:
            self._handle(body())
        except Exception as exc:  # a malformed request gets an answer, not a dropped socket
            self._error(400, f"Code: 27. DB::Exception: cannot read the request: {exc}")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(parts)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return _decompress(body, self.headers.get("Content-Encoding", ""))

    def _authorised(self, params: dict[str, str]) -> bool:
        expected = self.server.password
        if not expected:
            return True
        given = params.get("password") or self.headers.get("X-ClickHouse-Key") or ""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            given = b64decode(auth[6:]).decode().partition(":")[2]
        return secrets.compare_digest(given, expected)

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path in ("/ping", "/replicas_status") or (
            url.path == "/" and "query" not in params and not body
        ):
            self._reply(HTTPStatus.OK, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        if not self._authorised(params):
            self._error(
                516, "Code: 516. DB::Exception: Authentication failed. (AUTHENTICATION_FAILED)"
            )
            return
        query_id = params.get("query_id") or str(uuid.uuid4())
        settings = {
            k: v for k, v in params.items() if k not in _TRANSPORT_PARAMS and _SETTING_NAME.match(k)
        }
        settings.setdefault("async_insert", "0")
        sql, data = _split_request(params.get("query", ""), body)
        started = time.monotonic()
        try:
            out, fmt, summary = self.server.engine.execute(
                sql,
                data,
                params.get("database") or self.headers.get("X-ClickHouse-Database"),
                settings,
                params.get("default_format", "TabSeparated"),
            )
        except Exception as exc:
            message = str(exc)
            if not message.startswith("Code:"):
                message = f"Code: 1000. DB::Exception: {message}"
            self._error(500, message, query_id)
            return
        summary.setdefault("elapsed_ns", int((time.monotonic() - started) * 1e9))
        self._reply(
            HTTPStatus.OK,
            out,
            {
                "Content-Type": "application/octet-stream"
                if fmt in ("Native", "RowBinary", "Arrow", "Parquet")
                else "text/plain; charset=UTF-8",
                "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Server-Display-Name": "touchpoint-embedded",
                "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in summary.items()}),
            },
        )

    def _error(self, status: int, message: str, query_id: str = "") -> None:
        match = _ERROR_CODE.search(message)
        self._reply(
            status,
            (message.rstrip() + "\n").encode(),
            {
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": match.group(1) if match else "1000",
                "X-ClickHouse-Query-Id": query_id,
            },
        )

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ClickHouseHTTPServer(ThreadingHTTPServer):
    """The HTTP server over one chdb database path."""

    daemon_threads = True

    def __init__(
        self, path: Path, host: str = "127.0.0.1", port: int = 0, password: str = ""
    ) -> None:
        self.engine = _Engine(path)
        self.password = password
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class EmbeddedClickHouse(ChildProcess):
    """Runs :class:`ClickHouseHTTPServer` in a child process on a free loopback port.

    A separate process keeps the engine's CPU work off the worker's event loop and
    lets one chdb database path belong to exactly one process.
    """

    def __init__(self, path: Path | None = None, *, start_timeout: float = 60.0) -> None:
        self._owned = path is None
        self.path = Path(path or tempfile.mkdtemp(prefix="touchpoint-clickhouse-"))
        self.start_timeout = start_timeout
        self.url = ""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.path / "server.log"

    def start(self) -> None:
        """Start the server; started again after :meth:`kill` or :meth:`restart`, it keeps
        its port and opens the data it had."""
        self.path.mkdir(parents=True, exist_ok=True)
        port = self.port = self.port or free_port()
        with self._log_path.open("ab") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.tools.embedded.clickhouse",
                    "--path",
                    str(self.path / "data"),
                    "--port",
                    str(port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if b"Ok." in sock.recv(1024):
                        return
            except OSError:
                time.sleep(0.2)
        tail = self._log_path.read_text(errors="replace")[-3000:] if self._log_path.exists() else ""
        self.stop()
        raise EmbeddedClickHouseError(f"embedded ClickHouse did not start:\n{tail}")

    def restart(self, *, hard: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL when ``hard``) and start it again on the
        same data and port."""
        if hard:
            self.kill()
        else:
            super().stop()
        self.start()

    def stop(self) -> None:
        super().stop()
        if self._owned:
            shutil.rmtree(self.path, ignore_errors=True)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.tools.embedded.clickhouse")
    parser.add_argument("--path", type=Path, required=True, help="database directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--password", default="", help="require this password (default none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    server = ClickHouseHTTPServer(args.path, args.host, args.port, args.password)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
