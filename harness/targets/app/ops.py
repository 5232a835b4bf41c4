"""K-ERP app operations on an httpx client passed in: supervisor scale/state, service checks through the global endpoint."""

from __future__ import annotations

import time
from typing import Any

from harness.errors import LabError
from harness.lab.kerp.seed import lab_credentials
from harness.targets._lab import wait_for
from harness.workload.ledger import REGION_HEADER

SERVICES = ("authentication", "api-gateway", "voucher-service", "tax-invoice-service")
PROBE_VOUCHER_ID = 1


def _json(r: Any, what: str) -> Any:
    if r.status_code >= 400:
        raise LabError(f"{what}: HTTP {r.status_code} {r.text.strip()[:200]}")
    return r.json()


def regions(http: Any, supervisor_url: str) -> dict[str, Any]:
    return _json(http.get(f"{supervisor_url}/regions"), "supervisor GET /regions")


#: a scale answers once the stopped replicas are gone and the Deployment is written: replicas whose database
#: hangs (a SIGSTOPped primary) take seconds to stop, longer than a probe's timeout
SCALE_TIMEOUT_S = 30.0


def scale(http: Any, supervisor_url: str, region: str, replicas: int,
          timeout_s: float = SCALE_TIMEOUT_S) -> dict[str, Any]:
    return _json(http.put(f"{supervisor_url}/regions/{region}", json={"replicas": int(replicas)}, timeout=timeout_s),
                 f"supervisor scale {region} to {replicas}")


def nodes(http: Any, supervisor_url: str) -> dict[str, list[dict[str, Any]]]:
    """Each region's Nodes as the supervisor's Kubernetes controller sees them: name, zone, ready, unschedulable,
    pods."""
    return _json(http.get(f"{supervisor_url}/nodes"), "supervisor GET /nodes")


def set_node_lost(http: Any, supervisor_url: str, region: str, node: str, lost: bool) -> dict[str, Any]:
    return _json(http.put(f"{supervisor_url}/nodes/{region}/{node}", json={"lost": bool(lost)}, timeout=SCALE_TIMEOUT_S),
                 f"supervisor {'lose' if lost else 'restore'} node {node} of {region}")


def wait_replicas_ready(http: Any, supervisor_url: str, region: str, timeout: float = 30.0) -> None:
    """Wait until `region` runs its desired replicas, each alive and its Pod ready."""
    def ready() -> bool:
        state = regions(http, supervisor_url)[region]
        reps = alive_replicas({region: state}, region)
        return len(reps) == state["desired"] and all(r.get("ready", True) for r in reps)

    wait_for(ready, timeout, f"the desired app replicas of {region} ready", interval=0.1)


def alive_replicas(state: dict[str, Any], region: str) -> list[dict[str, Any]]:
    return [r for r in state.get(region, {}).get("replicas", []) if r.get("alive")]


def wait_scaled(http: Any, supervisor_url: str, region: str, replicas: int, timeout: float = 20.0) -> None:
    """Wait until `region` runs exactly `replicas` live replicas, each answering /health (any status)."""
    def ready() -> bool:
        alive = alive_replicas(regions(http, supervisor_url), region)
        if len(alive) != replicas:
            return False
        for r in alive:
            try:
                http.get(r["url"] + "/health", timeout=1.0)
            except Exception:
                return False
        return True

    wait_for(ready, timeout, f"{replicas} app replicas in {region}", interval=0.1)


def global_health(http: Any, router_url: str) -> dict[str, Any]:
    try:
        r = http.get(f"{router_url}/health", timeout=2.0)
    except Exception as e:
        return {"ok": False, "status": None, "region": None, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
    body: Any = None
    try:
        body = r.json()
    except ValueError:
        pass
    return {"ok": r.status_code == 200, "status": r.status_code, "region": r.headers.get(REGION_HEADER), "body": body}


def check_service(http: Any, base_url: str, service: str, *, write: bool = True) -> dict[str, Any]:
    """One request (sequence) to `service` through `base_url`; tax-invoice-service issues an invoice when `write`."""
    cred = lab_credentials()[0]
    t0 = time.monotonic()
    out: dict[str, Any] = {"service": service, "ok": False, "status": None, "region": None}
    try:
        if service == "authentication":
            r = http.post(f"{base_url}/auth/login", json={"email": cred.email, "password": cred.password})
            if r.status_code == 200:
                r = http.get(f"{base_url}/auth/me", headers={"authorization": f"Bearer {r.json()['token']}"})
            ok = r.status_code == 200
        elif service == "api-gateway":
            r = http.get(f"{base_url}/health")
            ok = r.status_code == 200
        elif service == "voucher-service":
            r = http.get(f"{base_url}/vouchers/{PROBE_VOUCHER_ID}")
            ok = r.status_code == 200
        elif service == "tax-invoice-service":
            if write:
                r = http.post(f"{base_url}/tax-invoices", json={"company_id": cred.company_id, "amount": "10000.00"})
                ok = r.status_code == 201
            else:  # read-only: the database is writable behind the endpoint
                r = http.get(f"{base_url}/health")
                ok = r.status_code == 200
        else:
            raise LabError(f"no check for service {service!r} (known: {', '.join(SERVICES)})")
        out.update(ok=ok, status=r.status_code, region=r.headers.get(REGION_HEADER))
        if not ok:
            out["error"] = r.text.strip()[:200]
    except LabError:
        raise
    except Exception as e:
        out["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    out["latency_s"] = round(time.monotonic() - t0, 4)
    return out
