"""Command line of the region router: `python -m harness.lab.router --host H --port P --config router.json`."""

from __future__ import annotations

import argparse
import sys

from harness.lab.asgiserve import serve_main
from harness.lab.router.app import RegionRouter, load_config


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", choices=("raw", "httpx"), default="raw",
                        help="upstream HTTP client (default raw asyncio pool)")
    parser.add_argument("--proxy-timeout", type=float, default=30.0, help="seconds for one proxied request")


def main(argv: list[str] | None = None) -> int:
    return serve_main("harness.lab.router", "Region router of the drill lab", load_config,
                      lambda config, args: RegionRouter(config, proxy_timeout_s=args.proxy_timeout,
                                                        upstream=args.upstream),
                      argv, add_arguments=_options, server_header=False, date_header=False)


if __name__ == "__main__":
    sys.exit(main())
