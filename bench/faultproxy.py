"""Benchmark of the fault proxy: throughput and small-request round trip, direct vs through the proxy."""

# Run: `python bench/faultproxy.py [--mb 256] [--requests 3000]` (about 10 s). Starts the fault
# proxy as a subprocess and two upstream servers (sink, echo) in threads, then prints MB/s and
# round-trip percentiles for: direct, through the proxy without toxics (fast path), and through
# the proxy with a 0 ms latency toxic on both streams (the toxic path every chunk takes once a
# toxic is present).

from __future__ import annotations

import argparse
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

LOCAL = "127.0.0.1"
BLOCK = memoryview(bytes(1024 * 1024))


class _Sink(socketserver.BaseRequestHandler):
    """Counts bytes until EOF, then answers with the count."""

    def handle(self) -> None:
        buf = bytearray(1024 * 1024)
        total = 0
        while n := self.request.recv_into(buf):
            total += n
        self.request.sendall(str(total).encode())


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(handler: type[socketserver.BaseRequestHandler]) -> int:
    server = _Server((LOCAL, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def throughput(port: int, megabytes: int) -> float:
    """MB/s of sending `megabytes` MiB to the sink and reading its count back."""
    with socket.create_connection((LOCAL, port)) as sock:
        started = time.perf_counter()
        for _ in range(megabytes):
            sock.sendall(BLOCK)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(64):
            answer += chunk
        elapsed = time.perf_counter() - started
    assert int(answer) == megabytes * len(BLOCK), answer
    return megabytes / elapsed


def round_trips(port: int, count: int) -> list[float]:
    """Microseconds per 64-byte request/response through the echo server."""
    payload = b"x" * 64
    samples = []
    with socket.create_connection((LOCAL, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(sock.recv(65536))
            samples.append((time.perf_counter() - started) * 1e6)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="MiB per throughput run")
    parser.add_argument("--requests", type=int, default=3000, help="round trips per run")
    args = parser.parse_args()

    sink, echo = _serve(_Sink), _serve(_Echo)
    api_port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.lab.faultproxy", "--port", str(api_port), "--log-level", "WARNING"],
        cwd=Path(__file__).resolve().parents[1],
    )
    api = f"http://{LOCAL}:{api_port}"
    try:
        while True:
            try:
                socket.create_connection((LOCAL, api_port), timeout=0.1).close()
                break
            except OSError:
                if time.perf_counter() - started > 10:
                    raise SystemExit("fault proxy did not start") from None
                time.sleep(0.005)
        print(f"fault proxy API listening after {time.perf_counter() - started:.3f} s")
        ports = {}
        for name, upstream in (("sink", sink), ("echo", echo)):
            body = {"name": name, "upstream": f"{LOCAL}:{upstream}", "listen": f"{LOCAL}:0"}
            listen = requests.post(f"{api}/proxies", json=body).json()["listen"]
            ports[name] = int(listen.rsplit(":", 1)[1])

        def measure(label: str, sink_port: int, echo_port: int) -> tuple[float, float]:
            mbps = throughput(sink_port, args.mb)
            rtt = round_trips(echo_port, args.requests)
            q = statistics.quantiles(rtt, n=100)
            median = statistics.median(rtt)
            print(f"{label:<28} {mbps:9.0f} MB/s   rtt p50 {median:7.1f} us  p99 {q[98]:7.1f} us")
            return mbps, median

        throughput(sink, 16)  # warm up
        print(f"{'path':<28} {'throughput':>14}   small request round trip ({args.requests}x 64 B)")
        direct = measure("direct", sink, echo)
        proxied = measure("proxy, no toxic", ports["sink"], ports["echo"])
        for name in ("sink", "echo"):
            for stream in ("upstream", "downstream"):
                requests.post(
                    f"{api}/proxies/{name}/toxics",
                    json={"type": "latency", "stream": stream, "attributes": {"latency": 0}},
                )
        toxic = measure("proxy, latency 0 ms toxic", ports["sink"], ports["echo"])
        print(
            f"ratio proxy/direct: throughput {proxied[0] / direct[0]:.2f}x, "
            f"round trip {proxied[1] / direct[1]:.2f}x "
            f"(+{proxied[1] - direct[1]:.0f} us); with toxic path: throughput "
            f"{toxic[0] / direct[0]:.2f}x, round trip {toxic[1] / direct[1]:.2f}x"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
