"""Command line of the lab's status page: `python -m harness.lab.statuspage --host H --port P --config statuspage.json`."""

from __future__ import annotations

import sys

from harness.lab.asgiserve import serve_main
from harness.lab.statuspage.app import build_app, load_config


def main(argv: list[str] | None = None) -> int:
    return serve_main("harness.lab.statuspage",
                      "Status page of the drill lab (probes every service through the global endpoint)",
                      load_config, lambda config, args: build_app(config), argv)


if __name__ == "__main__":
    sys.exit(main())
