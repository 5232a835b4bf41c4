"""The fault proxy process: load the config, start proxies, serve the API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, LabError

from .api import Api, error_response
from .errors import ApiError
from .httpserver import start_http_server
from .proxy import ProxyCollection

log = logging.getLogger(__name__)


def load_config(path: Path) -> list[Any]:
    """The `--config` file: a JSON list of proxies `[{"name","listen","upstream","enabled"}]`."""
    from harness.lab.paths import read_json_config

    data = read_json_config(path, "fault proxy")
    if not isinstance(data, list):
        raise ConfigError(f"fault proxy config {path} must be a JSON list of proxies")
    return data


async def serve(host: str, port: int, config: Path | None = None) -> None:
    """Create the configured proxies, then serve the API on host:port until a signal."""
    collection = ProxyCollection(default_host=host)
    if config is not None:
        entries = load_config(config)
        try:
            proxies, error = await collection.populate(entries)
        except ApiError as exc:
            raise ConfigError(f"fault proxy config {config}: {exc.message}") from exc
        if error is not None:
            collection.close()
            raise LabError(f"fault proxy config {config}: {error.message}")
        log.info("populated %d proxies from %s", len(proxies), config)
    try:
        server = await start_http_server(Api(collection).handle, error_response, host, port)
    except OSError as exc:
        collection.close()
        raise LabError(f"fault proxy API cannot listen on {host}:{port}: {exc.strerror}") from exc
    log.info("fault proxy API (Toxiproxy compatible) listening on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("fault proxy shutting down")
        server.close()
        collection.close()
