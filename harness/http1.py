"""HTTP/1.1 client on asyncio streams: request/response codec and a per-origin keep-alive connection pool."""

from __future__ import annotations

import asyncio
import time
from collections import deque

Headers = list[tuple[bytes, bytes]]

NO_BODY_STATUS = frozenset({204, 304})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_HEX = frozenset(b"0123456789abcdefABCDEF")


# -- errors: `sent` says whether the request may have reached the server ------------------

class HTTP1Error(Exception):
    """A request failed; `sent` is False only when no byte of it was ever written."""

    sent = True


class ConnectFailed(HTTP1Error):
    """No connection could be made (refused, unreachable): nothing was sent."""

    sent = False


class ConnectTimeout(ConnectFailed):
    """The connection was not made in time: nothing was sent."""


class PoolTimeout(HTTP1Error):
    """No free connection slot in time: nothing was sent."""

    sent = False


class NoResponse(HTTP1Error):
    """The server closed the connection before any byte of a response (after the stale-connection retry)."""


class ResponseTimeout(HTTP1Error):
    """No complete response in time."""


class ProtocolError(HTTP1Error):
    """A malformed or truncated response (bad status line or header, short body, oversized head)."""


class WriteFailed(HTTP1Error):
    """Writing the request failed."""


class ReadFailed(HTTP1Error):
    """Reading the response failed (connection reset, ...)."""


# -- codec ------------------------------------------------------------------------------

def encode_request(method: str, target: bytes, headers: Headers, body: bytes) -> bytes:
    """The request head and body as one buffer; the codec owns the framing (Content-Length, never chunked)."""
    out = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for k, v in headers:
        if k.lower() not in _FRAMING:
            out += (k, b": ", v, b"\r\n")
    if body or method in BODY_METHODS:
        out += (b"content-length: ", b"%d" % len(body), b"\r\n")
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)


class Head:
    """A parsed response head: status, headers as sent, and how the body is framed."""

    __slots__ = ("status", "headers", "length", "chunked", "close")

    def __init__(self, status: int, headers: Headers, length: int, chunked: bool, close: bool) -> None:
        self.status = status
        self.headers = headers
        self.length = length      # -1: no Content-Length
        self.chunked = chunked
        self.close = close        # the server will not reuse the connection


def parse_head(raw: bytes) -> Head:
    """Parse a status line and header fields (`raw` ends with CRLF CRLF). Raises ProtocolError."""
    lines = raw.rstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    version = parts[0]
    if len(parts) < 2 or not version.startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers: Headers = []
    length = -1
    chunked = False
    has_te = False
    connection: set[bytes] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        name = name.strip()
        if not colon or not name:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        value = value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            if not value.isdigit() or (length >= 0 and int(value) != length):
                raise ProtocolError(f"bad content-length {value[:40]!r}")
            length = int(value)
        elif lname == b"transfer-encoding":
            has_te = True
            chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"  # chunked must be the last coding
        elif lname == b"connection":
            connection.update(t.strip() for t in value.lower().split(b","))
    close = b"close" in connection or (version == b"HTTP/1.0" and b"keep-alive" not in connection)
    if has_te:
        if length >= 0:
            close = True  # both framings given: the body is chunked, the connection is not trusted afterwards
        if not chunked:
            length, close = -1, True  # a transfer coding other than chunked: the body runs to the close
    if status == 101:
        close = True  # a protocol switch is not spoken here
    return Head(status, headers, length, chunked, close)


def has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status not in NO_BODY_STATUS and not 100 <= status < 200


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body (chunk extensions and trailer fields are read and dropped)."""
    parts = []
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        if not size_line or not _HEX.issuperset(size_line):
            raise ProtocolError(f"bad chunk size {size_line[:40]!r}")
        size = int(size_line, 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")


async def read_response(reader: asyncio.StreamReader, method: str, raw: bytes | None = None) -> tuple[Head, bytes]:
    """Read one response (1xx interim answers skipped); `raw` is its head when already read."""
    while True:
        if raw is None:
            raw = await reader.readuntil(b"\r\n\r\n")
        head = parse_head(raw)
        if head.status >= 200 or head.status == 101:
            break
        raw = None  # 100 Continue, 103 Early Hints: the real answer follows
    if not has_body(method, head.status):
        return head, b""
    if head.chunked:
        return head, await read_chunked(reader)
    if head.length >= 0:
        return head, await reader.readexactly(head.length)
    head.close = True  # delimited by the close
    return head, await reader.read()


# -- connection pool --------------------------------------------------------------------

class _Conn:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float | None) -> bool:
        return (not self.writer.is_closing() and not self.reader.at_eof()
                and (expiry is None or now - self.idle_since < expiry))

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # already broken: nothing to release
            pass


class _Stale(Exception):
    """A reused connection was closed by the server before any response byte."""


class Pool:
    """Keep-alive HTTP/1.1 connections per (host, port); one request per connection at a time.

    A request on a reused idle connection that the server closed (EOF or reset before any
    response byte) is sent once more on a fresh connection. `max_connections` bounds the
    requests in flight (None: unbounded); `keepalive_expiry` drops connections idle longer
    (keep it below the server's own idle timeout); at most `max_idle_per_origin` are kept.
    """

    def __init__(self, *, max_connections: int | None = None, max_idle_per_origin: int = 64,
                 keepalive_expiry: float | None = 4.0) -> None:
        self.max_connections = max_connections
        self.max_idle = max_idle_per_origin
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[str, int], deque[_Conn]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    async def request(self, host: str, port: int, method: str, target: bytes, headers: Headers, body: bytes = b"", *,
                      connect_timeout: float | None = None, read_timeout: float | None = None,
                      pool_timeout: float | None = None) -> tuple[int, Headers, bytes]:
        """Send one request (`headers` must carry Host) and return (status, headers, body), the body read whole."""
        payload = encode_request(method, target, headers, body)
        if self.max_connections is None:
            return await self._request(host, port, method, payload, connect_timeout, read_timeout)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        try:
            async with asyncio.timeout(pool_timeout):
                await self._slots.acquire()
        except TimeoutError as e:
            raise PoolTimeout(f"no free connection slot for {host}:{port} in time") from e
        try:
            return await self._request(host, port, method, payload, connect_timeout, read_timeout)
        finally:
            self._slots.release()

    async def _request(self, host: str, port: int, method: str, payload: bytes,
                       connect_timeout: float | None, read_timeout: float | None) -> tuple[int, Headers, bytes]:
        key = (host, port)
        conn = self._take_idle(key)
        if conn is not None:
            try:
                return await self._exchange(key, conn, method, payload, read_timeout, reused=True)
            except _Stale:
                pass
            try:  # once more on a fresh connection; the request was written, so a failure now is not "nothing sent"
                conn = await self._connect(host, port, connect_timeout)
            except ConnectFailed as e:
                raise NoResponse(f"{host}:{port} closed an idle connection without answering; reconnect failed: {e}") from e
        else:
            conn = await self._connect(host, port, connect_timeout)
        return await self._exchange(key, conn, method, payload, read_timeout, reused=False)

    async def _connect(self, host: str, port: int, timeout: float | None) -> _Conn:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError as e:
            raise ConnectTimeout(f"connect to {host}:{port} timed out") from e
        except OSError as e:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {e.strerror or e}") from e
        return _Conn(reader, writer)

    async def _exchange(self, key: tuple[str, int], conn: _Conn, method: str, payload: bytes,
                        timeout: float | None, *, reused: bool) -> tuple[int, Headers, bytes]:
        where = "%s:%d" % key
        answered = False
        try:
            async with asyncio.timeout(timeout):
                try:
                    conn.writer.write(payload)
                except (OSError, RuntimeError) as e:
                    if reused:
                        raise _Stale() from e
                    raise WriteFailed(f"write to {where} failed: {e}") from e
                try:
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        raise
                    if reused:
                        raise _Stale() from e
                    raise NoResponse(f"{where} closed the connection without answering") from e
                except OSError as e:
                    if reused:
                        raise _Stale() from e
                    raise
                answered = True
                head, body = await read_response(conn.reader, method, raw)
        except BaseException as e:
            conn.close()
            if isinstance(e, (HTTP1Error, _Stale)):
                raise
            if isinstance(e, TimeoutError):
                raise ResponseTimeout(f"no {'complete ' if answered else ''}answer from {where} in time") from e
            if isinstance(e, asyncio.IncompleteReadError):
                raise ProtocolError(f"{where} closed the connection mid-response") from e
            if isinstance(e, asyncio.LimitOverrunError):
                raise ProtocolError(f"{where} sent an oversized head or chunk line") from e
            if isinstance(e, ValueError):
                raise ProtocolError(f"{where} sent a malformed response: {e}") from e
            if isinstance(e, OSError):
                raise ReadFailed(f"read from {where} failed: {e.strerror or e}") from e
            raise
        if head.close or self._closed:
            conn.close()
        else:
            idle = self._idle.get(key)
            if idle is None:
                idle = self._idle[key] = deque()
            if len(idle) < self.max_idle:
                conn.idle_since = time.monotonic()
                idle.append(conn)
            else:
                conn.close()
        return head.status, head.headers, body

    def _take_idle(self, key: tuple[str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # most recently used first: the least likely to be closed by the server
            if conn.usable(now, self.keepalive_expiry):
                return conn
            conn.close()
        return None

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when their request ends."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
