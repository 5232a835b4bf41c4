"""Region loss, DR failover and failback against the real embedded lab; guard refusal, dry run and `revert_all` recovery."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import psycopg
import pytest

from harness.drill import session as drill_session
from harness.errors import HarnessError, SafetyRefusal
from harness.failover.failback import fail_back, lab_shape
from harness.failover.region import fail_region
from harness.failover.runbook import detect_level, fail_over
from harness.lab.kerp.seed import leaf_account_ids
from harness.lab.manager import Lab
from harness.safety import context as run_context
from harness.safety.fault_ledger import FaultLedger
from harness.targets import _lab
from harness.targets.app import actions as app_actions
from harness.targets.app import ops as app_ops
from harness.targets.postgres import actions as pg_actions
from harness.targets.postgres import ops as pg_ops
from harness.targets.postgres import probes as pg_probes
from harness.targets.redis import actions as rd_actions
from harness.targets.redis import probes as rd_probes
from harness.targets.router import actions as router_actions
from harness.targets.router import probes as router_probes
from tests.labs import fresh_lab

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    mp = pytest.MonkeyPatch()
    try:
        with fresh_lab("drill-failover-") as the_lab:
            # FaultLedger() (as `drill recover` builds it) finds this lab's ledger
            mp.setenv("DRILL_STATE_DIR", str(the_lab.state))
            mp.delenv("DRILL_FAULT_LEDGER", raising=False)
            yield the_lab
    finally:
        mp.undo()


@pytest.fixture
def cfg(lab: Lab) -> dict[str, Any]:
    return {"drill_state_dir": str(lab.state)}


@pytest.fixture
def session(tmp_path: Path, cfg: dict[str, Any]) -> Iterator[drill_session.DrillSession]:
    """A recording session, named in the test's configuration by its run id (as `drill run` passes it)."""
    s = drill_session.begin("test", "failover", report_dir=tmp_path / "report")
    cfg[run_context.RUN_ID_KEY] = s.run_id
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


@pytest.fixture
def own_lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Lab, dict[str, Any]]]:
    """A lab of its own, for a test that may leave it unrepairable (a refused failback); gone afterwards."""
    with fresh_lab("drill-failover-own-") as the_lab:
        monkeypatch.setenv("DRILL_STATE_DIR", str(the_lab.state))
        yield the_lab, {"drill_state_dir": str(the_lab.state)}


def _count(dsn: str, rids: list[str]) -> int:
    with psycopg.connect(dsn, connect_timeout=3) as c:
        return int(c.execute("SELECT count(*) FROM vouchers WHERE request_id = ANY(%s)", (rids,)).fetchone()[0])


def _writable(t: _lab.LabTarget) -> list[str]:
    """The regions whose PostgreSQL accepts writes now."""
    out = []
    for r in _lab.REGIONS:
        try:
            with psycopg.connect(t.pg_dsn(r), connect_timeout=1, autocommit=True) as c:
                if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0] and \
                        c.execute("SHOW default_transaction_read_only").fetchone()[0] == "off":
                    out.append(r)
        except psycopg.Error:
            pass
    return out


def _dr_app_url(t: _lab.LabTarget) -> str:
    """Scale DR's apps to 1 (they write to DR's own PostgreSQL) and return its URL."""
    with httpx.Client(timeout=5.0) as http:
        app_ops.scale(http, t.supervisor_url, "dr", 1)
        app_ops.wait_scaled(http, t.supervisor_url, "dr", 1)
        return app_ops.alive_replicas(app_ops.regions(http, t.supervisor_url), "dr")[0]["url"]


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
        assert [e.fault for e in FaultLedger().active()] == ["fail_region", "fail_over"]
        assert router_probes.router_state(configuration=cfg)["mode"] == "manual"  # pinned: the old region is fenced
        assert fo["fence"]["apps"] == 0 and fo["fence"]["postgresql"] == "down"
        assert router_probes.active_region(configuration=cfg) == "dr"
        assert pg_probes.is_primary("dr", configuration=cfg)
        assert [s["service"] for s in fo["services"]] == ["authentication", "api-gateway", "voucher-service",
                                                          "tax-invoice-service"]
        assert all(s["ok"] and s["region"] == "dr" for s in fo["services"])

        written = _write_vouchers(t.router_url, 5)
        assert all(region == "dr" for _, _, region in written)

        fb = fail_back(configuration=cfg)
        assert fb["changed"] and fb["data_check"]["ok"]
        assert fb["kept_aside"]["primary"] == str(t.node("primary").aside_dir)  # the old primary, before pg_rewind
        assert (t.node("primary").aside_dir / "PG_VERSION").exists()
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
    for name in ("detected", "approved", "promoted", "scaled", "traffic_switched", "fenced", "service_verified",
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
    results = FaultLedger().revert_all()  # newest first: fail_over's entry (fail_back), then fail_region's
    assert [(e.fault, err) for e, err in results] == [("fail_over", None), ("fail_region", None)]
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


def test_split_brain_with_writes_on_both_sides_is_refused(own_lab: tuple[Lab, dict[str, Any]]) -> None:
    """DR promoted while the primary lives and both take writes: fail_back refuses and changes nothing."""
    lab, cfg = own_lab
    t = _lab.resolve(cfg)
    pg_actions.promote_standby("dr", configuration=cfg)
    on_primary = _write_vouchers(t.router_url, 3)
    assert {region for _, _, region in on_primary} == {"primary"}
    on_dr = _write_vouchers(_dr_app_url(t), 2)  # straight to a DR app, which writes to DR's PostgreSQL

    with pytest.raises(HarnessError, match="^not failing back: both regions took writes since they diverged: ") as e:
        fail_back(configuration=cfg)
    assert "\n" not in str(e.value) and "vouchers" in str(e.value) and "audit_log" in str(e.value)
    assert pg_probes.roles(configuration=cfg) == {"primary": "primary", "dr": "primary"}
    assert sorted(_writable(t)) == ["dr", "primary"]  # not even fenced
    assert _count(t.pg_dsn("primary"), [r for r, _, _ in on_primary]) == 3
    assert _count(t.pg_dsn("dr"), [r for r, _, _ in on_dr]) == 2
    assert not any(n.aside_dir.exists() for n in t.nodes.values())
    assert {e.fault for e in FaultLedger().active()} == {"promote_standby"}


def test_split_brain_where_only_the_primary_wrote_keeps_its_writes(lab: Lab, cfg: dict[str, Any]) -> None:
    """DR promoted by mistake, traffic stays on the primary: the primary's writes win, DR rejoins (higher timeline
    or not), its data dir kept aside."""
    t = _lab.resolve(cfg)
    pg_actions.promote_standby("dr", configuration=cfg)
    written = _write_vouchers(t.router_url, 5)
    assert {region for _, _, region in written} == {"primary"}
    with httpx.Client(timeout=5.0) as http:
        r = http.post(f"{t.router_url}/tax-invoices", json={"company_id": 1, "amount": "1100.00"})
        assert r.status_code == 201, r.text
    with psycopg.connect(t.pg_dsn("dr")) as c, psycopg.connect(t.pg_dsn("primary")) as p:
        assert pg_ops.timeline_id(c) > pg_ops.timeline_id(p)  # the live timeline, not the last checkpoint's

    fb = fail_back(configuration=cfg)
    assert fb["changed"] and fb["data_check"]["ok"], fb
    current = next(s for s in fb["steps"] if s["step"] == "postgresql current primary")
    assert current["region"] == "primary" and current["split_brain"] and current["fenced"] == "dr"
    assert pg_probes.roles(configuration=cfg) == {"primary": "primary", "dr": "standby"}
    assert _count(t.pg_dsn("primary"), [r for r, _, _ in written]) == 5
    pg_ops.wait_caught_up(lambda: t.pg("primary"), lambda: t.pg("dr"))
    assert _count(t.pg_dsn("dr"), [r for r, _, _ in written]) == 5
    with psycopg.connect(t.pg_dsn("dr")) as c:
        assert c.execute("SELECT count(*) FROM tax_invoices WHERE amount = 1100.00").fetchone()[0] >= 1
    assert fb["kept_aside"] == {"dr": str(t.node("dr").aside_dir)}
    assert (t.node("dr").aside_dir / "PG_VERSION").exists()
    assert FaultLedger().active() == []
    assert _wait_shape(cfg)["ok"]


def test_both_regions_down_after_failover_loses_nothing(own_lab: tuple[Lab, dict[str, Any]]) -> None:
    """Failed over, DR took writes, then DR died too: nothing starts the old primary over DR's data."""
    lab, cfg = own_lab
    approved = {**cfg, "drill_approvals": ["dr_region_switch"]}
    t = _lab.resolve(cfg)
    fail_region("primary", configuration=cfg)
    fail_over("dr", configuration=approved)
    written = _write_vouchers(t.router_url, 5)
    assert {region for _, _, region in written} == {"dr"}
    pg_actions.kill_primary("dr", configuration=cfg)
    pg_ops.wait_reaped(t.node("dr"))
    assert pg_probes.roles(configuration=cfg) == {"primary": "down", "dr": "down"}

    with pytest.raises(HarnessError, match="^not failing back: both PostgreSQL regions are down and both were "
                                           "primaries") as e:
        fail_back(configuration=cfg)
    assert "\n" not in str(e.value)
    assert not any(n.is_running() for n in t.nodes.values())  # nothing started, nothing rewound
    dr_disk = pg_ops.disk_state(t.node("dr"))
    assert dr_disk["primary"] and dr_disk["timeline"] > pg_ops.disk_state(t.node("primary"))["timeline"]
    assert not any(n.aside_dir.exists() for n in t.nodes.values())
    # the old primary is never started over the promoted DR's data, down or not
    with pytest.raises(HarnessError, match="^not restoring PostgreSQL primary as a primary: dr is down but was "
                                           "promoted"):
        pg_actions.restore_primary("primary", configuration=cfg)
    assert not t.node("primary").is_running()

    # the way out the refusal names: start DR (the later-promoted one), then fail back
    assert pg_actions.restore_primary("dr", configuration=cfg)["how"] == "started"
    fb = fail_back(configuration=cfg)
    assert fb["data_check"]["ok"] and _count(t.pg_dsn("primary"), [r for r, _, _ in written]) == 5
    assert pg_probes.roles(configuration=cfg) == {"primary": "primary", "dr": "standby"}
    assert FaultLedger().active() == []


def test_pause_failover_resume_never_makes_two_primaries(lab: Lab, cfg: dict[str, Any], session: Any) -> None:
    """A hung primary the runbook failed over from stays stopped on resume; fail_back rejoins it as a standby."""
    session.approvals.add("dr_region_switch")
    t = _lab.resolve(cfg)
    pg_actions.pause_primary("primary", configuration=cfg)
    fo = fail_over("dr", configuration=cfg)
    assert fo["fence"]["postgresql"].startswith("paused")
    res = pg_actions.resume_primary("primary", configuration=cfg)
    assert res["resumed_pids"] == [] and res["how"].startswith("left paused: dr is a running primary")
    assert pg_ops.is_paused(t.node("primary"))
    assert _writable(t) == ["dr"]
    written = _write_vouchers(t.router_url, 3)
    assert {region for _, _, region in written} == {"dr"}
    assert _writable(t) == ["dr"]
    assert "pause_primary" in {e.fault for e in FaultLedger().active()}

    fb = fail_back(configuration=cfg)
    assert fb["data_check"]["ok"]
    assert _count(t.pg_dsn("primary"), [r for r, _, _ in written]) == 3
    assert pg_probes.roles(configuration=cfg) == {"primary": "primary", "dr": "standby"}
    aside = t.node("primary").aside_dir
    assert fb["kept_aside"]["primary"] == str(aside) and (aside / "PG_VERSION").exists()
    data_dir = t.node("primary").data_dir
    assert (aside.stat().st_uid, (aside / "global").stat().st_uid) == (data_dir.stat().st_uid,) * 2  # the server user's
    assert FaultLedger().active() == []


def test_fail_over_fences_a_writable_old_primary(own_lab: tuple[Lab, dict[str, Any]]) -> None:
    """Failed over while the old primary still ran (its Valkey died) and held unreplicated writes: the runbook
    stops it, and fail_back refuses to rewind those writes away."""
    lab, cfg = own_lab
    approved = {**cfg, "drill_approvals": ["dr_region_switch"]}
    t = _lab.resolve(cfg)
    pg_actions.cut_replication(configuration=cfg)
    unreplicated = _write_vouchers(t.router_url, 3)
    assert {region for _, _, region in unreplicated} == {"primary"}
    rd_actions.kill_primary("primary", configuration=cfg)
    fo = fail_over("dr", configuration=approved)
    assert fo["fence"]["postgresql"].startswith("was a writable primary: stopped")
    assert fo["fence"]["own_rows"]["vouchers"] == 3
    assert not t.node("primary").is_running() and _writable(t) == ["dr"]
    written = _write_vouchers(t.router_url, 2)
    assert {region for _, _, region in written} == {"dr"}

    with pytest.raises(HarnessError, match="^not failing back: both regions took writes since they diverged: "
                                           "primary \\(down\\) took vouchers 3"):
        fail_back(configuration=cfg)
    assert not t.node("primary").is_running() and not t.node("primary").aside_dir.exists()
    assert _count(t.pg_dsn("dr"), [r for r, _, _ in written]) == 2
