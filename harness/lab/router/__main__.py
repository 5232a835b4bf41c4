"""Command line of the region router: `python -m harness.lab.router --host H --port P --config router.json`."""

from __future__ import annotations

import argparse
import logging
import sys

from harness.errors import HarnessError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lab.router", description="Region router of the drill lab")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="router.json")
    parser.add_argument("--upstream", choices=("raw", "httpx"), default="raw", help="upstream HTTP client (default raw asyncio pool)")
    parser.add_argument("--proxy-timeout", type=float, default=30.0, help="seconds for one proxied request")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from harness.lab.router.app import RegionRouter, load_config

    try:
        config = load_config(args.config)
    except HarnessError as e:
        print(f"router: {e}", file=sys.stderr)
        return e.exit_code
    router = RegionRouter(config, proxy_timeout_s=args.proxy_timeout, upstream=args.upstream)
    uvicorn.run(
        router,
        host=args.host,
        port=args.port,
        http="auto",
        loop="auto",
        lifespan="on",
        log_level=args.log_level,
        access_log=False,
        server_header=False,
        date_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
