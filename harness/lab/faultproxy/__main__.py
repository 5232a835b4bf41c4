"""Command line of the fault proxy: `python -m harness.lab.faultproxy --host H --port P [--config F]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from harness.errors import HarnessError

from .server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.lab.faultproxy",
        description="Toxiproxy-compatible fault proxy (HTTP API + TCP proxies).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8474, help="API port (default 8474)")
    parser.add_argument("--config", type=Path, help="JSON list of proxies to create at start")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(args.host, args.port, args.config))
    except HarnessError as exc:
        print(f"faultproxy: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
