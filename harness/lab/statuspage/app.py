"""The status page server (Starlette): probes each catalog service through the global endpoint, serves HTML and JSON.

Probes (read-only, like harness/workload/probes.py but writing nothing the drill measures):
- authentication: POST /auth/login, GET /auth/me with the token, POST /auth/logout (the session is removed);
- api-gateway: GET /health;
- voucher-service: GET /vouchers/{voucher_id} of a seeded voucher;
- tax-invoice-service: the page never issues an invoice; its write path is ready when GET /health answers 200
  (database writable, Redis master) and its dependency, the voucher read, answers 200 (the results of the same
  cycle's api-gateway and voucher-service probes: no extra requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from harness.errors import LabError

from .board import Probe, StatusBoard

REGION_HEADER = "x-drill-region"
SERVICES = ("authentication", "api-gateway", "voucher-service", "tax-invoice-service")
DEFAULTS = {"interval_s": 0.5, "timeout_s": 1.0, "window": 2, "slow_s": 1.0, "voucher_id": 1,
            "priorities": {"authentication": "P1", "api-gateway": "P1", "voucher-service": "P2",
                           "tax-invoice-service": "P2"}}


def load_config(path: str | Path) -> dict[str, Any]:
    """statuspage.json: {"global_endpoint", "credentials": [email, password], "voucher_id", "interval_s", ...}."""
    try:
        cfg = {**DEFAULTS, **json.loads(Path(path).read_text())}
    except (OSError, ValueError) as e:
        raise LabError(f"status page config {path}: {e}") from e
    for key in ("global_endpoint", "credentials"):
        if not cfg.get(key):
            raise LabError(f"status page config {path}: {key} missing")
    return cfg


class Prober:
    """One probe per service per interval, concurrently; every result goes to the board."""

    def __init__(self, cfg: dict[str, Any], board: StatusBoard) -> None:
        self.base = str(cfg["global_endpoint"]).rstrip("/")
        self.cfg = cfg
        self.board = board
        self.client: httpx.AsyncClient | None = None

    async def _get(self, path: str, **kw: Any) -> httpx.Response:
        assert self.client is not None
        return await self.client.get(self.base + path, **kw)

    async def authentication(self) -> tuple[bool, str, str | None]:
        assert self.client is not None
        email, password = self.cfg["credentials"]
        r = await self.client.post(self.base + "/auth/login", json={"email": email, "password": password})
        region = r.headers.get(REGION_HEADER)
        if r.status_code != 200:
            return False, f"login: HTTP {r.status_code}", region
        token = r.json().get("token")
        me = await self._get("/auth/me", headers={"authorization": f"Bearer {token}"})
        with contextlib.suppress(httpx.HTTPError):
            await self.client.post(self.base + "/auth/logout", headers={"authorization": f"Bearer {token}"})
        return me.status_code == 200, ("" if me.status_code == 200 else f"me: HTTP {me.status_code}"), region

    async def api_gateway(self) -> tuple[bool, str, str | None]:
        r = await self._get("/health")
        return r.status_code == 200, "" if r.status_code == 200 else f"GET /health: HTTP {r.status_code}", \
            r.headers.get(REGION_HEADER)

    async def voucher_service(self) -> tuple[bool, str, str | None]:
        r = await self._get(f"/vouchers/{int(self.cfg['voucher_id'])}")
        ok = r.status_code == 200
        return ok, "" if ok else f"GET /vouchers/{self.cfg['voucher_id']}: HTTP {r.status_code}", \
            r.headers.get(REGION_HEADER)

    async def probe(self, service: str) -> Probe:
        fn = getattr(self, service.replace("-", "_"))
        t0, p0 = time.time(), time.perf_counter()
        try:
            async with asyncio.timeout(float(self.cfg["timeout_s"]) * 2):
                ok, detail, region = await fn()
        except TimeoutError:
            ok, detail, region = False, f"no answer within {float(self.cfg['timeout_s']) * 2:.1f} s", None
        except (httpx.HTTPError, ValueError, OSError) as e:
            ok, detail, region = False, f"{type(e).__name__}: {e}", None
        return Probe(ok, time.perf_counter() - p0, t0, detail, region)

    async def cycle(self) -> None:
        """Probe every service once; tax-invoice-service from its dependencies' results of this cycle."""
        direct = [s for s in self.board.services if s != "tax-invoice-service"]
        results = dict(zip(direct, await asyncio.gather(*(self.probe(s) for s in direct))))
        for service, p in results.items():
            self.board.record(service, p)
        if "tax-invoice-service" in self.board.services:
            deps = [results[s] if s in results else await self.probe(s) for s in ("api-gateway", "voucher-service")]
            self.board.record("tax-invoice-service", Probe(
                all(p.ok for p in deps), max(p.latency_s for p in deps), min(p.at for p in deps),
                "; ".join(p.detail for p in deps if p.detail), deps[0].region or deps[1].region))

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        async with httpx.AsyncClient(timeout=float(self.cfg["timeout_s"]), limits=limits) as client:
            self.client = client
            interval = float(self.cfg["interval_s"])
            while True:
                started = time.monotonic()
                await self.cycle()
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


_PAGE = jinja2.Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>K-ERP System Status</title>
<style>
 body { font-family: system-ui, "Noto Sans", "Noto Sans KR", sans-serif; margin: 0; background: #f9fafb; color: #111827; }
 main { max-width: 860px; margin: 0 auto; padding: 28px 20px; }
 h1 { text-align: center; margin: 0 0 14px; }
 .banner { text-align: center; margin: 0 auto 24px; padding: 10px 18px; border-radius: 999px; width: fit-content; font-weight: 600; }
 .banner.ok { background: #dcfce7; color: #166534; } .banner.bad { background: #fee2e2; color: #991b1b; }
 .banner.warn { background: #fef3c7; color: #92400e; }
 section { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; padding: 14px 20px; margin-bottom: 18px; }
 .svc { display: flex; justify-content: space-between; padding: 9px 0; border-bottom: 1px solid #f3f4f6; }
 .svc:last-child { border-bottom: 0; }
 .dot { display: inline-block; width: 12px; height: 12px; border-radius: 50%; margin-right: 8px; vertical-align: -1px; }
 .operational .dot { background: #22c55e; } .degraded .dot { background: #eab308; } .outage .dot { background: #ef4444; }
 .inc { border-left: 4px solid #ef4444; padding-left: 12px; margin: 10px 0; }
 .inc.resolved { border-color: #22c55e; }
 .muted { color: #6b7280; font-size: 13px; }
</style></head><body><main>
<h1>K-ERP System Status</h1>
{% set bad = services | selectattr("status", "equalto", "outage") | list %}
{% set warn = services | rejectattr("status", "equalto", "operational") | list %}
<div id="overall" class="banner {{ 'bad' if bad else ('warn' if warn else 'ok') }}">
 {{ "Some services are down" if bad else ("Some services experiencing issues" if warn else "All Systems Operational") }}</div>
<section id="services"><h2>Service Status</h2>
{% for s in services %}<div class="svc {{ s.status }}" data-service="{{ s.service }}"><span><strong>{{ s.service }}</strong>
 <span class="muted">{{ s.detail }}</span></span><span><span class="dot"></span>{{ s.status }}</span></div>{% endfor %}
</section>
<section id="incidents"><h2>Incidents</h2>
{% for i in incidents %}<div class="inc {{ i.status }}"><strong>{{ i.id }} [{{ i.severity | upper }}] {{ i.title }}</strong>
 <span class="muted">{{ i.status }}, since {{ i.startedAt }}{% if i.resolvedAt %}, resolved {{ i.resolvedAt }}{% endif %}</span>
 {% for u in i.updates[-6:] %}<div class="muted">{{ u.timestamp }} - {{ u.status }}: {{ u.message }}</div>{% endfor %}</div>
{% else %}<p class="muted">No incidents.</p>{% endfor %}
</section>
<p class="muted" style="text-align:center">Derived from probes of every service through the global endpoint {{ endpoint }};
 last updated {{ now }}.</p>
</main></body></html>""")


def build_app(cfg: dict[str, Any]) -> Starlette:
    board = StatusBoard(cfg.get("services") or SERVICES, window=int(cfg["window"]), slow_s=float(cfg["slow_s"]),
                        priorities=cfg.get("priorities"))
    prober = Prober(cfg, board)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.create_task(prober.run(), name="status probes")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def services(request: Request) -> JSONResponse:
        return JSONResponse(board.services_status())

    async def incidents(request: Request) -> JSONResponse:
        return JSONResponse(board.incidents())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def page(request: Request) -> HTMLResponse:
        from .board import iso

        return HTMLResponse(_PAGE.render(services=board.services_status(), incidents=board.incidents()[:10],
                                         endpoint=prober.base, now=iso(time.time())))

    app = Starlette(routes=[Route("/", page), Route("/api/status/services", services),
                            Route("/api/status/incidents", incidents), Route("/health", health)],
                    lifespan=lifespan)
    app.state.board = board
    return app
