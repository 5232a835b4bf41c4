"""Integration tests of the region router process against stand-in backends: failover, failback, admin API, TTL, proxying."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration._backends import Backend, start_router, stop
from tests.timing import poll, scaled

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

INTERVAL = 0.2
THRESHOLD = 3
#: a flip never comes before (THRESHOLD - 1) checks after the change; later than (THRESHOLD + 1) only on a
#: loaded machine, so the upper bound is generous (the precise figure: bench/router_flip.py)
FLIP_SLACK_S = 1.5


def wait_until(predicate: Any, timeout: float, step: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` for `timeout` seconds × the timeout multiplier (tests/timing.py)."""
    return poll(predicate, timeout, what, step)


def assert_flip_delay(delay: float, what: str, router: str) -> None:
    print(f"\n[figure] {what}_delay_s = {delay:.3f} (threshold {THRESHOLD} x interval {INTERVAL}s)")
    assert delay >= (THRESHOLD - 1) * INTERVAL, f"{what} after {delay:.3f}s: before {THRESHOLD} failed checks"
    assert delay <= (THRESHOLD + 1) * INTERVAL + scaled(FLIP_SLACK_S), f"{what} after {delay:.3f}s: {state(router)}"


class Lab:
    """Backends and routers started by one test; all stopped at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.backends: list[Backend] = []
        self.routers: list[Any] = []

    def backends_for(self, *names: str) -> list[Backend]:
        started = [Backend(n, self.workdir) for n in names]
        self.backends += started
        return [b.wait() for b in started]

    def router(self, primary: list[Backend], dr: list[Backend], ttl_s: float = 0.0) -> str:
        config = {
            "regions": {
                "primary": {"role": "PRIMARY", "targets": [b.url for b in primary]},
                "dr": {"role": "SECONDARY", "targets": [b.url for b in dr]},
            },
            "health_check": {"path": "/health", "interval_s": INTERVAL, "failure_threshold": THRESHOLD, "timeout_s": 0.5},
            "ttl_s": ttl_s,
        }
        proc, url = start_router(config, self.workdir, name=f"router{len(self.routers)}")
        self.routers.append(proc)
        return url

    def close(self) -> None:
        for proc in self.routers:
            stop(proc)
        for b in self.backends:
            b.stop()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def state(router: str) -> dict[str, Any]:
    r = httpx.get(router + "/_router/state", timeout=2.0)
    r.raise_for_status()
    return r.json()


def wait_flips(router: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    return wait_until(lambda: (s := state(router)["flips"]) and len(s) >= count and s, timeout, what=f"{count} flip(s)")


def region_of(router: str, path: str = "/ping") -> str:
    return httpx.get(router + path, timeout=2.0).headers.get("x-drill-region", "")


def test_routes_to_primary_round_robin_and_proxies_method_body_query_status(lab: Lab) -> None:
    p0, p1, d0 = lab.backends_for("p0", "p1", "d0")
    router = lab.router([p0, p1], [d0])

    with httpx.Client(base_url=router, timeout=5.0) as client:
        r = client.post(
            "/vouchers/7?request_id=abc&x=1",
            content=b'{"company_id": 1}',
            headers={"content-type": "application/json", "x-custom": "yes", "proxy-authorization": "secret"},
        )
        assert r.status_code == 200
        echo = r.json()
        assert (echo["method"], echo["path"], echo["query"], echo["body"]) == (
            "POST", "/vouchers/7", "request_id=abc&x=1", '{"company_id": 1}'
        )
        assert echo["headers"]["x-custom"] == "yes"
        assert echo["headers"]["content-type"] == "application/json"
        assert "proxy-authorization" not in echo["headers"]  # hop-by-hop headers stay behind
        assert r.headers["x-drill-region"] == "primary"
        assert r.headers["x-drill-target"] in (p0.url, p1.url)
        assert r.headers["x-backend"] in ("p0", "p1")  # upstream headers come back

        for method in ("PUT", "PATCH", "DELETE", "GET"):
            assert client.request(method, "/thing", content=b"x" if method != "GET" else None).json()["method"] == method
        r = client.get("/fail?status=418")
        assert r.status_code == 418 and r.json()["query"] == "status=418"
        r = client.post("/created?status=201", json={"a": 1})
        assert r.status_code == 201 and json.loads(r.json()["body"]) == {"a": 1}

        big = b"x" * 300_000
        r = client.put("/big", content=big)
        assert r.status_code == 200 and len(r.json()["body"]) == len(big)
        r = client.head("/head")
        assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 0

        names = [client.get("/rr").json()["name"] for _ in range(6)]
        assert sorted(set(names)) == ["p0", "p1"]
        assert all(a != b for a, b in zip(names, names[1:]))  # round robin alternates
    s = state(router)
    assert s["active_region"] == "primary" and s["mode"] == "auto" and s["flips"] == []
    assert s["regions"]["primary"]["healthy"] and s["regions"]["dr"]["healthy"]
    assert s["health_check"]["interval_s"] == INTERVAL and s["ttl_s"] == 0


def test_failover_after_threshold_checks_then_failback(lab: Lab) -> None:
    p0, d0 = lab.backends_for("p0", "d0")
    router = lab.router([p0], [d0])
    assert region_of(router) == "primary"

    t0 = time.time()
    p0.set_health(False)
    flip = wait_flips(router, 1)[0]
    assert_flip_delay(flip["at_epoch"] - t0, "failover", router)
    assert (flip["from"], flip["to"]) == ("primary", "dr")
    assert "primary unhealthy" in flip["reason"] and flip["at"].startswith("20")
    s = state(router)
    assert s["active_region"] == "dr" and not s["regions"]["primary"]["healthy"]
    target = s["regions"]["primary"]["targets"][0]
    assert target["healthy"] is False and target["consecutive_failures"] >= THRESHOLD
    r = httpx.post(router + "/vouchers", json={"n": 1})
    assert r.status_code == 200 and r.headers["x-drill-region"] == "dr" and r.json()["name"] == "d0"

    t1 = time.time()
    p0.set_health(True)
    back = wait_flips(router, 2)[1]
    assert_flip_delay(back["at_epoch"] - t1, "failback", router)
    assert (back["from"], back["to"]) == ("dr", "primary") and "failback" in back["reason"]
    assert region_of(router) == "primary"


def test_no_flip_without_healthy_secondary_and_503(lab: Lab) -> None:
    (p0,) = lab.backends_for("p0")
    router = lab.router([p0], [])
    p0.set_health(False)
    wait_until(lambda: not state(router)["regions"]["primary"]["healthy"], 3.0, what="primary unhealthy")
    time.sleep(3 * INTERVAL)
    s = state(router)
    assert s["active_region"] == "primary" and s["flips"] == []
    assert s["regions"]["dr"]["healthy"] is False
    r = httpx.post(router + "/vouchers", json={})
    assert r.status_code == 503
    assert r.json() == {"error": "no healthy target in region primary"}
    assert r.headers["x-drill-region"] == "primary"


def test_dr_unhealthy_too_keeps_primary(lab: Lab) -> None:
    p0, d0 = lab.backends_for("p0", "d0")
    router = lab.router([p0], [d0])
    d0.set_health(False)
    wait_until(lambda: not state(router)["regions"]["dr"]["healthy"], 3.0, what="dr unhealthy")
    p0.set_health(False)
    wait_until(lambda: not state(router)["regions"]["primary"]["healthy"], 3.0, what="primary unhealthy")
    time.sleep(2 * INTERVAL)
    assert state(router)["active_region"] == "primary" and state(router)["flips"] == []
    d0.set_health(True)
    flip = wait_flips(router, 1)[0]
    assert flip["to"] == "dr"  # secondary healthy again: now it takes the traffic


def test_manual_flip_override_and_admin_errors(lab: Lab) -> None:
    p0, d0 = lab.backends_for("p0", "d0")
    router = lab.router([p0], [d0])

    r = httpx.post(router + "/_router/active", json={"region": "dr"})
    assert r.status_code == 200
    body = r.json()
    assert body["active_region"] == "dr" and body["mode"] == "manual"
    assert body["flip"]["from"] == "primary" and body["flip"]["to"] == "dr" and body["flip"]["mode"] == "manual"
    assert region_of(router) == "dr"
    time.sleep(THRESHOLD * INTERVAL * 2)  # primary healthy, but a manual choice stays
    assert state(router)["active_region"] == "dr"
    assert region_of(router) == "dr"

    r = httpx.delete(router + "/_router/override")
    assert r.status_code == 200 and r.json()["mode"] == "auto"
    assert r.json()["active_region"] == "primary" and "override cleared" in r.json()["flip"]["reason"]
    assert region_of(router) == "primary"
    assert [f["to"] for f in state(router)["flips"]] == ["dr", "primary"]

    def err(r: httpx.Response, status: int) -> str:
        assert r.status_code == status, r.text
        return r.json()["error"]

    assert "mars" in err(httpx.post(router + "/_router/active", json={"region": "mars"}), 404)
    assert err(httpx.post(router + "/_router/active", content=b"{not json"), 400)
    assert err(httpx.post(router + "/_router/active", json=["dr"]), 400)
    assert err(httpx.post(router + "/_router/active", json={"region": 3}), 400)
    assert "mars" in err(httpx.put(router + "/_router/targets", json={"region": "mars", "targets": []}), 404)
    assert "ftp" in err(httpx.put(router + "/_router/targets", json={"region": "dr", "targets": ["ftp://x"]}), 400)
    assert err(httpx.put(router + "/_router/targets", json={"region": "dr", "targets": "http://x:1"}), 400)
    assert err(httpx.get(router + "/_router/nope"), 404)
    assert state(router)["mode"] == "auto"


def test_ttl_delays_traffic_after_flip(lab: Lab) -> None:
    p0, d0 = lab.backends_for("p0", "d0")
    ttl = 1.0
    router = lab.router([p0], [d0], ttl_s=ttl)
    body = httpx.post(router + "/_router/active", json={"region": "dr"}).json()
    flipped_at = body["flip"]["at_epoch"]
    assert body["active_region"] == "dr" and body["routing_region"] == "primary"
    assert body["pending"]["region"] == "dr"
    assert region_of(router) == "primary"  # clients still hold the old answer
    wait_until(lambda: region_of(router) == "dr", 5.0, step=0.02, what="traffic to dr")
    seen = time.time() - flipped_at
    print(f"\n[figure] ttl_traffic_move_s = {seen:.3f} (ttl {ttl}s)")
    # never before the TTL; after it as soon as the machine lets the router answer
    assert ttl - 0.05 <= seen <= ttl + scaled(1.5), f"traffic moved after {seen:.3f}s, ttl {ttl}s"
    assert state(router)["pending"] is None


def test_put_targets_replaces_a_region(lab: Lab) -> None:
    p0, d0, d1 = lab.backends_for("p0", "d0", "d1")
    router = lab.router([p0], [d0])
    r = httpx.put(router + "/_router/targets", json={"region": "dr", "targets": [d1.url]})
    assert r.status_code == 200
    targets = r.json()["regions"]["dr"]["targets"]
    assert [t["url"] for t in targets] == [d1.url]
    assert targets[0]["healthy"] is True  # probed before it took effect
    httpx.post(router + "/_router/active", json={"region": "dr"}).raise_for_status()
    assert {httpx.get(router + "/x").json()["name"] for _ in range(4)} == {"d1"}
    # the replaced target is no longer checked: its consecutive counters do not move
    time.sleep(2 * INTERVAL)
    assert [t["url"] for t in state(router)["regions"]["dr"]["targets"]] == [d1.url]


def test_dead_target_is_skipped_with_one_retry(lab: Lab) -> None:
    p0, p1, d0 = lab.backends_for("p0", "p1", "d0")
    router = lab.router([p0, p1], [d0])
    p0.stop()  # connection refused from now on, still "healthy" until the checker sees it
    with httpx.Client(base_url=router, timeout=5.0) as client:
        answers = [client.post("/vouchers", json={"i": i}) for i in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    assert {a.json()["name"] for a in answers} == {"p1"}
    wait_until(lambda: not state(router)["regions"]["primary"]["targets"][0]["healthy"], 3.0, what="p0 unhealthy")
    assert state(router)["active_region"] == "primary"


def test_all_targets_refusing_gives_503(lab: Lab) -> None:
    p0, d0 = lab.backends_for("p0", "d0")
    router = lab.router([p0], [])
    p0.stop()
    r = httpx.get(router + "/x")
    assert r.status_code == 503 and "primary" in r.json()["error"]
