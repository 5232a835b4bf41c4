"""Region loss, DR failover and failback against the real embedded lab; guard refusal, dry run and `revert_all` recovery."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import psycopg
import pytest

from harness.drill import session as drill_session
from harness.drill.fault_ledger import FaultLedger
from harness.errors import SafetyRefusal
from harness.failover.failback import fail_back, lab_shape
from harness.failover.region import fail_region
from harness.failover.runbook import detect_level, fail_over
from harness.lab.kerp.seed import leaf_account_ids
from harness.lab.manager import Lab
from harness.targets import _lab
from harness.targets.app import actions as app_actions
from harness.targets.postgres import actions as pg_actions
from harness.targets.postgres import probes as pg_probes
from harness.targets.redis import actions as rd_actions
from harness.targets.redis import probes as rd_probes
from harness.targets.router import actions as router_actions
from harness.targets.router import probes as router_probes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    state = Path(tempfile.mkdtemp(prefix="drill-failover-"))
    state.chmod(0o755)  # as root the servers run as an unprivileged user who writes their logs here
    mp = pytest.MonkeyPatch()
    mp.setenv("DRILL_STATE_DIR", str(state))  # FaultLedger() (as `drill recover` builds it) finds this lab's ledger
    mp.delenv("DRILL_FAULT_LEDGER", raising=False)
    the_lab = Lab(state_dir=state)
    try:
        the_lab.up(timeout=120)
        yield the_lab
    finally:
        try:
            the_lab.down()
        finally:
            mp.undo()
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def cfg(lab: Lab) -> dict[str, Any]:
    return {"drill_state_dir": str(lab.state)}


@pytest.fixture
def session(tmp_path: Path) -> Iterator[drill_session.DrillSession]:
    s = drill_session.begin("test", "failover", report_dir=tmp_path / "report")
    try:
        yield s
    finally:
        drill_session.end()


@pytest.fixture(autouse=True)
def in_shape(lab: Lab, cfg: dict[str, Any]) -> Iterator[None]:
    """Every test starts and leaves the lab in its starting shape, with no active fault."""
    yield
    if FaultLedger().active() or not lab_shape(_lab.resolve(cfg))["ok"]:
        FaultLedger().revert_all(how="test teardown")
        fail_back(configuration=cfg)


def _write_vouchers(router_url: str, n: int) -> list[tuple[str, int, str | None]]:
    acc = leaf_account_ids(1)
    out = []
    with httpx.Client(timeout=5.0) as http:
        for _ in range(n):
            rid = uuid.uuid4().hex
            r = http.post(f"{router_url}/vouchers", json={
                "company_id": 1, "request_id": rid, "voucher_date": "2024-05-01", "description": "written in DR",
                "lines": [{"account_id": acc[0], "debit": "1000.00", "credit": "0"},
                          {"account_id": acc[1], "debit": "0", "credit": "1000.00"}]})
            assert r.status_code == 201, r.text
            out.append((rid, r.status_code, r.headers.get("x-drill-region")))
    return out


def _wait_shape(cfg: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        shape = lab_shape(_lab.resolve(cfg))
        if shape["ok"] or time.monotonic() > deadline:
            return shape
        time.sleep(0.2)


def test_region_loss_failover_and_failback_twice(lab: Lab, cfg: dict[str, Any], session: Any) -> None:
    session.approvals.add("dr_region_switch")
    t = _lab.resolve(cfg)
    figures = []
    for cycle in range(2):
        fr = fail_region("primary", configuration=cfg)
        assert [e.fault for e in FaultLedger().active()] == ["fail_region"]
        assert pg_probes.roles(configuration=cfg)["primary"] == "down"
        assert rd_probes.role("primary", configuration=cfg) == "down"
        level = detect_level(configuration=cfg)
        assert {"database_primary", "redis_cluster"} <= set(level["failed"]) and level["level"] >= 2

        fo = fail_over("dr", configuration=cfg)
        assert router_probes.active_region(configuration=cfg) == "dr"
        assert pg_probes.is_primary("dr", configuration=cfg)
        assert [s["service"] for s in fo["services"]] == ["authentication", "api-gateway", "voucher-service",
                                                          "tax-invoice-service"]
        assert all(s["ok"] and s["region"] == "dr" for s in fo["services"])

        written = _write_vouchers(t.router_url, 5)
        assert all(region == "dr" for _, _, region in written)

        fb = fail_back(configuration=cfg)
        assert fb["changed"] and fb["data_check"]["ok"]
        shape = lab_shape(t)
        assert shape["ok"], shape
        assert pg_probes.roles(configuration=cfg) == {"primary": "primary", "dr": "standby"}
        assert rd_probes.roles(configuration=cfg) == {"primary": "master", "dr": "slave"}
        assert pg_probes.replication_lag_within(5, configuration=cfg)
        with psycopg.connect(t.pg_dsn("primary")) as c:
            n = c.execute("SELECT count(*) FROM vouchers WHERE request_id = ANY(%s)",
                          ([rid for rid, _, _ in written],)).fetchone()[0]
        assert n == len(written)
        assert FaultLedger().active() == []
        with httpx.Client(timeout=5.0) as http:
            r = http.get(f"{t.router_url}/health")
        assert r.status_code == 200 and r.headers.get("x-drill-region") == "primary"
        assert fail_back(configuration=cfg)["changed"] is False  # idempotent: in shape, nothing to do
        figures.append((fo["total_s"], fb["seconds"], fr["steps"][-1]["at_s"]))

    events = [(e.kind, e.event, e.data.get("phase")) for e in session.timeline.events]
    assert events.count(("fault", "fail_region", "inject")) == 2
    assert events.count(("fault", "fail_region", "revert")) == 2
    for name in ("detected", "approved", "promoted", "scaled", "traffic_switched", "service_verified",
                 "failback_complete"):
        assert ("failover", name, None) in events, name
    verified = [e.data["service"] for e in session.timeline.events if e.event == "service_verified"]
    assert verified[:4] == ["authentication", "api-gateway", "voucher-service", "tax-invoice-service"]
    fault_t = session.fault_t
    switched = [e.t for e in session.timeline.events if e.event == "traffic_switched"]
    assert fault_t is not None and switched[0] > fault_t
    print("failover/failback seconds per cycle:", figures)


def test_guard_refuses_without_approval(lab: Lab, cfg: dict[str, Any], session: Any) -> None:
    before = FaultLedger().active()
    with pytest.raises(SafetyRefusal, match="^not injecting: .*dr_region_switch"):
        router_actions.switch_region("dr", configuration=cfg)
    assert router_probes.router_state(configuration=cfg)["mode"] == "auto"
    assert router_probes.active_region(configuration=cfg) == "primary"
    assert FaultLedger().active() == before
    with pytest.raises(SafetyRefusal, match="^not injecting: .*'staging'"):
        pg_actions.kill_primary("primary", configuration={**cfg, "drill_environment": "staging"})
    assert pg_probes.is_primary("primary", configuration=cfg)
    refused = [e for e in session.timeline.events if e.kind == "fault" and e.data.get("phase") == "refused"]
    assert len(refused) == 2 and session.fault_t is None


def test_dry_run_changes_nothing(lab: Lab, cfg: dict[str, Any], session: Any) -> None:
    dry = {**cfg, "drill_dry_run": True, "drill_approvals": ["dr_region_switch"]}
    t = _lab.resolve(cfg)
    pg_pid, rd_pid = t.node("primary").pid(), lab.valkey_pid("primary")
    results = [fail_region("primary", configuration=dry), pg_actions.kill_primary(configuration=dry),
               rd_actions.kill_primary(configuration=dry), pg_actions.cut_replication(configuration=dry),
               app_actions.scale_region("primary", 0, configuration=dry),
               router_actions.switch_region("dr", configuration=dry), fail_over(configuration=dry)]
    assert all(r["dry_run"] for r in results)
    assert t.node("primary").pid() == pg_pid and lab.valkey_pid("primary") == rd_pid
    assert lab_shape(t)["ok"]
    assert FaultLedger().active() == []
    planned = [e for e in session.timeline.events if e.kind == "fault" and e.data.get("phase") == "planned"]
    assert len(planned) == 6 and session.fault_t is None


def test_revert_all_after_a_crash_mid_drill(lab: Lab, cfg: dict[str, Any]) -> None:
    """Faults injected and never rolled back (the harness died): `drill recover` reverts them all."""
    approved = {**cfg, "drill_approvals": ["dr_region_switch"]}
    pg_actions.cut_replication(configuration=cfg)
    app_actions.scale_region("primary", 1, configuration=cfg)
    rd_actions.kill_primary("primary", configuration=cfg)
    pg_actions.kill_primary("primary", configuration=cfg)
    assert len(FaultLedger().active()) == 4
    results = FaultLedger().revert_all()
    assert [err for _, err in results] == [None] * 4
    assert FaultLedger().active() == []
    shape = _wait_shape(cfg)
    assert shape["ok"], shape

    # the whole region lost and failed over, then the harness crashed: recover = fail_back
    fail_region("primary", configuration=cfg)
    fail_over("dr", configuration=approved)
    written = _write_vouchers(_lab.resolve(cfg).router_url, 3)
    results = FaultLedger().revert_all()
    assert [(e.fault, err) for e, err in results] == [("fail_region", None)]
    shape = _wait_shape(cfg)
    assert shape["ok"], shape
    with psycopg.connect(_lab.resolve(cfg).pg_dsn("primary")) as c:
        n = c.execute("SELECT count(*) FROM vouchers WHERE request_id = ANY(%s)",
                      ([rid for rid, _, _ in written],)).fetchone()[0]
    assert n == 3


def test_dr_region_loss_and_split_brain_are_repaired(lab: Lab, cfg: dict[str, Any]) -> None:
    """Losing the DR region, and a DR standby promoted while the primary lives: both end with DR streaming again."""
    fail_region("dr", configuration=cfg)
    assert pg_probes.roles(configuration=cfg) == {"primary": "primary", "dr": "down"}
    assert not pg_probes.replication_lag_within(60, configuration=cfg)
    FaultLedger().revert_all()
    assert _wait_shape(cfg)["ok"]

    pg_actions.promote_standby("dr", configuration=cfg)
    assert pg_probes.roles(configuration=cfg) == {"primary": "primary", "dr": "primary"}
    res = pg_actions.demote_standby("dr", configuration=cfg)
    assert res["how"] in ("pg_rewind", "restarted as standby") or res["how"].startswith("base backup")
    assert pg_probes.roles(configuration=cfg) == {"primary": "primary", "dr": "standby"}
    assert FaultLedger().active() == []
    assert _wait_shape(cfg)["ok"]
