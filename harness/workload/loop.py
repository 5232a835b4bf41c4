"""A dedicated asyncio event loop in a background thread, shared by the ledger writers and the service probes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, Generic, Self, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")
R = TypeVar("R")


class LoopError(HarnessError):
    """The background event loop is not running or a coroutine on it failed to finish in time."""


class BackgroundLoop:
    """Runs one asyncio loop in a daemon thread; other threads submit coroutines to it.

    Several users may share one loop (`acquire` / `release` count them); the loop stops
    when the last user releases it or on `close()`.
    """

    def __init__(self, name: str = "drill-workload") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._users = 0
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "BackgroundLoop":
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    try:
                        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                        for t in pending:
                            t.cancel()
                        if pending:
                            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                        loop.run_until_complete(loop.shutdown_asyncgens())
                    finally:
                        loop.close()

            self._loop = loop
            self._thread = threading.Thread(target=run, name=self.name, daemon=True)
            self._thread.start()
            if not ready.wait(10.0):
                raise LoopError(f"background loop {self.name!r} did not start within 10 s")
            return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if not self.running:
            raise LoopError(f"background loop {self.name!r} is not running (call start() first)")
        assert self._loop is not None
        return self._loop

    def acquire(self) -> "BackgroundLoop":
        """Start the loop if needed and count one more user."""
        self.start()
        with self._lock:
            self._users += 1
        return self

    def release(self) -> None:
        """Count one user less; close the loop when none is left."""
        with self._lock:
            self._users = max(0, self._users - 1)
            last = self._users == 0
        if last:
            self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop (pending tasks are cancelled) and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop, self._thread = None, None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                raise LoopError(f"background loop {self.name!r} did not stop within {timeout:.0f} s")

    # -- submitting work --------------------------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop; returns a thread-safe future."""
        try:
            loop = self.loop
        except LoopError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result (raises what it raises)."""
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError as e:
            fut.cancel()
            raise LoopError(f"coroutine on loop {self.name!r} did not finish within {timeout} s") from e

    def __enter__(self) -> "BackgroundLoop":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkloadError(HarnessError):
    """The workload could not run, or its final read could not be made."""


TRANSPORTS = ("lean", "httpx")


class EndpointTasks(Generic[R]):
    """One HTTP client of the global endpoint and its tasks on a shared `BackgroundLoop` (the ledger writers, the probes).

    `start()` acquires the loop (a private one named `loop_name` when none was given) and runs
    `_start()` on it, which opens the client (`_open_client`) and creates `self._tasks`;
    `stop()` runs `_stop()` (bounded by `_stop_timeout_s`; it ends the tasks and closes the
    client, see `_finish`), releases the loop and returns `_result()`. A context manager too.
    `transport`: "lean" (`harness.workload.transport.LeanTransport`) or "httpx" (httpx's own).
    """

    loop_name = "drill-workload"

    def __init__(self, base_url: str, timeline: Any, *, timeout_s: float, transport: str,
                 loop: BackgroundLoop | None) -> None:
        if transport not in TRANSPORTS:
            raise WorkloadError(f"transport must be 'lean' or 'httpx', got {transport!r}")
        self.base_url = base_url.rstrip("/")
        self.timeline = timeline
        self.timeout_s = timeout_s
        self.transport = transport
        self._loop = loop
        self._tasks: list[asyncio.Task[None]] = []
        self._client: Any = None
        self._stopping = False

    # -- to provide ---------------------------------------------------------------------
    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    @property
    def _stop_timeout_s(self) -> float:
        return self.timeout_s + 15.0

    def _result(self) -> R:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return bool(self._tasks) and not all(t.done() for t in self._tasks)

    def start(self) -> Self:
        if self.running:
            return self
        if self._loop is None:
            self._loop = BackgroundLoop(self.loop_name)
        self._loop.acquire()
        try:
            self._loop.run(self._start(), timeout=10.0)
        except BaseException:
            self._loop.release()
            raise
        return self

    def stop(self) -> R:
        """Stop the tasks (see `_stop`) and release the loop; returns `_result()`."""
        if self._loop is not None and self._tasks:
            try:
                self._loop.run(self._stop(), timeout=self._stop_timeout_s)
            finally:
                self._tasks = []
                self._loop.release()
        return self._result()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- on the loop ----------------------------------------------------------------------
    def _open_client(self, connections: int, headers: Mapping[str, str] | None = None) -> None:
        """The httpx client of `_start`: at most `connections`, kept alive 4 s, HTTP/1.1 only."""
        import httpx

        from harness.workload.transport import LeanTransport

        self._stopping = False
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                                keepalive_expiry=4.0),
            transport=LeanTransport(max_connections=connections) if self.transport == "lean" else None,
            headers=headers, http1=True, http2=False, trust_env=False, follow_redirects=False,
        )

    async def _finish(self, timeout: float) -> None:
        """Wait up to `timeout` for the tasks to end, cancel those left (5 s more), then close the client."""
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
