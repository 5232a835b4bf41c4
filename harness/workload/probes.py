"""Service probes: exercise each catalog service through the global endpoint at a fixed interval and record every result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from harness.workload.ledger import REGION_HEADER, Recorder, WorkloadError, describe, invoice_key
from harness.workload.loop import BackgroundLoop, EndpointTasks

SERVICES = ("authentication", "api-gateway", "voucher-service", "tax-invoice-service")


class EventRecorder(Protocol):
    def append(self, kind: str, event: str, data: Mapping[str, Any] | None = None, t: float | None = None) -> Any: ...


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one service: success, the failing (or last) status, the region that answered, the error."""

    ok: bool
    status: int | None = None
    region: str | None = None
    error: str | None = None


class ServiceProbes(EndpointTasks[dict[str, dict[str, int]]]):
    """Probe each service every `interval_s` through `base_url`; a service's probes never overlap.

    Each result is `timeline.append("probe", service, {"service", "ok", "latency_s", "status", "region", "error"})`
    stamped with the probe's start time.

    Two probes write data, and what the server acknowledged is recorded for the RPO of their service
    (into `ops`, a Recorder such as the run's Timeline, and kept in `invoices` / `sessions` for the
    final read):
    - tax-invoice-service: each 201 is `ops.record_op("probe-tax-invoice", "ok", "<company_id>:<invoice_no>",
      f="invoice", value={"popbill_ref", ...})`;
    - authentication: each login 200 is `ops.record_op("probe-authentication", "ok", <session_id>, f="session",
      value={"expires_in", "kid", ...})`. The probe never logs out (that would delete the session it measures);
      sessions live `expires_in` seconds (3600 in the lab), far longer than a drill.
    The keys are assigned by the server, so only acknowledged records are tracked: an attempt that timed
    out or failed has no key, and no invoke / fail / indeterminate ops are recorded for these two.
    """

    def __init__(self, base_url: str, timeline: EventRecorder, *, services: Iterable[str] | None = None,
                 interval_s: float = 0.1, timeout_s: float = 1.0, credentials: tuple[str, str],
                 company_id: int, voucher_id: int, invoice_amount: str = "10000.00",
                 loop: BackgroundLoop | None = None, transport: str = "lean", ops: Recorder | None = None) -> None:
        chosen = tuple(services) if services is not None else SERVICES
        unknown = [s for s in chosen if s not in SERVICES]
        if unknown:
            raise WorkloadError(f"no probe for service(s) {', '.join(map(repr, unknown))}; known: {', '.join(SERVICES)}")
        if not chosen:
            raise WorkloadError("services must name at least one service to probe")
        if interval_s <= 0:
            raise WorkloadError(f"interval_s must be > 0, got {interval_s}")
        super().__init__(base_url, timeline, timeout_s=timeout_s, transport=transport, loop=loop)
        self.services = chosen
        self.interval_s = interval_s
        self.credentials = (credentials[0], credentials[1])
        self.company_id = company_id
        self.voucher_id = voucher_id
        self.invoice_amount = invoice_amount
        self._wake: asyncio.Event | None = None
        self.ops = ops
        #: acknowledged invoices: key -> popbill_ref of its first acknowledgement
        self.invoices: dict[str, str] = {}
        #: invoice keys acknowledged again with another popbill_ref (a number re-issued after a loss)
        self.reissued: list[str] = []
        #: acknowledged sessions: session id -> epoch seconds it expires at
        self.sessions: dict[str, float] = {}
        self.counts: dict[str, dict[str, int]] = {s: {"ok": 0, "failed": 0} for s in chosen}
        self._probes: dict[str, Callable[[], Awaitable[ProbeResult]]] = {
            "authentication": self.probe_authentication,
            "api-gateway": self.probe_api_gateway,
            "voucher-service": self.probe_voucher_service,
            "tax-invoice-service": self.probe_tax_invoice_service,
        }

    # -- the probes (one request sequence each; run on the loop) ---------------------
    async def probe_authentication(self) -> ProbeResult:
        email, password = self.credentials
        r = await self._client.post(self.base_url + "/auth/login", json={"email": email, "password": password})
        region = r.headers.get(REGION_HEADER)
        if r.status_code != 200:
            return ProbeResult(False, r.status_code, region, f"login: HTTP {r.status_code}")
        try:
            body = r.json()
            token = body["token"]
        except (ValueError, KeyError, TypeError) as e:
            return ProbeResult(False, r.status_code, region, f"login: no token in the answer ({describe(e)})")
        self._session_acknowledged(body, region)
        r = await self._client.get(self.base_url + "/auth/me", headers={"authorization": f"Bearer {token}"})
        region = r.headers.get(REGION_HEADER) or region
        if r.status_code != 200:
            return ProbeResult(False, r.status_code, region, f"me: HTTP {r.status_code}")
        return ProbeResult(True, r.status_code, region)

    def _session_acknowledged(self, body: Any, region: str | None) -> None:
        """A login answered 200: the session it created in Redis is an acknowledged write."""
        sid = body.get("session_id") if isinstance(body, Mapping) else None
        if not isinstance(sid, str) or not sid:
            return
        ttl = body.get("expires_in")
        ttl = float(ttl) if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) else None
        now = time.time()
        self.sessions[sid] = now + ttl if ttl is not None else float("inf")
        kid = body.get("kid")  # the signing key it was issued under: a rotation after a compromise revokes it
        if self.ops is not None:
            self.ops.record_op("probe-authentication", "ok", sid, f="session",
                               value={"status": 200, "region": region, "expires_in": ttl,
                                      "kid": kid if isinstance(kid, str) else None}, t=now)

    async def probe_api_gateway(self) -> ProbeResult:
        return await self._expect("GET", "/health", 200)

    async def probe_voucher_service(self) -> ProbeResult:
        return await self._expect("GET", f"/vouchers/{self.voucher_id}", 200)

    async def probe_tax_invoice_service(self) -> ProbeResult:
        r = await self._client.post(self.base_url + "/tax-invoices",
                                    json={"company_id": self.company_id, "amount": self.invoice_amount})
        region = r.headers.get(REGION_HEADER)
        if r.status_code != 201:
            return ProbeResult(False, r.status_code, region, f"POST /tax-invoices: HTTP {r.status_code}")
        try:
            body = r.json()
            key = invoice_key(body.get("company_id", self.company_id), body["invoice_no"])
            ref = str(body.get("popbill_ref") or "")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return ProbeResult(False, r.status_code, region, f"POST /tax-invoices: no invoice_no ({describe(e)})")
        first = self.invoices.setdefault(key, ref)
        reissue = first != ref
        if reissue:
            self.reissued.append(key)
        if self.ops is not None:
            self.ops.record_op("probe-tax-invoice", "ok", key, f="invoice",
                               value={"status": 201, "region": region, "popbill_ref": ref, "reissue": reissue})
        return ProbeResult(True, r.status_code, region)

    async def _expect(self, method: str, path: str, status: int, **kw: Any) -> ProbeResult:
        r = await self._client.request(method, self.base_url + path, **kw)
        region = r.headers.get(REGION_HEADER)
        if r.status_code != status:
            return ProbeResult(False, r.status_code, region, f"{method} {path}: HTTP {r.status_code}")
        return ProbeResult(True, r.status_code, region)

    # -- lifecycle (start / stop / running from EndpointTasks) ---------------------------
    loop_name = "drill-probes"

    @property
    def _stop_timeout_s(self) -> float:
        return self.timeout_s * 2 + 10.0

    def _result(self) -> dict[str, dict[str, int]]:
        """Ok/failed counts per service (`stop()` returns them once a probe in flight is finished and recorded)."""
        return {s: dict(c) for s, c in self.counts.items()}

    async def _start(self) -> None:
        self._open_client(len(self.services) + 1)
        self._wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(s), name=f"probe {s}") for s in self.services]

    async def _stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()  # ends the waits between probes; a probe in flight finishes and is recorded
        await self._finish(self.timeout_s * 2 + 5.0)

    async def _once(self, service: str) -> None:
        probe = self._probes[service]
        t0 = time.time()
        p0 = time.perf_counter()
        try:
            # One overall deadline: the authentication probe makes two requests.
            async with asyncio.timeout(self.timeout_s * 2):
                result = await probe()
        except Exception as e:  # any failure of the request is a failed probe, never a crash
            result = ProbeResult(False, None, None, describe(e) if not isinstance(e, TimeoutError) else
                                 f"timed out after {self.timeout_s * 2:.1f} s")
        latency = time.perf_counter() - p0
        self.counts[service]["ok" if result.ok else "failed"] += 1
        self.timeline.append("probe", service, {
            "service": service, "ok": result.ok, "latency_s": round(latency, 6), "status": result.status,
            "region": result.region, "error": result.error}, t=t0)

    async def _run(self, service: str) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval_s
        next_at = loop.time()
        wake = self._wake
        assert wake is not None
        while not self._stopping:
            await self._once(service)
            next_at += interval
            now = loop.time()
            if next_at < now:  # a slow probe delays the next one; no burst to catch up
                next_at = now
            if self._stopping:
                break
            try:
                await asyncio.wait_for(wake.wait(), next_at - now)
            except TimeoutError:
                pass
