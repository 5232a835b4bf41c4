"""Integration tests of the app supervisor process: self-healing of killed replicas, scaling, logs, shutdown."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration._backends import HERE, free_port, start_module, start_router, stop, wait_until
from tests.timing import poll, scaled

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def backend_region(name: str, replicas: int, slots: int) -> dict[str, Any]:
    return {
        "replicas": replicas,
        "slots": [{"port": free_port()} for _ in range(slots)],
        "command": ["python", str(HERE), "--host", "127.0.0.1", "--port", "{port}", "--name", "{region}-{slot}"],
        "env": {"DRILL_TEST_SLOT": "{slot}"},
    }


class Sup:
    """A supervisor process started by one test."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        self.config = config
        cfg = workdir / "supervisor.json"
        cfg.write_text(json.dumps(config))
        self.proc, self.url = start_module("harness.lab.supervisor", ["--config", str(cfg)], workdir / "supervisor.log", "/health")

    def regions(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/regions", timeout=5.0)
        r.raise_for_status()
        return r.json()

    def replicas(self, region: str) -> list[dict[str, Any]]:
        return self.regions()[region]["replicas"]

    def alive_pids(self, region: str) -> dict[int, int]:
        return {r["slot"]: r["pid"] for r in self.replicas(region) if r["alive"]}

    def wait_serving(self, region: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until exactly `count` replicas are alive and each answers /health."""

        def ready() -> list[dict[str, Any]] | None:
            reps = [r for r in self.replicas(region) if r["alive"]]
            if len(reps) != count:
                return None
            for r in reps:
                try:
                    httpx.get(r["url"] + "/health", timeout=1.0)
                except httpx.HTTPError:
                    return None
            return reps

        return wait_until(ready, timeout, step=0.1, what=f"{count} serving replicas in {region}")

    def scale(self, region: str, replicas: Any) -> httpx.Response:
        return httpx.put(f"{self.url}/regions/{region}", json={"replicas": replicas}, timeout=15.0)


@pytest.fixture
def sups(tmp_path: Path) -> Iterator[list[Sup]]:
    started: list[Sup] = []
    try:
        yield started
    finally:
        for s in started:
            stop(s.proc)


def start(sups: list[Sup], tmp_path: Path, **regions: dict[str, Any]) -> Sup:
    config = {"regions": regions, "log_dir": str(tmp_path / "logs"), "restart_delay_s": 0.2}
    sup = Sup(config, tmp_path)
    sups.append(sup)
    return sup


def test_starts_replicas_logs_and_substitutes(sups: list[Sup], tmp_path: Path) -> None:
    sup = start(sups, tmp_path, primary=backend_region("primary", 2, 3), dr=backend_region("dr", 0, 2))
    reps = sup.wait_serving("primary", 2)
    assert [r["slot"] for r in reps] == [0, 1]
    ports = [s["port"] for s in sup.config["regions"]["primary"]["slots"]]
    assert [r["url"] for r in reps] == [f"http://127.0.0.1:{p}" for p in ports[:2]]
    assert all(r["restarts"] == 0 and r["pid"] for r in reps)
    assert httpx.get(reps[1]["url"] + "/_backend/stats").json()["name"] == "primary-1"  # {region}/{slot} substituted
    regions = sup.regions()
    assert regions["primary"]["desired"] == 2 and regions["dr"] == {"desired": 0, "slots": 2, "replicas": []}
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["app-primary-0.log", "app-primary-1.log"]
    assert f"--port {ports[0]}" in (logs / "app-primary-0.log").read_text()
    env = open(f"/proc/{reps[1]['pid']}/environ", "rb").read().split(b"\0")
    assert b"DRILL_TEST_SLOT=1" in env
    assert os.getpgid(reps[0]["pid"]) == reps[0]["pid"]  # own process group
    assert os.getpgid(reps[0]["pid"]) != os.getpgid(sup.proc.pid)


def test_killed_replica_is_restarted_and_router_keeps_answering(sups: list[Sup], tmp_path: Path) -> None:
    sup = start(sups, tmp_path, primary=backend_region("primary", 2, 2), dr=backend_region("dr", 0, 1))
    reps = sup.wait_serving("primary", 2)
    router_cfg = {
        "regions": {
            "primary": {"role": "PRIMARY", "targets": [r["url"] for r in reps]},
            "dr": {"role": "SECONDARY", "targets": []},
        },
        "health_check": {"path": "/health", "interval_s": 0.2, "failure_threshold": 3, "timeout_s": 0.5},
    }
    router_proc, router = start_router(router_cfg, tmp_path)
    try:
        statuses: list[int] = []
        done = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=router, timeout=5.0) as client:
                while not done.is_set():
                    statuses.append(client.post("/vouchers", json={"n": len(statuses)}).status_code)
                    time.sleep(0.01)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            time.sleep(0.3)
            victim = reps[0]
            killed_at = time.monotonic()
            os.kill(victim["pid"], signal.SIGKILL)
            new = wait_until(
                lambda: next((r for r in sup.replicas("primary") if r["slot"] == 0 and r["alive"] and r["pid"] != victim["pid"]), None),
                5.0,
                what="slot 0 restarted",
            )
            restart_s = time.monotonic() - killed_at
            assert new["restarts"] == 1 and restart_s < 3.0
            assert not pid_alive(victim["pid"])
            sup.wait_serving("primary", 2)
            wait_until(
                lambda: all(t["healthy"] for t in httpx.get(router + "/_router/state").json()["regions"]["primary"]["targets"]),
                5.0,
                what="router sees both replicas healthy again",
            )
            time.sleep(0.3)
        finally:
            done.set()
            worker.join(10)
        assert len(statuses) > 20
        # one request at a time: at most one can have been on the killed replica's connection when it died, and a
        # write the target may have applied is answered 502 (indeterminate), never sent twice; every other 200
        bad = [c for c in statuses if c != 200]
        assert bad in ([], [502]), f"router answered {bad} of {len(statuses)} during the restart"
        assert sup.replicas("primary")[1]["restarts"] == 0
        assert "restart" in (tmp_path / "supervisor.log").read_text()
    finally:
        stop(router_proc)


def test_scale_up_and_down(sups: list[Sup], tmp_path: Path) -> None:
    sup = start(sups, tmp_path, primary=backend_region("primary", 2, 3), dr=backend_region("dr", 0, 2))
    before = sup.wait_serving("primary", 2)

    r = sup.scale("dr", 2)
    assert r.status_code == 200 and r.json()["desired"] == 2
    dr = sup.wait_serving("dr", 2)
    assert httpx.get(dr[1]["url"] + "/_backend/stats").json()["name"] == "dr-1"

    assert sup.scale("primary", 3).status_code == 200
    reps = sup.wait_serving("primary", 3)
    assert [r["pid"] for r in reps[:2]] == [r["pid"] for r in before]  # scaling up leaves running ones alone

    r = sup.scale("primary", 1)
    assert r.status_code == 200
    body = r.json()
    assert body["desired"] == 1 and [x["slot"] for x in body["replicas"]] == [0]  # highest slots went first
    for gone in reps[1:]:
        assert not pid_alive(gone["pid"])
        with pytest.raises(httpx.HTTPError):
            httpx.get(gone["url"] + "/health", timeout=1.0)
    assert sup.alive_pids("primary") == {0: reps[0]["pid"]}
    time.sleep(0.5)  # stopped by scaling, so not restarted
    assert sup.alive_pids("primary") == {0: reps[0]["pid"]}

    assert sup.scale("dr", 0).status_code == 200
    assert sup.regions()["dr"]["replicas"] == []
    assert all(not pid_alive(r["pid"]) for r in dr)

    # bad input
    for bad in (4, -1, "2", True, None):
        resp = sup.scale("primary", bad)
        assert resp.status_code == 400 and "error" in resp.json(), bad
    resp = httpx.put(sup.url + "/regions/primary", content=b"{oops")
    assert resp.status_code == 400 and "JSON" in resp.json()["error"]
    resp = sup.scale("mars", 1)
    assert resp.status_code == 404 and "mars" in resp.json()["error"]
    assert httpx.get(sup.url + "/nope").status_code == 404
    assert sup.regions()["primary"]["desired"] == 1


def test_scale_down_kills_a_replica_that_ignores_sigterm(sups: list[Sup], tmp_path: Path) -> None:
    ready = tmp_path / "stubborn.ready"  # touched once the SIGTERM handler is in place
    stubborn = {
        "replicas": 1,
        "slots": [{"port": free_port()}],
        "command": [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "open(sys.argv[1], 'w').close(); time.sleep(600)", str(ready)],
    }
    sup = start(sups, tmp_path, primary=stubborn)
    pid = poll(lambda: sup.alive_pids("primary").get(0), 5.0, "stubborn replica")
    poll(ready.exists, 10.0, "the stubborn replica ignoring SIGTERM")
    t0 = time.monotonic()
    r = sup.scale("primary", 0)
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["replicas"] == []
    # SIGTERM is ignored: the supervisor kills it after its 3 s grace (later only on a loaded machine)
    assert 2.9 <= took <= 3.0 + scaled(3.0), f"scale down took {took:.2f}s"
    assert not pid_alive(pid)


def test_sigterm_stops_all_children(sups: list[Sup], tmp_path: Path) -> None:
    sup = start(sups, tmp_path, primary=backend_region("primary", 2, 2), dr=backend_region("dr", 1, 1))
    pids = [r["pid"] for r in sup.wait_serving("primary", 2)] + [r["pid"] for r in sup.wait_serving("dr", 1)]
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its shutdown
    wait_until(lambda: not any(pid_alive(p) for p in pids), 5.0, what="children gone after SIGTERM")


def test_children_die_with_a_killed_supervisor(sups: list[Sup], tmp_path: Path) -> None:
    sup = start(sups, tmp_path, primary=backend_region("primary", 2, 2))
    pids = [r["pid"] for r in sup.wait_serving("primary", 2)]
    sup.proc.kill()  # no chance to clean up: PR_SET_PDEATHSIG does it
    sup.proc.wait(5)
    wait_until(lambda: not any(pid_alive(p) for p in pids), 5.0, what="children gone after the supervisor was killed")


def test_bad_config_exits_with_usage_code(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"regions": {"primary": {"replicas": 3, "slots": [{"port": 1}], "command": ["x"]}}}))
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "harness.lab.supervisor", "--port", str(free_port()), "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=HERE.parents[2],
    )
    assert out.returncode == 2 and "replicas 3" in out.stderr
