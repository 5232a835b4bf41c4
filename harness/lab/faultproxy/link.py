"""Data path of the fault proxy: one proxied TCP connection as two directed links, toxics applied live."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .toxics import DOWNSTREAM, UPSTREAM, Toxic, latency_delay_ms, slice_offsets

if TYPE_CHECKING:
    from .proxy import Proxy

log = logging.getLogger(__name__)

# Each link (client -> upstream is `upstream`, upstream -> client is `downstream`) has a
# pump reading its source. With no toxic on the link's stream and nothing queued, the pump
# writes straight to the destination (one read, one write per chunk). Otherwise chunks,
# stamped with their arrival time, go through a queue to a processor task that runs them
# through the proxy's current toxic chain, so a toxic added to or removed from a proxy
# changes the data path of its live connections at the next chunk, and waits in progress
# end early when the chain changes (latency removed: queued data flows at once).

READ_SIZE = 256 * 1024
"""Largest chunk read from a socket at once."""
QUEUE_BYTES = 16 * 1024 * 1024
"""Bytes a link queues behind its toxics before it stops reading (TCP back-pressure)."""
WRITE_HIGH_WATER = 256 * 1024
"""Bytes buffered in a destination transport before the writer waits (drain)."""

_rng = random.Random()
_EOF = object()
_LINGER_RST = struct.pack("ii", 1, 0)


class _Chunk:
    """Bytes read from a source and the loop time they are due to leave the current stage."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes, ts: float) -> None:
        self.data = data
        self.ts = ts


class _Closed(Exception):
    """The connection was closed by a toxic; the chunk being processed goes no further."""


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


class Connection:
    """One client connection and its upstream connection, proxied through two links."""

    def __init__(
        self,
        proxy: Proxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client_writer = client[1]
        self.upstream_writer = upstream[1]
        self.peer = client[1].get_extra_info("peername")
        for writer in (self.client_writer, self.upstream_writer):
            writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.links = {
            UPSTREAM: Link(self, UPSTREAM, client[0], upstream[1]),
            DOWNSTREAM: Link(self, DOWNSTREAM, upstream[0], client[1]),
        }
        self.closed = False
        self._finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        """Proxy until both directions have ended or the connection is closed or aborted."""
        pumps = [asyncio.create_task(link.pump()) for link in self.links.values()]
        try:
            await self._finished
        finally:
            self.closed = True
            for link in self.links.values():
                link.dispose()
            for task in pumps:
                task.cancel()
            for writer in (self.client_writer, self.upstream_writer):
                if not writer.transport.is_closing():
                    writer.close()

    def chain_changed(self, stream: str) -> None:
        """The proxy's toxics on `stream` changed."""
        if not self.closed:
            self.links[stream].chain_changed()

    def close(self) -> None:
        """Close both sides after sending what was already written (a FIN each way)."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_writer, self.upstream_writer):
            writer.close()
        _resolve_none(self._finished)

    def abort(self, reset: bool = False) -> None:
        """Drop both sides at once; with `reset`, with SO_LINGER 0 so the peers get a TCP RST."""
        if self.closed and self._finished.done():
            return
        self.closed = True
        for writer in (self.client_writer, self.upstream_writer):
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                    except OSError:
                        pass
            writer.transport.abort()
        _resolve_none(self._finished)

    def direction_ended(self) -> None:
        """Called when a link has sent its EOF; the connection ends when both have."""
        if all(link.eof_sent for link in self.links.values()):
            self.close()


def _resolve_none(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Link:
    """One direction of a connection: source reader, toxic chain, destination writer."""

    def __init__(
        self,
        conn: Connection,
        stream: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.reader = reader
        self.writer = writer
        self.eof_sent = False
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[Any] = collections.deque()
        self._queued_bytes = 0
        self._inflight = False
        self._processor: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[bool] | None = None
        self._space: asyncio.Future[bool] | None = None
        self._waiters: list[asyncio.Future[bool]] = []
        self._rolled: dict[Toxic, bool] = {}
        self._state: dict[str, Any] = {}
        self._timers: dict[Toxic, asyncio.TimerHandle] = {}
        self._sync_timers()

    # -- the reading side -------------------------------------------------------------------

    async def pump(self) -> None:
        """Read the source until EOF; write directly when no toxic applies, else queue."""
        reader, writer, proxy, stream = self.reader, self.writer, self.conn.proxy, self.stream
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not proxy.chains[stream] and not self._queue and not self._inflight:
                    if not data:
                        self._send_eof()
                        return
                    writer.write(data)
                    await writer.drain()
                    continue
                await self._enqueue(_Chunk(data, self._loop.time()) if data else _EOF)
                if not data:
                    return
        except (ConnectionError, OSError) as exc:
            log.debug("%s %s link ended: %s", proxy.name, stream, exc)
            self.conn.abort()
        except Exception:
            log.exception("%s %s link failed", proxy.name, stream)
            self.conn.abort()

    async def _enqueue(self, item: Any) -> None:
        while self._queued_bytes >= QUEUE_BYTES and not self.conn.closed:
            self._space = self._loop.create_future()
            await self._space
        self._queue.append(item)
        if item is not _EOF:
            self._queued_bytes += len(item.data)
        if self._processor is None:
            self._processor = asyncio.create_task(self._process())
        elif self._wakeup is not None:
            _resolve(self._wakeup, True)

    # -- the toxic side ---------------------------------------------------------------------

    async def _process(self) -> None:
        try:
            while not self.conn.closed:
                if not self._queue:
                    self._wakeup = self._loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                    continue
                item = self._queue.popleft()
                self._inflight = True
                try:
                    if item is _EOF:
                        await self._eof_through(tuple(self.conn.proxy.chains[self.stream]))
                        return
                    self._queued_bytes -= len(item.data)
                    if self._space is not None:
                        _resolve(self._space, True)
                    await self._through(item, tuple(self.conn.proxy.chains[self.stream]), 0)
                finally:
                    self._inflight = False
        except _Closed:
            pass
        except (ConnectionError, OSError) as exc:
            log.debug("%s %s link ended: %s", self.conn.proxy.name, self.stream, exc)
            self.conn.abort()
        except Exception:
            log.exception("%s %s toxics failed", self.conn.proxy.name, self.stream)
            self.conn.abort()

    def _live(self, toxic: Toxic) -> Toxic | None:
        """The toxic of that name now in the chain (it may have been updated), if active here."""
        for current in self.conn.proxy.chains[self.stream]:
            if current.name == toxic.name:
                return current if self._active(current) else None
        return None

    def _active(self, toxic: Toxic) -> bool:
        """Toxicity, drawn once per link and toxic (as Toxiproxy draws once per stub run)."""
        active = self._rolled.get(toxic)
        if active is None:
            active = toxic.toxicity >= 1.0 or _rng.random() < toxic.toxicity
            self._rolled[toxic] = active
        return active

    async def _sleep(self, delay: float | None) -> bool:
        """Wait `delay` seconds (None: forever); False if the chain changed first."""
        if delay is not None and delay <= 0:
            return True
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._waiters.append(fut)
        handle = self._loop.call_later(delay, _resolve, fut, True) if delay is not None else None
        try:
            return await fut
        finally:
            if handle is not None:
                handle.cancel()
            self._waiters.remove(fut)

    async def _sleep_until(self, when: float) -> bool:
        return await self._sleep(when - self._loop.time())

    async def _write(self, data: bytes) -> None:
        if self.conn.closed:
            raise _Closed
        self.writer.write(data)
        await self.writer.drain()

    async def _through(self, chunk: _Chunk, chain: Sequence[Toxic], index: int) -> None:
        """Run a chunk through `chain[index:]` (toxics now removed are skipped), then write it."""
        for i in range(index, len(chain)):
            toxic = self._live(chain[i])
            if toxic is not None:
                await _HANDLERS[toxic.type](self, toxic, chunk, chain, i)
                return
        await self._write(chunk.data)

    async def _latency(self, toxic: Toxic, chunk: _Chunk, chain: Sequence[Toxic], i: int) -> None:
        due = chunk.ts + latency_delay_ms(toxic.attr("latency"), toxic.attr("jitter"), _rng) / 1e3
        while not await self._sleep_until(due):
            current = self._live(toxic)
            if current is None:  # removed: no more delay for this chunk
                due = min(due, self._loop.time())
                break
            if current is not toxic:  # updated: the new delay counts from arrival
                toxic = current
                delay = latency_delay_ms(toxic.attr("latency"), toxic.attr("jitter"), _rng)
                due = chunk.ts + delay / 1e3
        await self._through(_Chunk(chunk.data, max(due, chunk.ts)), chain, i + 1)

    async def _bandwidth(self, toxic: Toxic, chunk: _Chunk, chain: Sequence[Toxic], i: int) -> None:
        data = chunk.data
        while data:
            rate = toxic.attr("rate")  # KB/s
            if rate <= 0:
                await self._through(_Chunk(data, chunk.ts), chain, i + 1)
                return
            piece, data = data[: rate * 100], data[rate * 100 :]  # at most 100 ms of data
            now = self._loop.time()
            free = max(self._state.get(toxic.name, now), now) + len(piece) / (rate * 1000.0)
            self._state[toxic.name] = free
            if not await self._sleep_until(free):
                current = self._live(toxic)
                if current is None:
                    self._state.pop(toxic.name, None)
                    await self._through(_Chunk(piece + data, chunk.ts), chain, i + 1)
                    return
                toxic = current
            await self._through(_Chunk(piece, chunk.ts), chain, i + 1)

    async def _slicer(self, toxic: Toxic, chunk: _Chunk, chain: Sequence[Toxic], i: int) -> None:
        data = chunk.data
        cuts = slice_offsets(
            len(data), toxic.attr("average_size"), toxic.attr("size_variation"), _rng
        )
        for k in range(1, len(cuts)):
            await self._through(_Chunk(data[cuts[k - 1] : cuts[k]], chunk.ts), chain, i + 1)
            if k + 1 < len(cuts) and not await self._sleep(toxic.attr("delay") / 1e6):
                if self._live(toxic) is None:  # removed: the rest in one piece
                    await self._through(_Chunk(data[cuts[k] :], chunk.ts), chain, i + 1)
                    return

    async def _limit_data(self, toxic: Toxic, chunk: _Chunk, chain: Sequence[Toxic], i: int) -> None:
        sent = self._state.get(toxic.name, 0)
        part = chunk.data[: max(toxic.attr("bytes") - sent, 0)]
        if part:
            await self._through(_Chunk(part, chunk.ts), chain, i + 1)
            sent += len(part)
            self._state[toxic.name] = sent
        if toxic.attr("bytes") - sent <= 0:
            log.info("%s: limit_data %s reached, closing %s", self.conn.proxy.name, toxic.name, self.conn.peer)
            self.conn.close()
            raise _Closed

    async def _timeout(self, toxic: Toxic, chunk: _Chunk, chain: Sequence[Toxic], i: int) -> None:
        if toxic.attr("timeout") == 0:  # hold the data until the toxic goes
            await self._while_live(toxic, None, keep=lambda t: t.attr("timeout") == 0)
            if self._live(toxic) is None:
                await self._through(chunk, chain, i + 1)
        # timeout > 0: the data is dropped; the timer of _sync_timers closes the connection

    async def _reset_peer(self, toxic: Toxic, chunk: _Chunk, chain: Sequence[Toxic], i: int) -> None:
        due = self._loop.time() + toxic.attr("timeout") / 1e3
        if await self._while_live(toxic, due) is None:  # removed meanwhile: data goes on
            await self._through(chunk, chain, i + 1)
            return
        self._reset(toxic)

    async def _slow_close(self, toxic: Toxic, chunk: _Chunk, chain: Sequence[Toxic], i: int) -> None:
        await self._through(chunk, chain, i + 1)

    async def _while_live(
        self, toxic: Toxic, due: float | None, keep: Callable[[Toxic], bool] | None = None
    ) -> Toxic | None:
        """Wait until `due` (None: for ever) while the toxic stays; the toxic then, else None."""
        while True:
            if due is not None and await self._sleep_until(due):
                return toxic
            if due is None:
                await self._sleep(None)
            current = self._live(toxic)
            if current is None or (keep is not None and not keep(current)):
                return None
            toxic = current

    def _reset(self, toxic: Toxic) -> None:
        log.info("%s: reset_peer %s resets %s", self.conn.proxy.name, toxic.name, self.conn.peer)
        self.conn.abort(reset=True)
        raise _Closed

    async def _eof_through(self, chain: Sequence[Toxic]) -> None:
        """The source ended: delay (slow_close), hold (timeout 0) or reset (reset_peer) the EOF."""
        for toxic in chain:
            live = self._live(toxic)
            if live is None:
                continue
            if live.type == "slow_close":
                await self._while_live(live, self._loop.time() + live.attr("delay") / 1e3)
            elif live.type == "timeout" and live.attr("timeout") == 0:
                await self._while_live(live, None, keep=lambda t: t.attr("timeout") == 0)
            elif live.type == "reset_peer":
                due = self._loop.time() + live.attr("timeout") / 1e3
                if await self._while_live(live, due) is not None:
                    self._reset(live)
        self._send_eof()

    def _send_eof(self) -> None:
        if self.conn.closed:
            return
        self.eof_sent = True
        if self.writer.can_write_eof():
            try:
                self.writer.write_eof()
            except OSError:
                self.conn.abort()
                return
        self.conn.direction_ended()

    # -- chain changes ----------------------------------------------------------------------

    def chain_changed(self) -> None:
        """Wake waits so they see the new chain; (re)arm timeout timers."""
        chain = self.conn.proxy.chains[self.stream]
        self._rolled = {t: v for t, v in self._rolled.items() if t in chain}
        names = {t.name for t in chain}
        self._state = {k: v for k, v in self._state.items() if k in names}
        for fut in self._waiters:
            _resolve(fut, False)
        self._sync_timers()

    def _sync_timers(self) -> None:
        wanted = [
            t
            for t in self.conn.proxy.chains[self.stream]
            if t.type == "timeout" and t.attr("timeout") > 0 and self._active(t)
        ]
        for toxic in list(self._timers):
            if toxic not in wanted:
                self._timers.pop(toxic).cancel()
        for toxic in wanted:
            if toxic not in self._timers:
                delay = toxic.attr("timeout") / 1e3
                self._timers[toxic] = self._loop.call_later(delay, self._timed_out, toxic)

    def _timed_out(self, toxic: Toxic) -> None:
        self._timers.pop(toxic, None)
        if toxic in self.conn.proxy.chains[self.stream] and not self.conn.closed:
            log.info("%s: timeout %s closes %s", self.conn.proxy.name, toxic.name, self.conn.peer)
            self.conn.close()

    def dispose(self) -> None:
        """The connection is over: stop timers, the processor and any wait."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for fut in (self._wakeup, self._space, *self._waiters):
            if fut is not None:
                _resolve(fut, False)
        if self._processor is not None and not self._processor.done():
            self._processor.cancel()


_HANDLERS = {
    "latency": Link._latency,
    "bandwidth": Link._bandwidth,
    "slicer": Link._slicer,
    "limit_data": Link._limit_data,
    "timeout": Link._timeout,
    "reset_peer": Link._reset_peer,
    "slow_close": Link._slow_close,
}
