"""ASGI region router: health checker, admin API under /_router and the reverse proxy to the active region."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from harness.errors import ConfigError, HarnessError
from harness.lab.router.logic import RouterConfig, RoutingTable, TargetHealth, UnknownRegion, validate_targets
from harness.lab.router.upstream import HttpxUpstream, Upstream, UpstreamConnectError, UpstreamError, UpstreamPool

log = logging.getLogger("harness.lab.router")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",  # the router has read the whole body already
    }
)
JSON_HEADERS = [(b"content-type", b"application/json")]


class RouterError(HarnessError):
    """The region router could not serve or was misconfigured."""


#: the request reached no application: a write it carried was definitely not applied (the ledger's `fail`)
NOT_APPLIED = (b"x-drill-outcome", b"not-applied")
#: methods a proxy may send to a second target after the first dropped them unanswered (RFC 9110 9.2.2)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


def _json_body(status: int, payload: Mapping[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(payload).encode()
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(extra or [])]
    return status, headers, body


class RegionRouter:
    """The router process: owns the routing table, runs the health checks, serves admin and proxy."""

    def __init__(self, config: RouterConfig, *, proxy_timeout_s: float = 30.0, upstream: str = "raw") -> None:
        self.config = config
        self.table = RoutingTable(config, time.time())
        self.proxy_timeout_s = proxy_timeout_s
        self.upstream: Upstream = (
            HttpxUpstream(timeout_s=proxy_timeout_s) if upstream == "httpx" else UpstreamPool(timeout_s=proxy_timeout_s)
        )
        self._checker: httpx.AsyncClient | None = None
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.admin = Starlette(
            routes=[
                Route("/_router/state", self.get_state, methods=["GET"]),
                Route("/_router/health", self.get_health, methods=["GET"]),
                Route("/_router/active", self.post_active, methods=["POST"]),
                Route("/_router/override", self.delete_override, methods=["DELETE"]),
                Route("/_router/targets", self.put_targets, methods=["PUT"]),
            ]
        )

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/_router" or path.startswith("/_router/"):
                await self._admin(scope, receive, send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as e:  # report to uvicorn, which exits
                    await send({"type": "lifespan.startup.failed", "message": f"router start failed: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _admin(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route_paths = {"/_router/state", "/_router/health", "/_router/active", "/_router/override", "/_router/targets"}
        if scope["path"] not in route_paths:
            await self._send(send, *_json_body(404, {"error": f"no admin endpoint {scope['path']}"}))
            return
        await self.admin(scope, receive, send)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        hc = self.config.health_check
        self._checker = httpx.AsyncClient(
            timeout=httpx.Timeout(hc.timeout_s),
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,
        )
        # One round before serving so that the first requests find known targets.
        # Its results are applied together, so the order in which they arrive cannot flip the region.
        targets = self._all_targets()
        results = await asyncio.gather(*(self._probe(t.url) for _, t in targets))
        flip = self.table.observe_many(
            [(region, t.url, ok, error) for (region, t), (ok, error) in zip(targets, results)], time.time()
        )
        if flip is not None:
            log.warning("flip %s -> %s: %s", flip.from_region, flip.to_region, flip.reason)
        for region, target in self._all_targets():
            self._start_checker(region, target.url)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        if self._checker is not None:
            await self._checker.aclose()
        await self.upstream.close()

    def _all_targets(self) -> list[tuple[str, TargetHealth]]:
        return [(name, t) for name, reg in self.table.regions.items() for t in reg.targets]

    # ------------------------------------------------------------------ health checks

    def _start_checker(self, region: str, url: str) -> None:
        key = (region, url)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._check_loop(region, url), name=f"health {region} {url}")

    async def _probe(self, url: str) -> tuple[bool, str | None]:
        assert self._checker is not None
        hc = self.config.health_check
        try:
            resp = await self._checker.get(url + hc.path)
        except httpx.HTTPError as e:
            return False, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if 200 <= resp.status_code < 300:
            return True, None
        return False, f"HTTP {resp.status_code}"

    async def _check_once(self, region: str, url: str) -> None:
        ok, error = await self._probe(url)
        flip = self.table.observe(region, url, ok, time.time(), error)
        if flip is not None:
            log.warning("flip %s -> %s: %s", flip.from_region, flip.to_region, flip.reason)

    async def _check_loop(self, region: str, url: str) -> None:
        """Check one target at a fixed rate (interval), independent of the other targets."""
        interval = self.config.health_check.interval_s
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                await self._check_once(region, url)
            except Exception:  # never let one target's checker die silently
                log.exception("health check of %s failed", url)
            next_at += interval
            now = loop.time()
            if next_at < now:  # a slow check: skip missed ticks instead of bursting
                next_at = now + interval - ((now - next_at) % interval)

    # ------------------------------------------------------------------ admin API

    async def get_state(self, request: Request) -> JSONResponse:
        return JSONResponse(self.table.snapshot(time.time()))

    async def get_health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "active_region": self.table.active})

    async def _json(self, request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError as e:
            raise ConfigError(f"request body is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"request body must be a JSON object, got {type(data).__name__}")
        return data

    async def post_active(self, request: Request) -> JSONResponse:
        try:
            data = await self._json(request)
            region = data.get("region")
            if not isinstance(region, str):
                raise ConfigError(f"'region' must be a region name, got {region!r}")
            flip = self.table.set_manual(region, time.time())
        except UnknownRegion as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        except ConfigError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        state = self.table.snapshot(time.time())
        state["flip"] = flip.to_json() if flip else None
        return JSONResponse(state)

    async def delete_override(self, request: Request) -> JSONResponse:
        flip = self.table.clear_override(time.time())
        state = self.table.snapshot(time.time())
        state["flip"] = flip.to_json() if flip else None
        return JSONResponse(state)

    async def put_targets(self, request: Request) -> JSONResponse:
        try:
            data = await self._json(request)
            region = data.get("region")
            if not isinstance(region, str):
                raise ConfigError(f"'region' must be a region name, got {region!r}")
            reg = self.table.region(region)
            urls = validate_targets(data.get("targets"), where=f"targets of region {region!r}")
        except UnknownRegion as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        except ConfigError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        # Probe new targets once before they take traffic decisions, so a replaced list
        # is not "unknown" (hence unhealthy) for up to one interval.
        known = {t.url for t in reg.targets}
        new = [u for u in urls if u not in known]
        probed: dict[str, TargetHealth] = {}
        if new:
            threshold = self.config.health_check.failure_threshold
            results = await asyncio.gather(*(self._probe(u) for u in new))
            now = time.time()
            for u, (ok, error) in zip(new, results):
                th = TargetHealth(u)
                th.observe(ok, threshold, now=now, error=error)
                probed[u] = th
        old_keys = {(region, t.url) for t in reg.targets}
        flip = self.table.set_targets(region, urls, time.time(), probed)
        for key in old_keys - {(region, u) for u in urls}:
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
        for u in urls:
            self._start_checker(region, u)
        state = self.table.snapshot(time.time())
        state["flip"] = flip.to_json() if flip else None
        return JSONResponse(state)

    # ------------------------------------------------------------------ proxy

    @staticmethod
    async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Forward one request to a healthy target of the routed region (round robin). One retry on the next target
        when nothing was sent (connect error) or, for idempotent methods only, when the target gave no answer; a
        write a target may have applied is never sent twice."""
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)

        region, candidates = self.table.route(time.time())
        region_header = (b"x-drill-region", region.encode())
        if not candidates:
            await self._send(send, *_json_body(503, {"error": f"no healthy target in region {region}"},
                                               [region_header, NOT_APPLIED]))
            return

        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode()))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        target_path = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target_path += b"?" + scope["query_string"]

        last_error = ""
        for url in candidates[:2]:  # the chosen one, then the next healthy one once
            try:
                status, resp_headers, resp_body = await self.upstream.request(
                    url, scope["method"], target_path, headers, body
                )
            except UpstreamConnectError as e:
                last_error = str(e)
                continue
            except UpstreamError as e:
                if scope["method"] in IDEMPOTENT and url != candidates[:2][-1]:
                    # a GET/HEAD/OPTIONS the target dropped unanswered (it died mid-request, or its idle connection
                    # was stale and it is gone): safe to send to the next target, as proxies do for idempotent methods
                    last_error = str(e)
                    continue
                await self._send(
                    send,
                    *_json_body(502, {"error": f"target {url} of region {region} failed: {e}"}, [region_header, (b"x-drill-target", url.encode())]),
                )
                return
            out = [(k, v) for k, v in resp_headers if k.lower() not in HOP_BY_HOP]
            if scope["method"] == "HEAD":
                out += [(k, v) for k, v in resp_headers if k.lower() == b"content-length"]
            else:
                out.append((b"content-length", str(len(resp_body)).encode()))
            out.append(region_header)
            out.append((b"x-drill-target", url.encode()))
            await self._send(send, status, out, resp_body)
            return
        await self._send(
            send, *_json_body(503, {"error": f"no healthy target in region {region} answered: {last_error}"},
                              [region_header, NOT_APPLIED])
        )


def load_config(path: str) -> RouterConfig:
    """Read and validate router.json."""
    from harness.lab.paths import read_json_config

    return RouterConfig.from_json(read_json_config(path, "router"))
