"""Upstream HTTP/1.1 clients of the router: a lean asyncio keep-alive pool and an httpx one to compare."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol
from urllib.parse import urlsplit

from harness.errors import HarnessError

Headers = list[tuple[bytes, bytes]]
NO_BODY_STATUS = frozenset({204, 304})


class UpstreamError(HarnessError):
    """A target failed after the request may have reached it (timeout, protocol error, reset mid-response)."""


class UpstreamConnectError(UpstreamError):
    """A target could not be connected to: the request never reached it, so another target may be tried."""


class Upstream(Protocol):
    async def request(self, base_url: str, method: str, target: bytes, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]: ...

    async def close(self) -> None: ...


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before any response byte."""


class UpstreamPool:
    """Minimal HTTP/1.1 client with per-target keep-alive connections (Content-Length, chunked, close-delimited)."""

    def __init__(self, *, timeout_s: float = 30.0, connect_timeout_s: float = 5.0, max_idle_per_target: int = 64) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle_per_target
        self._idle: dict[str, deque[_Conn]] = {}
        self._addr: dict[str, tuple[str, int, bytes]] = {}

    def _address(self, base_url: str) -> tuple[str, int, bytes]:
        addr = self._addr.get(base_url)
        if addr is None:
            parts = urlsplit(base_url)
            if parts.scheme != "http":
                raise UpstreamConnectError(f"target {base_url}: only http:// targets are proxied")
            host = parts.hostname or "127.0.0.1"
            port = parts.port or 80
            addr = (host, port, parts.netloc.encode())
            self._addr[base_url] = addr
        return addr

    async def _connect(self, base_url: str) -> _Conn:
        host, port, _ = self._address(base_url)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as e:
            raise UpstreamConnectError(f"cannot connect to {base_url}: {e or type(e).__name__}") from e
        return _Conn(reader, writer)

    async def request(self, base_url: str, method: str, target: bytes, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        """Send one request and return (status, headers, body); the body is fully read."""
        _, _, netloc = self._address(base_url)
        head = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", netloc, b"\r\n"]
        for k, v in headers:
            head += [k, b": ", v, b"\r\n"]
        if body or method in ("POST", "PUT", "PATCH"):
            head += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        head.append(b"\r\n")
        payload = b"".join(head) + body
        idle = self._idle.get(base_url)
        while idle:
            conn = idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._exchange(base_url, conn, method, payload, reused=True)
            except _StaleConnection:
                continue  # closed by the server while idle: take another (or a fresh) connection
        conn = await self._connect(base_url)
        try:
            return await self._exchange(base_url, conn, method, payload, reused=False)
        except _StaleConnection as e:
            raise UpstreamError(f"target {base_url} closed the connection without answering") from e

    async def _exchange(self, base_url: str, conn: _Conn, method: str, payload: bytes, *, reused: bool) -> tuple[int, Headers, bytes]:
        got_bytes = False
        try:
            async with asyncio.timeout(self.timeout_s):
                conn.writer.write(payload)
                reader = conn.reader
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as e:
                    if not e.partial:
                        raise _StaleConnection() from e
                    raise
                got_bytes = True
                lines = head[:-4].split(b"\r\n")
                status_line = lines[0].split(b" ", 2)
                version = status_line[0]
                status = int(status_line[1])
                while 100 <= status < 200 and status != 101:  # interim answers (100 Continue, 103): skip
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head[:-4].split(b"\r\n")
                    status_line = lines[0].split(b" ", 2)
                    version = status_line[0]
                    status = int(status_line[1])
                headers: Headers = []
                length = -1
                chunked = False
                close = version == b"HTTP/1.0"
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    value = value.strip()
                    lname = name.lower()
                    if lname == b"content-length":
                        length = int(value)
                    elif lname == b"transfer-encoding":
                        chunked = b"chunked" in value.lower()
                    elif lname == b"connection":
                        lv = value.lower()
                        if b"close" in lv:
                            close = True
                        elif b"keep-alive" in lv:
                            close = False
                    headers.append((name, value))
                if method == "HEAD" or status in NO_BODY_STATUS or 100 <= status < 200:
                    data = b""
                elif chunked:
                    parts = []
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                        if size == 0:
                            while await reader.readuntil(b"\r\n") != b"\r\n":
                                pass
                            break
                        parts.append(await reader.readexactly(size))
                        await reader.readexactly(2)
                    data = b"".join(parts)
                elif length >= 0:
                    data = await reader.readexactly(length)
                else:
                    data = await reader.read()
                    close = True
        except _StaleConnection:
            conn.close()
            if reused:
                raise
            raise UpstreamConnectError(f"target {base_url} closed the connection without answering") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError, TimeoutError) as e:
            conn.close()
            if reused and not got_bytes and isinstance(e, ConnectionResetError):
                raise _StaleConnection() from e
            raise UpstreamError(f"target {base_url}: {type(e).__name__}: {e}") from e
        except BaseException:
            conn.close()
            raise
        if close:
            conn.close()
        else:
            idle = self._idle.setdefault(base_url, deque())
            if len(idle) < self.max_idle:
                idle.append(conn)
            else:
                conn.close()
        return status, headers, data

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()


class HttpxUpstream:
    """The same interface on httpx.AsyncClient (keep-alive pool); slower, kept to compare in bench/router.py."""

    def __init__(self, *, timeout_s: float = 30.0) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            trust_env=False,
        )

    async def request(self, base_url: str, method: str, target: bytes, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        httpx = self._httpx
        req = httpx.Request(method, base_url + target.decode("latin-1"), headers=headers, content=body)
        try:
            resp = await self.client.send(req, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise UpstreamConnectError(f"cannot connect to {base_url}: {e}") from e
        except httpx.HTTPError as e:
            raise UpstreamError(f"target {base_url}: {type(e).__name__}: {e}") from e
        try:
            data = b"".join([chunk async for chunk in resp.aiter_raw()])
        except httpx.HTTPError as e:
            raise UpstreamError(f"target {base_url}: {type(e).__name__}: {e}") from e
        finally:
            await resp.aclose()
        return resp.status_code, list(resp.headers.raw), data

    async def close(self) -> None:
        await self.client.aclose()
