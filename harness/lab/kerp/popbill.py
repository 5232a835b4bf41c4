"""Popbill e-invoice API stub of the lab: `POST /api/taxinvoice` issues a unique NTS confirmation number."""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from harness.lab.stdserve import serve_main


class PopbillStub(ThreadingHTTPServer):
    """Threading HTTP server that hands out NTS confirmation numbers (unique per process start)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int]):
        super().__init__(address, _Handler)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._prefix = time.strftime("%Y%m%d") + f"{int(time.time() * 1000) % 100000:05d}"
        self.issued = 0

    def next_ref(self) -> str:
        with self._lock:
            n = next(self._counter)
            self.issued = n
        return f"{self._prefix}-{n:08d}"


class _Handler(BaseHTTPRequestHandler):
    server: PopbillStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet: the lab keeps logs small
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path == "/health":
            self._send(200, {"status": "ok", "issued": self.server.issued})
        else:
            self._send(404, {"code": -99999999, "message": f"no such path {self.path}"})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path != "/api/taxinvoice":
            self._send(404, {"code": -99999999, "message": f"no such path {self.path}"})
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            self._send(400, {"code": -99999001, "message": "body is not a JSON object"})
            return
        self._send(200, {"code": 1, "message": "OK", "ntsConfirmNum": self.server.next_ref(),
                         "mgtKey": body.get("mgtKey")})


def main(argv: list[str] | None = None) -> int:
    return serve_main(PopbillStub, "python -m harness.lab.kerp.popbill", "Popbill API stub", argv)


if __name__ == "__main__":
    sys.exit(main())
