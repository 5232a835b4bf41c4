"""Upstream HTTP/1.1 clients of the router: a lean asyncio keep-alive pool and an httpx one to compare."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from harness import http1
from harness.errors import HarnessError

Headers = http1.Headers
NO_BODY_STATUS = http1.NO_BODY_STATUS


class UpstreamError(HarnessError):
    """A target failed after the request may have reached it (timeout, protocol error, reset mid-response)."""


class UpstreamConnectError(UpstreamError):
    """A target could not be connected to: the request never reached it, so another target may be tried."""


class Upstream(Protocol):
    async def request(self, base_url: str, method: str, target: bytes, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]: ...

    async def close(self) -> None: ...


class UpstreamPool:
    """The router's raw upstream client: `harness.http1.Pool` (keep-alive per target), errors as the router's own."""

    def __init__(self, *, timeout_s: float = 30.0, connect_timeout_s: float = 5.0, max_idle_per_target: int = 64) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.pool = http1.Pool(max_idle_per_origin=max_idle_per_target)
        self._addr: dict[str, tuple[str, int, tuple[bytes, bytes]]] = {}

    def _address(self, base_url: str) -> tuple[str, int, tuple[bytes, bytes]]:
        addr = self._addr.get(base_url)
        if addr is None:
            parts = urlsplit(base_url)
            if parts.scheme != "http":
                raise UpstreamConnectError(f"target {base_url}: only http:// targets are proxied")
            addr = (parts.hostname or "127.0.0.1", parts.port or 80, (b"host", parts.netloc.encode()))
            self._addr[base_url] = addr
        return addr

    async def request(self, base_url: str, method: str, target: bytes, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        """Send one request and return (status, headers, body); the body is fully read."""
        host, port, host_header = self._address(base_url)
        try:
            return await self.pool.request(host, port, method, target, [host_header, *headers], body,
                                           connect_timeout=self.connect_timeout_s, read_timeout=self.timeout_s)
        except (http1.ConnectFailed, http1.PoolTimeout) as e:
            # nothing was sent: another target may be tried, and a write it carried was not applied
            raise UpstreamConnectError(f"target {base_url}: {e}") from e
        except http1.NoResponse as e:
            # the target had the request and closed without answering: it may have applied it (indeterminate)
            raise UpstreamError(f"target {base_url}: closed the connection without answering: {e}") from e
        except http1.HTTP1Error as e:
            raise UpstreamError(f"target {base_url}: {type(e).__name__}: {e}") from e

    async def close(self) -> None:
        self.pool.close()


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
