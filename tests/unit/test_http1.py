"""harness.http1 against scripted asyncio servers on loopback: framing, HEAD, 1xx, keep-alive, stale connections, errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest

from harness import http1
from harness.lab.router.upstream import UpstreamConnectError, UpstreamError, UpstreamPool
from harness.workload.transport import LeanTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """A loopback server answering each request with `script(reader, writer, n)` (n: request number, from 0)."""

    def __init__(self, script: Handler) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                await self.script(reader, writer, len(self.requests) - 1)
                if writer.is_closing():
                    return
        finally:
            writer.close()


def answer(data: bytes, *, close: bool = False) -> Handler:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()
    return script


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


async def get(port: int, pool: http1.Pool, method: str = "GET", body: bytes = b"", **kw: object):
    return await pool.request("127.0.0.1", port, method, b"/x", [(b"host", b"t")], body, **kw)  # type: ignore[arg-type]


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
SHORT = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"


# -- codec -------------------------------------------------------------------------------

def test_encode_request_owns_the_framing() -> None:
    raw = http1.encode_request("POST", b"/v?a=1", [(b"host", b"h"), (b"Content-Length", b"99"),
                                                   (b"transfer-encoding", b"chunked"), (b"x-a", b"1")], b"abc")
    assert raw == b"POST /v?a=1 HTTP/1.1\r\nhost: h\r\nx-a: 1\r\ncontent-length: 3\r\n\r\nabc"
    assert http1.encode_request("POST", b"/", [], b"").endswith(b"content-length: 0\r\n\r\n")
    assert b"content-length" not in http1.encode_request("GET", b"/", [], b"")


@pytest.mark.parametrize("head, close", [
    (b"HTTP/1.1 200 OK\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nconnection: Upgrade, Close\r\n\r\n", True),
    (b"HTTP/1.0 200 OK\r\n\r\n", True),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", True),
])
def test_parse_head_connection_reuse(head: bytes, close: bool) -> None:
    assert http1.parse_head(head).close is close


@pytest.mark.parametrize("head", [
    b"HTTX/1.1 200 OK\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
])
def test_parse_head_refuses_malformed(head: bytes) -> None:
    with pytest.raises(http1.ProtocolError):
        http1.parse_head(head)


# -- bodies --------------------------------------------------------------------------------

def test_content_length_chunked_and_close_delimited_bodies() -> None:
    replies = [
        OK,
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
    ]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(replies[n])
        if n == 2:
            writer.close()

    async def main() -> None:
        async with Server(script) as srv:
            pool = http1.Pool()
            assert (await get(srv.port, pool))[::2] == (200, b"ok")
            status, headers, body = await get(srv.port, pool)
            assert (status, body) == (201, b"Wikipedia") and (b"Transfer-Encoding", b"chunked") in headers
            assert (await get(srv.port, pool))[::2] == (200, b"until the end")
            assert srv.connections == 1  # kept alive for the first two, closed by the third
            assert not pool._idle[("127.0.0.1", srv.port)]
            pool.close()

    run(main())


def test_head_204_304_and_1xx_have_no_body() -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",   # HEAD: the length describes a GET
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK,
        OK,
    ]

    async def main() -> None:
        async with Server(lambda r, w, n: answer(replies[n])(r, w, n)) as srv:
            pool = http1.Pool()
            status, headers, body = await get(srv.port, pool, "HEAD")
            assert (status, body) == (200, b"") and (b"content-length", b"1234") in headers
            assert (await get(srv.port, pool, "DELETE"))[::2] == (204, b"")
            assert (await get(srv.port, pool, "POST", b"{}"))[::2] == (200, b"ok")
            assert (await get(srv.port, pool))[::2] == (200, b"ok")  # the stream stayed in step
            assert srv.connections == 1
            assert srv.requests[2].endswith(b"content-length: 2\r\n\r\n{}")

    run(main())


# -- keep-alive and stale connections --------------------------------------------------------

def _close_on(*numbers: int) -> Handler:
    """Answer OK, except requests `numbers`: close the connection without a byte (a server dropping an idle connection)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n in numbers:
            writer.close()
        else:
            writer.write(OK)
    return script


def test_idle_connection_closed_by_server_is_retried_once_on_a_fresh_one() -> None:
    async def main() -> None:
        async with Server(_close_on(1)) as srv:
            pool = http1.Pool()
            assert (await get(srv.port, pool))[0] == 200
            assert (await get(srv.port, pool, "POST", b"{}"))[::2] == (200, b"ok")  # sent twice, answered once
            assert (srv.connections, len(srv.requests)) == (2, 3)

    run(main())


def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    async def main() -> None:
        async with Server(_close_on(0)) as srv:
            with pytest.raises(http1.NoResponse) as e:
                await get(srv.port, http1.Pool())
            assert e.value.sent and srv.connections == 1

    run(main())


def test_stale_connection_then_refused_is_not_reported_as_nothing_sent() -> None:
    async def main() -> None:
        async with Server(_close_on(1)) as srv:
            pool = http1.Pool()
            assert (await get(srv.port, pool))[0] == 200
            srv.server.close()  # stop listening; the idle connection stays open until the next request
            await srv.server.wait_closed()
            with pytest.raises(http1.NoResponse) as e:
                await get(srv.port, pool, "POST", b"{}")
            assert e.value.sent and len(srv.requests) == 2

    run(main())


def test_keepalive_expiry_drops_old_idle_connections() -> None:
    async def main() -> None:
        async with Server(answer(OK)) as srv:
            # back-to-back requests reuse the connection well inside the expiry, even on a loaded machine;
            # after sleeping past it (a sleep never ends early) the idle connection is dropped
            expiry = 1.0
            pool = http1.Pool(keepalive_expiry=expiry)
            await get(srv.port, pool)
            await get(srv.port, pool)
            assert srv.connections == 1
            await asyncio.sleep(expiry + 0.2)
            await get(srv.port, pool)
            assert srv.connections == 2

    run(main())


# -- errors ------------------------------------------------------------------------------------

def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_errors_say_whether_anything_was_sent() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(5)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.close()

    async def main() -> None:
        pool = http1.Pool(max_connections=1)
        with pytest.raises(http1.ConnectFailed) as e:
            await get(_dead_port(), pool)
        assert not e.value.sent
        async with Server(silent) as srv:
            with pytest.raises(http1.ResponseTimeout) as e:
                await get(srv.port, pool, read_timeout=0.1)
            assert e.value.sent
            busy = asyncio.create_task(get(srv.port, pool, read_timeout=1))
            await asyncio.sleep(0.05)
            with pytest.raises(http1.PoolTimeout):
                await get(srv.port, pool, pool_timeout=0.05)
            busy.cancel()
        async with Server(hang_up) as srv:
            with pytest.raises(http1.NoResponse):
                await get(srv.port, pool)
        async with Server(answer(SHORT, close=True)) as srv:
            with pytest.raises(http1.ProtocolError, match="mid-response"):
                await get(srv.port, pool)
        async with Server(answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")) as srv:
            with pytest.raises(http1.ProtocolError):
                await get(srv.port, pool)

    run(main())


# -- the two adapters --------------------------------------------------------------------------

def test_upstream_pool_maps_errors_to_the_routers_own() -> None:
    async def main() -> None:
        up = UpstreamPool(timeout_s=0.2, connect_timeout_s=1)
        with pytest.raises(UpstreamConnectError):
            await up.request(f"http://127.0.0.1:{_dead_port()}", "GET", b"/", [], b"")
        async with Server(answer(SHORT, close=True)) as srv:
            with pytest.raises(UpstreamError) as e:
                await up.request(f"http://127.0.0.1:{srv.port}", "GET", b"/", [], b"")
            assert not isinstance(e.value, UpstreamConnectError)
        async with Server(_close_on(0)) as srv:
            # the target had the request and hung up: it may have applied it, so it is not a connect error
            with pytest.raises(UpstreamError) as e:
                await up.request(f"http://127.0.0.1:{srv.port}", "POST", b"/v", [], b"{}")
            assert not isinstance(e.value, UpstreamConnectError)
        async with Server(answer(OK)) as srv:
            base = f"http://127.0.0.1:{srv.port}"
            assert await up.request(base, "GET", b"/a?b=1", [(b"x-a", b"1")], b"") == (
                200, [(b"content-length", b"2")], b"ok")
            assert srv.requests[0] == f"GET /a?b=1 HTTP/1.1\r\nhost: 127.0.0.1:{srv.port}\r\nx-a: 1\r\n\r\n".encode()
        await up.close()

    run(main())


def test_lean_transport_raises_httpx_errors() -> None:
    async def main() -> None:
        async with httpx.AsyncClient(transport=LeanTransport(max_connections=2), timeout=0.3) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{_dead_port()}/")
            async with Server(answer(SHORT)) as srv:
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(f"http://127.0.0.1:{srv.port}/")
            async with Server(answer(b"garbage\r\n\r\n")) as srv:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(f"http://127.0.0.1:{srv.port}/")
            async with Server(answer(OK)) as srv:
                r = await client.post(f"http://127.0.0.1:{srv.port}/v", json={"a": 1})
                assert (r.status_code, r.text) == (200, "ok")
                assert srv.requests[0].startswith(b"POST /v HTTP/1.1\r\n") and srv.requests[0].endswith(b'\r\n\r\n{"a":1}')

    run(main())
