"""Stand-in HTTP backends for the router and supervisor tests: echo server with a switchable /health, plus process helpers."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


# --------------------------------------------------------------------------- the backend app (ASGI)


class EchoBackend:
    """ASGI app: GET /health answers 200 or 503 (switch with PUT /_backend/health {"ok": bool});
    any other request is echoed back as JSON (name, method, path, query, body, headers);
    `?status=N` sets the answer's status."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.hits = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        status = 200
        if path == "/health":
            status = 200 if self.healthy else 503
            payload: dict[str, Any] = {"name": self.name, "healthy": self.healthy}
        elif path == "/_backend/health" and scope["method"] == "PUT":
            self.healthy = bool(json.loads(body or b"{}").get("ok", True))
            payload = {"name": self.name, "healthy": self.healthy}
        elif path == "/_backend/stats":
            payload = {"name": self.name, "hits": self.hits, "pid": os.getpid()}
        else:
            self.hits += 1
            query = scope.get("query_string", b"").decode()
            for part in query.split("&"):
                if part.startswith("status="):
                    status = int(part[len("status="):])
            payload = {
                "name": self.name,
                "method": scope["method"],
                "path": path,
                "query": query,
                "body": body.decode("utf-8", "replace"),
                "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            }
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"x-backend", self.name.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend")
    args, _ = parser.parse_known_args(argv)
    import uvicorn

    uvicorn.run(EchoBackend(args.name), host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on")


# --------------------------------------------------------------------------- helpers for tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until `url` answers any HTTP status; fail early when `proc` exited."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError as e:
            last = e
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout}s: {last}")


def wait_until(predicate: Any, timeout: float, step: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value; return it, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what} not reached within {timeout}s")


def backend_command(port: int | str, name: str) -> list[str]:
    return [sys.executable, str(HERE), "--host", "127.0.0.1", "--port", str(port), "--name", name]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process this test started, then kill it after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Backend:
    """One stand-in backend process on a free port (a new port is tried when another process took it meanwhile)."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.log_dir = log_dir
        self.log = open(log_dir / f"backend-{name}.log", "ab")
        self._spawn()

    def _spawn(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(backend_command(self.port, self.name), stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)

    def wait(self) -> Backend:
        for attempt in range(5):
            try:
                wait_http(self.url + "/health", proc=self.proc)
                return self
            except AssertionError:
                if self.proc.poll() is None or attempt == 4:
                    raise
                self._spawn()  # lost a race for the port
        return self

    def set_health(self, ok: bool) -> None:
        httpx.put(self.url + "/_backend/health", json={"ok": ok}, timeout=2.0).raise_for_status()

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def start_router(config: dict[str, Any], workdir: Path, name: str = "router") -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m harness.lab.router` on a free port with `config`; return the process and its base URL."""
    cfg = workdir / f"{name}.json"
    cfg.write_text(json.dumps(config))
    return start_module("harness.lab.router", ["--config", str(cfg)], workdir / f"{name}.log", "/_router/health")


def start_module(module: str, args: list[str], log_path: Path, ready_path: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m module --host 127.0.0.1 --port P *args` on a free port, retrying when the port was taken."""
    with open(log_path, "ab") as log:
        for attempt in range(5):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                wait_http(url + ready_path, proc=proc)
                return proc, url
            except AssertionError:
                stop(proc)
                if attempt == 4 or b"address already in use" not in log_path.read_bytes():
                    raise
    raise AssertionError(f"{module} did not start")


if __name__ == "__main__":
    main()
