"""Command-line entry of the lab's small standard-library HTTP servers (Popbill stub, metrics endpoint)."""

from __future__ import annotations

import argparse
from http.server import ThreadingHTTPServer
from typing import Callable


def serve_main(make_server: Callable[[tuple[str, int]], ThreadingHTTPServer], prog: str, description: str,
               argv: list[str] | None = None) -> int:
    """Parse --host/--port, serve until SIGINT, close the socket; the exit code."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = make_server((args.host, args.port))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
