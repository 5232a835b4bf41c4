"""Command-line entry of the lab's ASGI servers configured by a JSON file (region router, status page)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

from harness.errors import HarnessError


def serve_main(prog: str, description: str, load_config: Callable[[str], Any],
               build_app: Callable[[Any, argparse.Namespace], Any], argv: list[str] | None = None,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
               **uvicorn_options: Any) -> int:
    """Parse --host/--port/--config/--log-level (plus the server's own options), load the config (a bad one is
    one line on stderr and its exit code), serve the app until stopped; the exit code."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="the server's JSON configuration file")
    parser.add_argument("--log-level", default="warning")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    try:
        config = load_config(args.config)
    except HarnessError as e:
        print(f"{prog.rsplit('.', 1)[-1]}: {e}", file=sys.stderr)
        return e.exit_code
    uvicorn.run(build_app(config, args), host=args.host, port=args.port, lifespan="on", log_level=args.log_level,
                access_log=False, **uvicorn_options)
    return 0
