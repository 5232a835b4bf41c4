"""The embedded lab proven against its real servers: `drill lab up|down` as a subprocess, replication,
the fault proxy driven by toxiproxy-python, self-healing app replicas, the router's failover rule, clean down.

One lab for the module, in its own state dir. The tests run in file order: the DR promotion is the
second-to-last test (it changes the lab for good) and `drill lab down` is the last one.
Figures are printed (run with `-s` to see them) and kept in FIGURES.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Iterator

import httpx
import psutil
import psycopg
import pytest
import redis

from harness.lab import paths, procs
from harness.lab.manager import PROXIES
from tests.timing import poll, processes_mentioning, scaled
from tests.labs import lab_state_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FIGURES: dict[str, Any] = {}


def drill(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the `drill` CLI in a subprocess (the interpreter running the tests)."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def figure(name: str, value: Any) -> None:
    FIGURES[name] = value
    print(f"\n[figure] {name} = {value}")


@pytest.fixture(scope="module")
def lab_up() -> Iterator[dict[str, Any]]:
    """`drill lab up --json` in a fresh state dir; yields {"state", "topology", "seconds", "result"}."""
    with lab_state_dir("drill-lab-test-") as state:
        t0 = time.monotonic()
        r = drill("lab", "up", "--json", "--state-dir", str(state))
        seconds = time.monotonic() - t0
        assert r.returncode == 0, f"drill lab up failed ({r.returncode}): {r.stderr}"
        figure("lab_up_s", round(seconds, 2))
        yield {"state": state, "topology": json.loads(r.stdout), "seconds": seconds, "result": r}


@pytest.fixture(scope="module")
def topo(lab_up: dict[str, Any]) -> dict[str, Any]:
    return lab_up["topology"]


@pytest.fixture(scope="module")
def ports(lab_up: dict[str, Any]) -> dict[str, int]:
    return json.loads((lab_up["state"] / "lab.json").read_text())["ports"]


def supervisor_regions(ports: dict[str, int]) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{ports['supervisor']}/regions", timeout=2).json()


def scale(ports: dict[str, int], region: str, n: int) -> None:
    r = httpx.put(f"http://127.0.0.1:{ports['supervisor']}/regions/{region}", json={"replicas": n}, timeout=5)
    assert r.status_code == 200, r.text


def alive_replicas(ports: dict[str, int], region: str) -> list[dict[str, Any]]:
    return [x for x in supervisor_regions(ports)[region]["replicas"] if x.get("alive")]


def router_state(topo: dict[str, Any]) -> dict[str, Any]:
    return httpx.get(topo["router"]["url"] + "/_router/state", timeout=2).json()


def status_of(url: str, timeout: float = 1.0) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def wait_for(pred, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `pred` for `timeout` seconds × the timeout multiplier (tests/timing.py)."""
    poll(pred, timeout, what, interval)


# --------------------------------------------------------------------------- up


def test_up_json_prints_the_topology_of_the_contract(lab_up: dict[str, Any], topo: dict[str, Any]) -> None:
    assert topo["state_dir"] == str(lab_up["state"].resolve())
    assert topo["healthy"] is True
    for region in ("primary", "dr"):
        reg = topo["regions"][region]
        assert reg["postgres"]["dsn"].startswith("postgresql://")
        assert reg["redis"]["url"].startswith("redis://127.0.0.1:")
        assert isinstance(reg["app"]["urls"], list)
    assert len(topo["regions"]["primary"]["app"]["urls"]) == 2
    assert topo["regions"]["dr"]["app"]["urls"] == []
    assert topo["router"]["url"].startswith("http://127.0.0.1:")
    assert topo["router"]["active_region"] == "primary"
    assert topo["toxiproxy"]["url"].startswith("http://127.0.0.1:")
    assert topo["s3"]["endpoint_url"].startswith("http://127.0.0.1:")
    # the file of the contract says the same
    on_disk = json.loads((lab_up["state"] / "topology.json").read_text())
    assert on_disk["regions"]["primary"]["postgres"]["dsn"] == topo["regions"]["primary"]["postgres"]["dsn"]
    assert on_disk["healthy"] is True  # the health measured at start, not a placeholder
    assert (lab_up["state"] / "jwt-secret").stat().st_mode & 0o777 == 0o600
    assert (lab_up["state"] / "ops-token").stat().st_mode & 0o777 == 0o600
    # every recorded pid has its start time beside it (a reused pid is never taken for a lab process)
    st = json.loads((lab_up["state"] / "lab.json").read_text())
    assert set(st["pid_started"]) == set(st["pids"]) and all(st["pid_started"].values())
    # every URL of the topology answers
    assert status_of(topo["s3"]["endpoint_url"]) is not None
    for url in topo["regions"]["primary"]["app"]["urls"]:
        assert status_of(url + "/health") == 200


def test_up_twice_is_a_no_op_that_reports_the_running_lab(lab_up: dict[str, Any], topo: dict[str, Any]) -> None:
    t0 = time.monotonic()
    r = drill("lab", "up", "--json", "--state-dir", str(lab_up["state"]))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert "already running" in r.stderr
    assert again["pids"] == topo["pids"]  # same processes, nothing restarted
    assert again["regions"] == topo["regions"]
    assert again["router"]["url"] == topo["router"]["url"]
    assert again["healthy"] is True
    assert all(procs.alive(pid) for pid in again["pids"].values())
    figure("lab_up_again_s", round(took, 2))


# --------------------------------------------------------------------------- data stores


def test_postgres_roles_and_a_row_reaches_the_standby_within_a_second(topo: dict[str, Any]) -> None:
    # the `postgres` database: the lab's own kerp data stays as seeded
    primary = topo["regions"]["primary"]["postgres"]["dsn"].rsplit("/", 1)[0] + "/postgres"
    standby = topo["regions"]["dr"]["postgres"]["dsn"].rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(primary, autocommit=True) as p, psycopg.connect(standby, autocommit=True) as s:
        assert p.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert s.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        assert s.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()[0] == "streaming"
        p.execute("CREATE TABLE IF NOT EXISTS drill_lab_probe (v text PRIMARY KEY, at timestamptz DEFAULT now())")
        samples = []
        within = scaled(1.0)  # "within a second" (× DRILL_TIMEOUT_MULTIPLIER on a slow machine)
        for _ in range(5):
            token = uuid.uuid4().hex
            p.execute("INSERT INTO drill_lab_probe (v) VALUES (%s)", (token,))  # autocommit: committed here
            t0 = time.perf_counter()
            seen = None
            while True:
                try:
                    if s.execute("SELECT 1 FROM drill_lab_probe WHERE v = %s", (token,)).fetchone():
                        seen = time.perf_counter() - t0
                        break
                except psycopg.errors.UndefinedTable:  # the CREATE TABLE itself not replayed yet
                    pass
                if time.perf_counter() - t0 >= within:
                    break
                time.sleep(0.002)
            assert seen is not None, (f"row written on the primary not visible on the standby after {within:.1f} s "
                                      f"(earlier rows: {[round(x * 1000, 1) for x in samples]} ms)")
            samples.append(seen)
        # the standby refuses writes
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            s.execute("INSERT INTO drill_lab_probe (v) VALUES ('nope')")
    figure("replication_visibility_ms", {"median": round(statistics.median(samples) * 1000, 1),
                                         "max": round(max(samples) * 1000, 1)})


def test_valkey_replica_follows_the_primary(topo: dict[str, Any]) -> None:
    prim = redis.Redis.from_url(topo["regions"]["primary"]["redis"]["url"], socket_timeout=2)
    repl = redis.Redis.from_url(topo["regions"]["dr"]["redis"]["url"], socket_timeout=2)
    assert prim.info("replication")["role"] == "master"
    info = repl.info("replication")
    assert info["role"] == "slave"
    assert info["master_link_status"] == "up"
    key, value = f"drill:probe:{uuid.uuid4().hex}", uuid.uuid4().hex
    prim.set(key, value)
    t0 = time.perf_counter()
    wait_for(lambda: repl.get(key) == value.encode(), 2.0, "the key on the Valkey replica", interval=0.005)
    figure("valkey_replication_ms", round((time.perf_counter() - t0) * 1000, 1))
    with pytest.raises(redis.exceptions.ReadOnlyError):
        repl.set(key, "x")
    prim.delete(key)


def test_router_health_and_fault_proxies(topo: dict[str, Any]) -> None:
    r = httpx.get(topo["router"]["url"] + "/health", timeout=2)
    assert r.status_code == 200
    assert r.headers["x-drill-region"] == "primary"
    assert r.json()["region"] == "primary"
    listed = httpx.get(topo["toxiproxy"]["url"] + "/proxies", timeout=2).json()
    expected = {"pg_replication", "redis_replication", "primary_app_postgres", "primary_app_redis",
                "dr_app_postgres", "dr_app_redis", "popbill"}
    assert expected <= set(listed)
    assert set(PROXIES) == expected
    for name in expected:
        assert listed[name]["enabled"] is True
        assert procs.port_open(int(listed[name]["listen"].rsplit(":", 1)[1]))


# --------------------------------------------------------------------------- faults


def _select1_rtts(conn: psycopg.Connection, n: int = 7) -> float:
    """Median round trip of `SELECT 1`, seconds."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def test_latency_toxic_added_with_toxiproxy_python_slows_queries_through_the_proxy(topo: dict[str, Any]) -> None:
    from toxiproxy import Toxiproxy

    api = httpx.URL(topo["toxiproxy"]["url"])
    client = Toxiproxy()
    client.update_api_consumer(api.host, api.port)
    proxy = client.get_proxy("primary_app_postgres")
    assert proxy is not None
    host, port = proxy.listen.rsplit(":", 1)
    name = "drill_test_latency"
    with psycopg.connect(host=host, port=int(port), user="postgres", dbname="kerp", autocommit=True,
                         connect_timeout=5) as conn:
        conn.execute("SELECT 1")  # warm up
        before = _select1_rtts(conn)
        proxy.add_toxic(type="latency", name=name, stream="downstream", attributes={"latency": 200, "jitter": 0})
        try:
            assert name in proxy.toxics()
            with_toxic = _select1_rtts(conn, n=5)
        finally:
            proxy.destroy_toxic(name)
        assert name not in proxy.toxics()
        after = _select1_rtts(conn)
    figure("toxic_select1_rtt_ms", {"before": round(before * 1000, 2), "with_200ms": round(with_toxic * 1000, 2),
                                    "after": round(after * 1000, 2)})
    # every round trip through a 200 ms downstream toxic takes at least 200 ms (the baseline is not subtracted:
    # on a loaded machine it is noise, and the toxic's delay is an absolute lower bound)
    assert with_toxic >= 0.200 and with_toxic > before
    assert after <= before + 0.050


def test_killed_app_replica_is_restarted_and_the_router_keeps_answering(topo: dict[str, Any],
                                                                         ports: dict[str, int]) -> None:
    victim = alive_replicas(ports, "primary")[0]
    slot, old_pid, old_restarts = victim["slot"], victim["pid"], victim["restarts"]
    health_url = topo["router"]["url"] + "/health"
    codes: list[int | None] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=2) as c:
            while not stop.is_set():
                try:
                    codes.append(c.get(health_url).status_code)
                except httpx.HTTPError:
                    codes.append(None)
                time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        time.sleep(0.2)
        t_kill = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)

        def back() -> bool:
            rep = next(x for x in supervisor_regions(ports)["primary"]["replicas"] if x["slot"] == slot)
            return (rep["alive"] and rep["pid"] != old_pid and rep["restarts"] == old_restarts + 1
                    and status_of(rep["url"] + "/health", 0.5) == 200)

        wait_for(back, 20, f"slot {slot} to be restarted and healthy", interval=0.02)
        restart_s = time.monotonic() - t_kill
        time.sleep(1.0)  # and a moment after the new replica is back in rotation
    finally:
        stop.set()
        poller.join(5)
    rep = next(x for x in supervisor_regions(ports)["primary"]["replicas"] if x["slot"] == slot)
    assert rep["pid"] != old_pid and rep["restarts"] == old_restarts + 1
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    figure("replica_restart_s", round(restart_s, 2))
    figure("router_polls_during_restart", len(codes))
    assert len(codes) > 20
    bad = [c for c in codes if c != 200]
    assert not bad, f"router answered {len(bad)} non-200 out of {len(codes)} during the restart: {set(bad)}"


def _health_check(topo: dict[str, Any]) -> tuple[float, int]:
    hc = router_state(topo)["health_check"]
    return float(hc["interval_s"]), int(hc["failure_threshold"])


def test_router_does_not_fail_over_without_a_healthy_dr(topo: dict[str, Any], ports: dict[str, int]) -> None:
    interval, threshold = _health_check(topo)
    health_url = topo["router"]["url"] + "/health"
    flips_before = len(router_state(topo)["flips"])
    try:
        # 1. primary apps stopped, dr at 0 replicas: nothing to fail over to
        scale(ports, "primary", 0)
        wait_for(lambda: not alive_replicas(ports, "primary"), 10, "primary replicas to stop")
        wait_for(lambda: not router_state(topo)["regions"]["primary"]["healthy"], threshold * interval + 3,
                 "the router to see the primary region unhealthy")
        deadline = time.monotonic() + 3 * interval * threshold
        while time.monotonic() < deadline:
            st = router_state(topo)
            assert st["active_region"] == "primary"
            assert len(st["flips"]) == flips_before
            assert status_of(health_url) == 503
            time.sleep(interval / 2)
        # 2. dr replicas running, but unhealthy (their database is a read-only standby): still no flip
        scale(ports, "dr", 2)
        wait_for(lambda: len(alive_replicas(ports, "dr")) == 2, 20, "two dr replicas")
        dr_urls = [x["url"] for x in alive_replicas(ports, "dr")]
        wait_for(lambda: all(status_of(u + "/health") == 503 for u in dr_urls), 20, "dr replicas answering 503")
        body = httpx.get(dr_urls[0] + "/health", timeout=2).json()
        assert body["checks"]["postgres"]["in_recovery"] is True
        deadline = time.monotonic() + 3 * interval * threshold
        while time.monotonic() < deadline:
            st = router_state(topo)
            assert st["active_region"] == "primary", st["flips"]
            assert not st["regions"]["dr"]["healthy"]
            time.sleep(interval / 2)
        assert len(router_state(topo)["flips"]) == flips_before
    finally:
        # back to the starting shape: 2 primary replicas, dr warm standby at 0
        scale(ports, "dr", 0)
        scale(ports, "primary", 2)
    wait_for(lambda: status_of(health_url) == 200, 20, "the global endpoint to answer 200 again")
    r = httpx.get(health_url, timeout=2)
    assert r.headers["x-drill-region"] == "primary"
    assert len(router_state(topo)["flips"]) == flips_before
    assert alive_replicas(ports, "dr") == []


def test_router_flips_to_dr_once_dr_becomes_healthy(topo: dict[str, Any], ports: dict[str, int]) -> None:
    """Promotes the DR PostgreSQL and Valkey: must run after every test that needs replication."""
    interval, threshold = _health_check(topo)
    scale(ports, "primary", 0)
    scale(ports, "dr", 2)
    wait_for(lambda: not alive_replicas(ports, "primary") and len(alive_replicas(ports, "dr")) == 2, 20,
             "primary at 0 and dr at 2 replicas")
    dr_urls = [x["url"] for x in alive_replicas(ports, "dr")]
    wait_for(lambda: all(status_of(u + "/health") == 503 for u in dr_urls), 20, "dr replicas answering 503")
    wait_for(lambda: not router_state(topo)["regions"]["primary"]["healthy"], threshold * interval + 3,
             "the primary region unhealthy")
    assert router_state(topo)["active_region"] == "primary"
    flips_before = len(router_state(topo)["flips"])

    # watch the DR apps directly from before the promotion: the moment DR became healthy is bracketed by
    # the start of the last round in which no DR replica answered 200 and the end of the first in which one did
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch_dr() -> None:
        with httpx.Client(timeout=1) as c:
            while not stop.is_set():
                started = time.time()
                for u in dr_urls:
                    try:
                        ok = c.get(u + "/health").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        seen["healthy_by"] = time.time()
                        return
                seen["unhealthy_at"] = started
                watching.set()
                time.sleep(0.01)

    watching = threading.Event()
    watcher = threading.Thread(target=watch_dr, daemon=True)
    watcher.start()
    try:
        assert watching.wait(10), "the DR watcher never saw the DR replicas unhealthy"
        # a region failover promotes both data stores of DR (the apps need Redis as master too)
        redis.Redis.from_url(topo["regions"]["dr"]["redis"]["url"], socket_timeout=2).replicaof("NO", "ONE")
        dr_admin = topo["regions"]["dr"]["postgres"]["dsn"].rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(dr_admin, autocommit=True) as c:
            assert c.execute("SELECT pg_promote(true, 30)").fetchone()[0] is True
            assert c.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        wait_for(lambda: router_state(topo)["active_region"] == "dr", (threshold + 2) * interval + 10,
                 "the router to flip to dr", interval=0.02)
    finally:
        stop.set()
        watcher.join(5)
    assert "healthy_by" in seen and "unhealthy_at" in seen, seen
    st = router_state(topo)
    assert st["active_region"] == "dr"
    new = st["flips"][flips_before:]
    assert len(new) == 1, new
    flip = new[0]
    assert flip["from"] == "primary" and flip["to"] == "dr"
    assert "primary unhealthy" in flip["reason"] and "secondary healthy" in flip["reason"], flip["reason"]
    r = httpx.get(topo["router"]["url"] + "/health", timeout=2)
    assert r.status_code == 200 and r.headers["x-drill-region"] == "dr"
    # the router's own flip time (same clock) against the bracket of the healthy moment
    delay_lo = flip["at_epoch"] - seen["healthy_by"]
    delay_hi = flip["at_epoch"] - seen["unhealthy_at"]
    figure("flip_delay_s", {"measured": round(delay_lo, 3), "resolution": round(delay_hi - delay_lo, 3),
                            "interval_s": interval, "failure_threshold": threshold,
                            "bounds": [(threshold - 1) * interval, (threshold + 2) * interval + scaled(1.0)]})
    assert delay_hi >= (threshold - 1) * interval, (delay_lo, delay_hi)
    assert delay_lo <= (threshold + 2) * interval + scaled(1.0), (delay_lo, delay_hi)


# --------------------------------------------------------------------------- down (last)


_lab_processes = processes_mentioning


def test_down_leaves_no_process_and_no_port(lab_up: dict[str, Any]) -> None:
    state = lab_up["state"]
    st = json.loads((state / "lab.json").read_text())
    lab_ports = sorted(st["ports"].values())
    markers = [str(state.resolve()), str(paths.server_root(state.resolve()))]
    assert _lab_processes(markers), "the lab should be running before down"
    # someone follows a lab log: `down` stops the lab's programs only, never that
    tail = subprocess.Popen(["tail", "-f", str(state.resolve() / "logs" / "router.log")], stdout=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        r = drill("lab", "down", "--state-dir", str(state))
        figure("lab_down_s", round(time.monotonic() - t0, 2))
        assert r.returncode == 0, r.stderr
        assert "lab stopped" in r.stdout
        assert tail.poll() is None, "`drill lab down` killed a `tail -f` on a lab log"
        left = [(pid, cmd) for pid, cmd in _lab_processes(markers) if pid != tail.pid]
        assert not left, f"lab processes left after down: {left}"
    finally:
        tail.kill()
        tail.wait(5)
    busy = [p for p in lab_ports if procs.port_open(p)]
    assert not busy, f"lab ports still open after down: {busy}"
    assert not (state / "lab.json").exists()
    assert (state / "logs").is_dir()  # the logs are kept
    again = drill("lab", "down", "--state-dir", str(state))
    assert again.returncode == 0, again.stderr
    assert "no lab was running" in again.stdout
    print("\n[figures] " + json.dumps(FIGURES))
