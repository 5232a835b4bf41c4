"""Benchmark of the region router: requests/s and p50/p99 latency through the router vs direct to a backend."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BODY = json.dumps({"company_id": 1, "request_id": "bench-0000000000", "amount": "1000.00"}).encode()


# --------------------------------------------------------------------------- backend (self-invoked)


async def backend_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """A small ASGI backend: /health 200; anything else answers 201 with a short JSON body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    data = b'{"id": 1, "ok": true}'
    status = 200 if scope["path"] == "/health" else 201
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def serve_backend(port: int) -> None:
    import uvicorn

    uvicorn.run(backend_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------- load generator (raw asyncio, keep-alive)


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


def _request(port: int) -> bytes:
    return (
        b"POST /vouchers HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % (port, len(BODY))
        + BODY
    )


async def closed_loop(port: int, concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` keep-alive connections sending back-to-back POSTs for `seconds`."""
    request = _request(port)
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                status = await _one(reader, writer, request)
                latencies.append(time.perf_counter() - t0)
                if status >= 300:
                    errors += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(latencies, errors, time.perf_counter() - t0)


async def open_loop(port: int, rate: float, seconds: float, connections: int = 32) -> dict[str, float]:
    """Fixed arrival rate (requests/s) over a pool of keep-alive connections; latency includes queueing."""
    request = _request(port)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    errors = 0

    async def fire(scheduled: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status = await _one(conn[0], conn[1], request)
            if status >= 300:
                errors += 1
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return _summary(latencies, errors, elapsed)


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, float]:
    lat = sorted(latencies)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    return {"requests": len(lat), "errors": errors, "rps": len(lat) / elapsed, "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


# --------------------------------------------------------------------------- orchestration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open within {timeout}s")


def _line(label: str, r: dict[str, float]) -> str:
    return f"{label:<28} {r['rps']:8.0f} req/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms   errors {int(r['errors'])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve-backend", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each phase (default 4)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop arrival rate through the router")
    parser.add_argument("--upstreams", default="raw,httpx", help="router upstream clients to compare (raw, httpx)")
    args = parser.parse_args()
    if args.serve_backend:
        serve_backend(args.serve_backend)
        return
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="drill-bench-router-") as tmp:
        try:
            backend_port = _free_port()
            procs.append(subprocess.Popen([sys.executable, __file__, "--serve-backend", str(backend_port)], cwd=REPO))
            _wait(backend_port)
            cfg = Path(tmp) / "router.json"
            cfg.write_text(json.dumps({
                "regions": {
                    "primary": {"role": "PRIMARY", "targets": [f"http://127.0.0.1:{backend_port}"]},
                    "dr": {"role": "SECONDARY", "targets": []},
                },
                "health_check": {"path": "/health", "interval_s": 1.0, "failure_threshold": 3, "timeout_s": 0.5},
            }))
            routers = {}
            for kind in [u.strip() for u in args.upstreams.split(",") if u.strip()]:
                port = _free_port()
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "harness.lab.router", "--port", str(port), "--config", str(cfg), "--upstream", kind],
                    cwd=REPO,
                ))
                routers[kind] = port
            for port in routers.values():
                _wait(port)
            time.sleep(0.3)
            print(f"router bench: {os.cpu_count()} CPUs, POST {len(BODY)} B, concurrency {args.concurrency}, {args.seconds:.0f} s per phase")
            direct = asyncio.run(closed_loop(backend_port, args.concurrency, args.seconds))
            print(_line("direct to backend", direct))
            for kind, port in routers.items():
                via = asyncio.run(closed_loop(port, args.concurrency, args.seconds))
                print(_line(f"via router ({kind})", via) + f"   ratio {via['rps'] / direct['rps']:.2f}")
            first = next(iter(routers))
            fixed = asyncio.run(open_loop(routers[first], args.rate, args.seconds))
            print(_line(f"via router ({first}) @{args.rate:.0f}/s", fixed))
            fixed_direct = asyncio.run(open_loop(backend_port, args.rate, args.seconds))
            print(_line(f"direct @{args.rate:.0f}/s", fixed_direct))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
