"""Command line of the lab's status page: `python -m harness.lab.statuspage --host H --port P --config statuspage.json`."""

from __future__ import annotations

import argparse
import logging
import sys

from harness.errors import HarnessError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lab.statuspage",
                                     description="Status page of the drill lab (probes every service through the "
                                                 "global endpoint)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="statuspage.json")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from harness.lab.statuspage.app import build_app, load_config

    try:
        config = load_config(args.config)
    except HarnessError as e:
        print(f"statuspage: {e}", file=sys.stderr)
        return e.exit_code
    uvicorn.run(build_app(config), host=args.host, port=args.port, lifespan="on", log_level=args.log_level,
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
