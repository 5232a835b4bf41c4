"""Integration tests of the workload against the real embedded lab: ledger history, final read, probes, a cut database link."""

from __future__ import annotations

import collections
import time
import uuid

import httpx
import pytest

from harness.core.timeline import Timeline
from harness.workload import SERVICES, Workload, final_read, find_primary_dsn
from tests.timing import MULTIPLIER

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(drill_lab):
    """The session lab's topology: the workload only writes vouchers, and the cut link is restored by the test."""
    return drill_lab.status()


def _run_id() -> str:
    return "it" + uuid.uuid4().hex[:10]


def _history(tl: Timeline) -> dict[str, list]:
    by_key: dict[str, list] = collections.defaultdict(list)
    for op in tl.ops:
        if op.f == "write":  # the ledger's vouchers (probes also record invoices and sessions)
            by_key[op.key].append(op)
    return by_key


def _assert_pairs(by_key: dict[str, list]) -> None:
    """Every key: one invoke, then exactly one completion by the same process."""
    bad = {k: [o.type for o in ops] for k, ops in by_key.items()
           if len(ops) != 2 or ops[0].type != "invoke" or ops[1].type not in ("ok", "fail", "indeterminate")
           or ops[0].process != ops[1].process}
    assert not bad, f"unpaired ops: {dict(list(bad.items())[:5])}"


def _wait_ok(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url}/health did not answer 200 within {timeout} s")


def test_find_primary_dsn(lab):
    assert find_primary_dsn(lab) == lab["regions"]["primary"]["postgres"]["dsn"]


def test_writers_and_probes_record_a_complete_history(lab):
    tl = Timeline()
    run_id = _run_id()
    wl = Workload.from_topology(lab, tl, run_id=run_id, writers=4)
    t0 = time.monotonic()
    with wl:
        time.sleep(3.0)
    ran_s = time.monotonic() - t0
    by_key = _history(tl)
    assert len(by_key) > 100, f"only {len(by_key)} writes in 3 s"
    _assert_pairs(by_key)
    keys = set(by_key)
    assert all(k.startswith(run_id + "-w") for k in keys)
    ok = {k for k, ops in by_key.items() if ops[1].type == "ok"}
    failed = {k for k, ops in by_key.items() if ops[1].type == "fail"}
    assert len(ok) == len(keys), collections.Counter(ops[1].type for ops in by_key.values())
    assert all(by_key[k][1].value.get("status") in (200, 201) and by_key[k][1].value.get("region") == "primary"
               for k in ok)
    present = final_read(find_primary_dsn(lab), run_id)
    assert ok <= present, f"{len(ok - present)} acknowledged writes missing"
    assert not (failed & present), "writes classified as failed are present"
    assert present <= keys, f"unexpected keys: {sorted(present - keys)[:5]}"
    assert wl.final_read() == present
    probes = tl.of_kind("probe")
    for service in SERVICES:
        mine = [e.data for e in probes if e.event == service]
        assert mine, f"no probe of {service}"
        assert all(d["ok"] for d in mine), f"{service} failed: {[d for d in mine if not d['ok']][:3]}"
        assert set(mine[0]) == {"service", "ok", "latency_s", "status", "region", "error"}
        assert all(d["region"] == "primary" and d["latency_s"] > 0 for d in mine)
        # one probe of a service at a time, every 0.1 s at most (no burst to catch up); a loaded machine
        # slows the probes down, so the lower bound only says they keep coming
        scheduled = ran_s / wl.probes.interval_s
        assert len(mine) <= scheduled + 2, f"{service}: {len(mine)} probes in {ran_s:.1f} s, at most {scheduled:.0f}"
        assert len(mine) >= max(3, 0.25 * scheduled / MULTIPLIER), (
            f"{service}: only {len(mine)} probes in {ran_s:.1f} s ({scheduled:.0f} scheduled)")


def test_paced_writers_hold_the_rate(lab):
    tl = Timeline()
    target = 100
    wl = Workload.from_topology(lab, tl, run_id=_run_id(), writers=4, rate_per_s=target, with_probes=False)
    with wl:
        time.sleep(3.0)
    n = sum(1 for op in tl.ops if op.type == "invoke")
    elapsed = wl.writers.elapsed_s  # from the first slot to the last completion
    rate = n / elapsed
    print(f"\n[figure] paced_write_rate = {rate:.1f}/s ({n} writes in {elapsed:.2f} s, target {target}/s)")
    # paced: never above the target (plus one slot per writer), and not far below it (50 %: a loaded machine)
    assert n <= target * elapsed * 1.10 + 4, f"{n} writes in {elapsed:.2f} s at {target}/s: pacing exceeded"
    assert rate >= target * 0.5 / MULTIPLIER, f"{n} writes in {elapsed:.2f} s: {rate:.0f}/s, target {target}/s"


def test_cut_primary_database_link_fails_writes_and_probes(lab):
    toxiproxy = lab["toxiproxy"]["url"]
    router = lab["router"]["url"]
    tl = Timeline()
    run_id = _run_id()
    wl = Workload.from_topology(lab, tl, run_id=run_id, writers=4, write_timeout_s=2.0)
    cut_at = restored_at = None
    wl.start()
    try:
        time.sleep(1.0)
        r = httpx.post(f"{toxiproxy}/proxies/primary_app_postgres", json={"enabled": False}, timeout=5.0)
        assert r.status_code == 200, r.text
        cut_at = time.time()
        time.sleep(4.0)
    finally:
        httpx.post(f"{toxiproxy}/proxies/primary_app_postgres", json={"enabled": True}, timeout=5.0)
        restored_at = time.time()
    try:
        _wait_ok(router)
        time.sleep(1.0)
    finally:
        wl.stop()
    by_key = _history(tl)
    _assert_pairs(by_key)
    # invoked well inside the cut (the app's pool notices within its DB timeout): never acknowledged
    inside = {k: ops[1] for k, ops in by_key.items() if cut_at + 0.5 < ops[0].t < restored_at}
    assert inside, "no write was attempted during the cut"
    outcomes = collections.Counter(op.type for op in inside.values())
    assert outcomes["ok"] == 0, outcomes
    assert outcomes["fail"] + outcomes["indeterminate"] == len(inside)
    # before the cut, writes succeeded; after recovery they succeed again
    assert any(ops[1].type == "ok" and ops[0].t < cut_at for ops in by_key.values())
    assert any(ops[1].type == "ok" and ops[0].t > restored_at for ops in by_key.values()), "no write after recovery"
    # Jepsen set semantics hold: acknowledged present, failed absent
    present = final_read(find_primary_dsn(lab), run_id)
    ok = {k for k, ops in by_key.items() if ops[1].type == "ok"}
    failed = {k for k, ops in by_key.items() if ops[1].type == "fail"}
    assert ok <= present
    assert not (failed & present), f"failed but present: {sorted(failed & present)[:5]}"
    # every service's probe failed during the cut
    probes = [e for e in tl.of_kind("probe") if cut_at + 1.0 < e.t < restored_at]
    for service in SERVICES:
        mine = [e.data for e in probes if e.event == service]
        assert mine and any(not d["ok"] for d in mine), f"{service} never failed during the cut: {mine[:3]}"
        failed_probe = next(d for d in mine if not d["ok"])
        assert failed_probe["error"], failed_probe
