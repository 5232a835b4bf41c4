"""Proxies and their collection: listeners, live connections, toxic chains, Toxiproxy's state rules."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import (
    MISSING_FIELD,
    PROXY_ALREADY_EXISTS,
    PROXY_NOT_FOUND,
    TOXIC_ALREADY_EXISTS,
    TOXIC_NOT_FOUND,
    ApiError,
    bad_body,
)
from .link import Connection
from .toxics import DOWNSTREAM, STREAMS, UPSTREAM, Toxic, parse_toxic, update_toxic

log = logging.getLogger(__name__)

STREAM_LIMIT = 1024 * 1024
"""Bytes a connection's StreamReader buffers before it pauses reading."""
CONNECT_TIMEOUT_S = 10.0
"""How long a new client waits for the upstream connection before it is closed."""


def parse_address(value: str, field: str) -> tuple[str, int]:
    """Split `host:port` (`[v6]:port`; empty host = all interfaces) or raise a 400."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise bad_body(f"invalid {field} address {value!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise bad_body(f"invalid {field} address {value!r}: IPv6 hosts go in brackets")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    """`host:port`, IPv6 literals in brackets (Go's net.JoinHostPort)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


@dataclass(frozen=True)
class ProxyInput:
    """A proxy as requested through the API (create, populate or update)."""

    name: str
    listen: str
    upstream: str
    enabled: bool


def _field(body: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise bad_body(f"field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def parse_proxy_input(
    body: Any, default_listen: str, current: ProxyInput | None = None, where: str = ""
) -> ProxyInput:
    """Validate a proxy body; on update (`current`) absent fields keep their values."""
    if not isinstance(body, Mapping):
        raise bad_body(f"expected a JSON object, got {type(body).__name__}")
    base = current or ProxyInput("", "", "", True)
    name = base.name if current else _field(body, "name", str, "")
    listen = _field(body, "listen", str, base.listen) or default_listen
    upstream = _field(body, "upstream", str, base.upstream)
    enabled = _field(body, "enabled", bool, base.enabled)
    if not name:
        raise MISSING_FIELD.joined(f"name{where}")
    if not upstream:
        raise MISSING_FIELD.joined(f"upstream{where}")
    parse_address(listen, "listen")
    parse_address(upstream, "upstream")
    return ProxyInput(name, listen, upstream, enabled)


class Proxy:
    """One named proxy: a listener forwarding to an upstream, its connections and toxics."""

    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.chains: dict[str, tuple[Toxic, ...]] = {UPSTREAM: (), DOWNSTREAM: ()}
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._generation = 0

    def as_input(self) -> ProxyInput:
        return ProxyInput(self.name, self.listen, self.upstream, self.enabled)

    def toxics(self) -> list[Toxic]:
        """Upstream toxics then downstream ones, each in the order added (as Toxiproxy lists)."""
        return [*self.chains[UPSTREAM], *self.chains[DOWNSTREAM]]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics()],
        }

    # -- listener ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `listen` (port 0 picks one, kept for later restarts). No-op if enabled."""
        if self.enabled:
            return
        host, port = parse_address(self.listen, "listen")
        try:
            sock = await _bound_socket(host or "0.0.0.0", port)
            self._server = await asyncio.start_server(
                self._accept, sock=sock, limit=STREAM_LIMIT
            )
        except OSError as exc:
            raise ApiError(f"listen tcp {self.listen}: {exc.strerror or exc}", 500) from exc
        bound = sock.getsockname()
        self.listen = format_address(bound[0], bound[1])
        self.enabled = True
        log.info("started proxy %s listen=%s upstream=%s", self.name, self.listen, self.upstream)

    def stop(self) -> None:
        """Close the listener and drop every connection (no-op if disabled)."""
        self._generation += 1
        if not self.enabled:
            return
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        dropped = len(self.connections)
        for conn in list(self.connections):
            conn.abort()
        log.info("terminated proxy %s listen=%s (dropped %d connections)", self.name, self.listen, dropped)

    async def update(self, wanted: ProxyInput) -> None:
        """Toxiproxy's update: a new address restarts the proxy; `enabled` starts or stops it."""
        if wanted.listen != self.listen or wanted.upstream != self.upstream:
            self.stop()
            self.listen, self.upstream = wanted.listen, wanted.upstream
        if wanted.enabled and not self.enabled:
            await self.start()
        elif not wanted.enabled:
            self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        generation = self._generation
        peer = writer.get_extra_info("peername")
        host, port = parse_address(self.upstream, "upstream")
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=STREAM_LIMIT), CONNECT_TIMEOUT_S
            )
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("%s: unable to open connection to upstream %s: %s", self.name, self.upstream, exc)
            writer.close()
            return
        if generation != self._generation:  # stopped or re-addressed meanwhile
            upstream[1].transport.abort()
            writer.transport.abort()
            return
        conn = Connection(self, (reader, writer), upstream)
        self.connections.add(conn)
        log.debug("%s: accepted client %s", self.name, peer)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            log.debug("%s: client %s done", self.name, peer)

    # -- toxics -----------------------------------------------------------------------------

    def find_toxic(self, name: str) -> Toxic | None:
        for toxic in self.toxics():
            if toxic.name == name:
                return toxic
        return None

    def get_toxic(self, name: str) -> Toxic:
        toxic = self.find_toxic(name)
        if toxic is None:
            raise TOXIC_NOT_FOUND
        return toxic

    def add_toxic(self, body: Any) -> Toxic:
        toxic = parse_toxic(body)
        if self.find_toxic(toxic.name) is not None:
            raise TOXIC_ALREADY_EXISTS
        self._set_chain(toxic.stream, (*self.chains[toxic.stream], toxic))
        log.info("%s: added toxic %s", self.name, toxic.to_json())
        return toxic

    def update_toxic(self, name: str, body: Any) -> Toxic:
        old = self.get_toxic(name)
        new = update_toxic(old, body)
        self._set_chain(new.stream, tuple(new if t is old else t for t in self.chains[new.stream]))
        log.info("%s: updated toxic %s", self.name, new.to_json())
        return new

    def remove_toxic(self, name: str) -> None:
        old = self.get_toxic(name)
        self._set_chain(old.stream, tuple(t for t in self.chains[old.stream] if t is not old))
        log.info("%s: removed toxic %s", self.name, name)

    def reset_toxics(self) -> None:
        for stream in STREAMS:
            if self.chains[stream]:
                self._set_chain(stream, ())

    def _set_chain(self, stream: str, chain: tuple[Toxic, ...]) -> None:
        self.chains[stream] = chain
        for conn in list(self.connections):
            conn.chain_changed(stream)


async def _bound_socket(host: str, port: int) -> socket.socket:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ProxyCollection:
    """All proxies by name; API calls that change them hold `lock`."""

    def __init__(self, default_host: str = "127.0.0.1") -> None:
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()
        self.default_listen = format_address(default_host, 0)

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    def parse(self, body: Any, where: str = "") -> ProxyInput:
        return parse_proxy_input(body, self.default_listen, where=where)

    async def add(self, wanted: ProxyInput) -> Proxy:
        if wanted.name in self.proxies:
            raise PROXY_ALREADY_EXISTS
        proxy = Proxy(wanted.name, wanted.listen, wanted.upstream)
        if wanted.enabled:
            await proxy.start()
        self.proxies[proxy.name] = proxy
        return proxy

    async def update(self, name: str, body: Any) -> Proxy:
        proxy = self.get(name)
        wanted = parse_proxy_input(body, self.default_listen, current=proxy.as_input())
        await proxy.update(wanted)
        return proxy

    def remove(self, name: str) -> None:
        proxy = self.get(name)
        proxy.stop()
        del self.proxies[name]
        log.info("deleted proxy %s", name)

    async def populate(self, body: Any) -> tuple[list[Proxy], ApiError | None]:
        """Create or replace a list of proxies (Toxiproxy's /populate and -config).

        All entries are validated first; a proxy whose listen and upstream are unchanged
        is kept as it is (toxics and connections too). Returns the proxies and the first
        error, if any (proxies before it stay applied, as in Toxiproxy).
        """
        if not isinstance(body, list):
            raise bad_body(f"expected a JSON array of proxies, got {type(body).__name__}")
        wanted: list[ProxyInput] = []
        for index, item in enumerate(body, start=1):
            entry = self.parse(item, where=f" at proxy {index}")
            if any(w.name == entry.name for w in wanted):
                raise bad_body(f"duplicate proxy name {entry.name!r}")
            wanted.append(entry)
        applied: list[Proxy] = []
        for entry in wanted:
            existing = self.proxies.get(entry.name)
            if existing is not None:
                if existing.listen == entry.listen and existing.upstream == entry.upstream:
                    applied.append(existing)
                    continue
                self.remove(entry.name)
            try:
                applied.append(await self.add(entry))
            except ApiError as exc:
                return applied, exc
        return applied, None

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's /reset)."""
        for proxy in list(self.proxies.values()):
            await proxy.start()
            proxy.reset_toxics()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
