"""A dedicated asyncio event loop in a background thread, shared by the ledger writers and the service probes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


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
