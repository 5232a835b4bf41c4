"""A minimal HTTP/1.1 server on asyncio streams (keep-alive, Content-Length and chunked bodies)."""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
IDLE_TIMEOUT_S = 60.0


@dataclass
class Request:
    """A parsed request; `path` is percent-decoded per segment by the router, not here."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """The bytes on the wire are not an HTTP/1.x request we accept."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Request line and headers (names lower-cased) of a request head ending in CRLFCRLF."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError as exc:
        raise BadRequest(400, "malformed request line") from exc
    if not version.startswith("HTTP/1."):
        raise BadRequest(505, f"unsupported version {version}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, f"malformed header line {line!r}")
        headers[name.lower()] = value.strip()
    return method, target, version, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                n = int(line.split(b";")[0].strip(), 16)
            except ValueError as exc:
                raise BadRequest(400, "malformed chunk size") from exc
            if n == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            size += n
            if size > MAX_BODY:
                raise BadRequest(413, "request body too large")
            parts.append(await reader.readexactly(n))
            await reader.readexactly(2)
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise BadRequest(400, "malformed Content-Length")
    if int(length) > MAX_BODY:
        raise BadRequest(413, "request body too large")
    return await reader.readexactly(int(length)) if int(length) else b""


def _encode(response: Response, keep_alive: bool) -> bytes:
    phrase = http.HTTPStatus(response.status).phrase
    lines = [f"HTTP/1.1 {response.status} {phrase}"]
    headers = dict(response.headers)
    if response.status != 204 and response.status >= 200:
        headers["Content-Length"] = str(len(response.body))
    headers["Connection"] = "keep-alive" if keep_alive else "close"
    lines += [f"{k}: {v}" for k, v in headers.items()]
    body = response.body if response.status != 204 else b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _serve_connection(
    handler: Handler, error: Callable[[int, str], Response], reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError):
                return
            try:
                method, target, version, headers = parse_head(head)
                body = await _read_body(reader, headers)
            except BadRequest as exc:
                writer.write(_encode(error(exc.status, str(exc)), keep_alive=False))
                await writer.drain()
                return
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
            response = await handler(Request(method, target, headers, body))
            writer.write(_encode(response, keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except asyncio.LimitOverrunError:
        writer.write(_encode(error(431, "request head too large"), keep_alive=False))
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def start_http_server(
    handler: Handler, error: Callable[[int, str], Response], host: str, port: int
) -> asyncio.Server:
    """Listen on host:port (SO_REUSEADDR); `error(status, message)` renders protocol errors."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(handler, error, reader, writer)

    return await asyncio.start_server(serve, host, port, reuse_address=True, limit=MAX_HEAD)


def path_segments(path: str) -> list[str]:
    """`/proxies/a%20b/toxics` -> `["proxies", "a b", "toxics"]`."""
    return [unquote(part) for part in path.split("/")[1:]]
