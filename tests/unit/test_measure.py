"""Unit tests of the pure measurements over hand-made histories."""

import pytest

from harness.config import load_plan
from harness.core.measure import (KEY_LIST_CAP, NOT_MEASURED, RpoResult, RtoResult, latency_stats, objective_results,
                                  percentile, rpo, rto, unexpired, unrevoked, write_counts)
from harness.core.timeline import Event, Timeline

T0 = 1_700_000_000.0


def history(*rows):
    """rows: (t_offset, process, type, key) -> ops."""
    tl = Timeline(clock=lambda: T0)
    for dt, proc, typ, key in rows:
        tl.record_op(proc, typ, key, t=T0 + dt)
    return tl.ops


def acked(*pairs, process="w1"):
    """(t_offset, key) pairs -> invoke+ok ops, invoke 0.01 s before the ack."""
    rows = []
    for dt, key in pairs:
        rows += [(dt - 0.01, process, "invoke", key), (dt, process, "ok", key)]
    return rows


# --- write counts ------------------------------------------------------------------------------
def test_write_counts_set_semantics():
    ops = history(
        *acked((1, "k1"), (2, "k2"), (3, "k3")),
        (4, "w2", "invoke", "k4"), (5, "w2", "indeterminate", "k4"),   # indeterminate, present -> recovered
        (4, "w2", "invoke", "k5"), (5, "w2", "indeterminate", "k5"),   # indeterminate, absent
        (6, "w1", "invoke", "k6"), (6.1, "w1", "fail", "k6"),          # failed, absent: fine
        (7, "w1", "invoke", "k7"),                                     # never completed: indeterminate
        (8, "w1", "invoke", "k8"), (8.1, "w1", "fail", "k8"),          # failed but present: violation
    )
    wc = write_counts(ops, {"k1", "k3", "k4", "k8", "stray"})
    assert (wc.attempted, wc.acknowledged, wc.lost, wc.recovered, wc.unexpected, wc.indeterminate, wc.failed) == (
        8, 3, 1, 1, 1, 3, 2)
    assert wc.lost_keys == ("k2",) and wc.unexpected_keys == ("stray",)
    assert wc.failed_but_present == 1 and wc.failed_present_keys == ("k8",)
    assert not wc.ok
    d = wc.to_dict()
    assert d["lost"] == 1 and d["lost_keys"] == ["k2"]


def test_write_counts_no_writes():
    wc = write_counts([], set())
    assert wc.to_dict()["attempted"] == 0 and wc.ok


def test_lost_keys_capped_count_complete():
    ops = history(*acked(*[(i + 1, f"k{i:03d}") for i in range(50)]))
    wc = write_counts(ops, set())
    assert wc.lost == 50 and len(wc.lost_keys) == KEY_LIST_CAP


def test_retried_write_ok_wins_and_indeterminate_beats_fail():
    ops = history((1, "w", "invoke", "a"), (2, "w", "indeterminate", "a"), (3, "w", "invoke", "a"), (4, "w", "ok", "a"),
                  (1, "w", "invoke", "b"), (2, "w", "indeterminate", "b"), (3, "w", "invoke", "b"), (4, "w", "fail", "b"))
    wc = write_counts(ops, {"a", "b"})
    assert (wc.attempted, wc.acknowledged, wc.indeterminate, wc.failed, wc.recovered) == (2, 1, 1, 0, 1)


def test_only_other_functions_ignored():
    tl = Timeline(clock=lambda: T0)
    tl.record_op("w", "invoke", "r1", f="read", t=T0)
    tl.record_op("w", "ok", "r1", f="read", t=T0 + 1)
    assert write_counts(tl.ops, set()).attempted == 0


# --- RPO ----------------------------------------------------------------------------------------
def test_rpo_nothing_lost_is_zero():
    ops = history(*acked((1, "a"), (2, "b"), (3, "c")))
    r = rpo(ops, {"a", "b", "c"}, fault_t=T0 + 5)
    assert r.rpo_s == 0 and r.lost == 0
    assert r.last_ack_before_fault_t == T0 + 3 and r.last_surviving_ack_t == T0 + 3


def test_rpo_usual_case_last_ack_before_fault_minus_last_surviving():
    ops = history(*acked((1, "a"), (2, "b"), (3, "c"), (4.5, "d"), (6, "after")))
    r = rpo(ops, {"a", "b", "after"}, fault_t=T0 + 5)
    assert r.lost == 2 and r.lost_before_fault == 2 and r.lost_after_fault == 0
    assert r.last_ack_before_fault_t == T0 + 4.5
    assert r.last_surviving_ack_t == T0 + 2
    assert r.rpo_s == pytest.approx(2.5)
    assert not r.lower_bound


def test_rpo_no_writes_at_all():
    r = rpo([], set(), fault_t=T0)
    assert (r.rpo_s, r.lost, r.last_ack_before_fault_t, r.last_surviving_ack_t) == (0, 0, None, None)
    assert "no writes" in r.note


def test_rpo_everything_lost_is_a_lower_bound_from_first_ack():
    ops = history(*acked((1, "a"), (2, "b"), (4, "c")))
    r = rpo(ops, set(), fault_t=T0 + 5)
    assert r.lost == 3 and r.last_surviving_ack_t is None and r.lower_bound
    assert r.rpo_s == pytest.approx(3.0)
    assert "lower bound" in r.note


def test_rpo_only_indeterminate():
    ops = history((1, "w", "invoke", "a"), (2, "w", "indeterminate", "a"), (1, "w", "invoke", "b"))
    r = rpo(ops, {"a"}, fault_t=T0 + 1.5)
    assert r.rpo_s == 0 and r.lost == 0
    assert "2 indeterminate (1 present" in r.note


def test_rpo_several_writers_merge_into_one_history():
    ops = history(*acked((1, "a1"), (3, "a2"), (5, "a3"), process="w1"),
                  *acked((2, "b1"), (4, "b2"), (5.5, "b3"), process="w2"),
                  *acked((1.5, "c1"), (4.8, "c2"), process="w3"))
    # replication stopped after t=3 (a2): everything acknowledged after it is lost
    r = rpo(ops, {"a1", "a2", "b1", "c1"}, fault_t=T0 + 6)
    assert r.lost == 4
    assert r.last_surviving_ack_t == T0 + 3 and r.last_ack_before_fault_t == T0 + 5.5
    assert r.rpo_s == pytest.approx(2.5)


def test_rpo_fault_before_any_write():
    ops = history(*acked((1, "a"), (2, "b")))
    r = rpo(ops, {"a", "b"}, fault_t=T0)
    assert r.rpo_s == 0 and r.last_ack_before_fault_t is None and "before the fault" in r.note
    # writes taken by a doomed primary after the fault and lost: window from first ack, lower bound
    r = rpo(ops, set(), fault_t=T0)
    assert r.lost == 2 and r.lost_after_fault == 2 and r.lower_bound and r.rpo_s == pytest.approx(1.0)


def test_rpo_lost_after_fault_extend_the_window():
    # calibration shape: replication cut at t=2 (fault), K acked writes after it, primary killed
    ops = history(*acked((1, "a"), (1.5, "b"), (3, "k1"), (4, "k2"), (5, "k3")))
    r = rpo(ops, {"a", "b"}, fault_t=T0 + 2)
    assert r.lost == 3 and r.lost_after_fault == 3
    assert r.last_surviving_ack_t == T0 + 1.5 and r.rpo_s == pytest.approx(3.5)
    assert not r.lower_bound


def test_rpo_to_dict_iso():
    r = rpo(history(*acked((1, "a"))), set(), fault_t=T0 + 2).to_dict()
    assert r["last_ack_before_fault_t"].endswith("+00:00") and r["lost"] == 1


# --- RTO ----------------------------------------------------------------------------------------
def probe(dt, service, ok, latency=0.01):
    return Event(T0 + dt, "probe", "http", {"service": service, "ok": ok, "latency_s": latency})


def test_rto_first_of_n_consecutive_successes_with_phases():
    evs = [probe(-1, "authentication", True), probe(0.5, "authentication", False), probe(1, "authentication", False),
           probe(2, "authentication", True), probe(3, "authentication", False),
           probe(4, "authentication", True), probe(5, "authentication", True), probe(6, "authentication", True),
           Event(T0 + 0.8, "failover", "detected", {}), Event(T0 + 1.5, "failover", "promoted", {}),
           Event(T0 + 3.5, "failover", "traffic_switched", {}),
           Event(T0 + 3.6, "failover", "scaled", {"service": "voucher-service"}),
           probe(1, "voucher-service", True)]
    r = rto(evs, fault_t=T0, service="authentication", consecutive=3)
    assert r.rto_s == pytest.approx(4.0) and r.first_success_t == T0 + 4
    assert [p.name for p in r.phases] == ["outage_observed", "detected", "promoted", "traffic_switched", "first_success"]
    assert r.phases[2].offset_s == pytest.approx(1.5)
    assert r.failures == 3 and r.probes == 7
    assert rto(evs, T0, "authentication", consecutive=1).rto_s == pytest.approx(2.0)


def test_rto_never_recovered():
    evs = [probe(i, "tax-invoice-service", i % 2 == 0) for i in range(1, 10)]
    r = rto(evs, fault_t=T0, service="tax-invoice-service", consecutive=2)
    assert r.rto_s is None and r.first_success_t is None and not r.recovered
    assert r.to_dict()["rto_s"] is None


def test_rto_ignores_successes_before_the_outage():
    # the dying primary answers the first probes after the fault; then the outage; then the DR region
    svc = "voucher-service"
    evs = ([probe(0.1 * i, svc, True) for i in range(1, 6)]            # t 0.1..0.5: early successes
           + [probe(0.6 + 0.1 * i, svc, False) for i in range(20)]     # t 0.6..2.5: outage
           + [probe(2.6 + 0.1 * i, svc, True) for i in range(10)])     # t 2.6..3.5: recovered
    r = rto(evs, fault_t=T0, service=svc, consecutive=3)
    assert r.rto_s == pytest.approx(2.6) and r.first_success_t == pytest.approx(T0 + 2.6)
    assert r.outage_observed and r.first_failure_t == pytest.approx(T0 + 0.6) and not r.note
    assert [p.name for p in r.phases] == ["outage_observed", "first_success"]
    assert r.to_dict()["outage_observed"] is True


def test_rto_early_streak_does_not_count_even_when_long_enough():
    evs = [probe(0.1, "authentication", True), probe(0.2, "authentication", True), probe(0.3, "authentication", True),
           probe(0.4, "authentication", True), probe(1, "authentication", False),
           probe(2, "authentication", True), probe(3, "authentication", True), probe(4, "authentication", True)]
    assert rto(evs, T0, "authentication", consecutive=3).rto_s == pytest.approx(2.0)


def test_rto_no_failure_after_the_fault_is_zero_without_outage():
    evs = [probe(-1, "api-gateway", False)] + [probe(i * 0.5, "api-gateway", True) for i in range(10)]
    r = rto(evs, fault_t=T0, service="api-gateway", consecutive=3)
    assert r.rto_s == 0.0 and r.recovered and not r.outage_observed
    assert r.failures == 0 and r.probes == 10 and r.first_failure_t is None
    assert "never went down" in r.note
    assert r.to_dict()["outage_observed"] is False and r.to_dict()["rto_s"] == 0.0


def test_rto_never_recovers_after_the_outage():
    evs = ([probe(0.1 * i, "tax-invoice-service", True) for i in range(1, 5)]
           + [probe(1 + i, "tax-invoice-service", False) for i in range(10)]
           + [probe(11, "tax-invoice-service", True), probe(12, "tax-invoice-service", True)])
    r = rto(evs, fault_t=T0, service="tax-invoice-service", consecutive=3)
    assert r.rto_s is None and not r.recovered and r.outage_observed and r.failures == 10


def test_rto_not_probed_after_the_fault():
    r = rto([probe(-1, "authentication", True)], fault_t=T0, service="authentication")
    assert r.rto_s is None and r.probes == 0 and "not measured" in r.note


def test_rto_bad_consecutive():
    with pytest.raises(ValueError):
        rto([], T0, "x", consecutive=0)


# --- objectives ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plan():
    return load_plan()


def _rto(service, s, n=3):
    return RtoResult(service, s, None if s is None else T0 + s, consecutive=n, probes=10, failures=2,
                     last_probe_t=T0 + 30, fault_t=T0)


def test_objectives_met_and_report_shape(plan):
    r = rpo(history(*acked((1, "a"), (2, "b"))), {"a", "b"}, T0 + 3)
    res = objective_results(plan, [_rto("voucher-service", 2.4), _rto("authentication", 1.0)], r)
    assert [o.service for o in res] == ["authentication", "voucher-service"]  # recovery order
    o = res[0].to_dict()
    assert {k: o[k] for k in ("service", "priority", "rto_target_s", "rto_measured_s", "rpo_target_s", "rpo_measured_s", "met")} == {
        "service": "authentication", "priority": "P1", "rto_target_s": 3600, "rto_measured_s": 1.0,
        "rpo_target_s": 900, "rpo_measured_s": 0.0, "met": True}


def test_never_recovered_misses(plan):
    res = objective_results(plan, [_rto("tax-invoice-service", None)], None)
    assert not res[0].met and not res[0].rto_met and "never recovered" in res[0].reason
    assert res[0].rpo_measured_s is None


def test_impossible_override_misses(plan):
    p = load_plan(overrides={"services": {"authentication": {"rto_s": 0.001}}})
    res = objective_results(p, [_rto("authentication", 1.0)], None)
    assert not res[0].met and "exceeds target" in res[0].reason


def test_rpo_zero_target_and_lost(plan):
    r = RpoResult(rpo_s=0.0, lost=1, last_ack_before_fault_t=T0, last_surviving_ack_t=T0)
    res = {o.service: o for o in objective_results(plan, [_rto("api-gateway", 1), _rto("authentication", 1)], r)}
    assert not res["api-gateway"].met and res["authentication"].met


def test_rpo_lower_bound_misses_and_mapping(plan):
    lb = RpoResult(rpo_s=1.0, lost=2, last_ack_before_fault_t=T0, last_surviving_ack_t=None, lower_bound=True)
    res = objective_results(plan, [_rto("authentication", 1), _rto("voucher-service", 1)], {"voucher-service": lb})
    by = {o.service: o for o in res}
    assert by["authentication"].met and by["authentication"].rpo_measured_s is None
    assert not by["voucher-service"].met and by["voucher-service"].lost == 2


def test_rpo_over_target(plan):
    r = RpoResult(rpo_s=2000.0, lost=5, last_ack_before_fault_t=T0, last_surviving_ack_t=T0 - 2000)
    res = objective_results(plan, [_rto("authentication", 1)], r)
    assert not res[0].rpo_met and "RPO" in res[0].reason and res[0].lost == 5


def test_tier_tightens_targets(plan):
    res = objective_results(plan, [_rto("voucher-service", 4000)], None, tier="platinum")
    assert res[0].rto_target_s == 3600 and not res[0].met


def test_unknown_service_rejected(plan):
    with pytest.raises(Exception, match="billing"):
        objective_results(plan, [_rto("billing", 1)], None)


# --- latency ------------------------------------------------------------------------------------
def test_latency_stats():
    evs = [probe(i, "authentication", i != 3, latency=(i + 1) / 100) for i in range(20)] + [probe(1, "api-gateway", False, None)]
    stats = latency_stats(evs)
    a = stats["authentication"]
    assert (a.count, a.errors) == (20, 1)
    assert a.p50_s == pytest.approx(0.10) and a.p95_s == pytest.approx(0.19) and a.max_s == pytest.approx(0.20)
    g = stats["api-gateway"]
    assert g.count == 1 and g.errors == 1 and g.p50_s is None
    assert percentile([], 50) is None


# --- objectives for the whole catalog -----------------------------------------------------------
def test_catalog_services_never_probed_appear_as_not_measured(plan):
    catalog = [svc.name for svc in plan.services]
    res = objective_results(plan, [_rto("authentication", 1.0)], None, catalog=catalog,
                            rpo_basis={"api-gateway": "stateless"})
    assert sorted(o.service for o in res) == sorted(catalog) and len(res) == 4
    by = {o.service: o for o in res}
    assert by["authentication"].met and by["authentication"].measured
    for name in ("api-gateway", "voucher-service", "tax-invoice-service"):
        o = by[name]
        assert not o.met and not o.measured and o.reason == NOT_MEASURED
        assert o.rto_measured_s is None and o.rpo_measured_s is None
        assert o.to_dict()["met"] is False and o.to_dict()["reason"] == "not measured in this run"
    assert by["api-gateway"].rpo_basis == "stateless" and by["voucher-service"].rpo_basis == "not_measured"
    # without a catalog only measured services appear (the old behaviour)
    assert [o.service for o in objective_results(plan, [_rto("authentication", 1.0)], None)] == ["authentication"]
    with pytest.raises(Exception, match="billing"):
        objective_results(plan, [], None, catalog=["billing"])


def test_probed_but_no_probe_after_the_fault_is_not_measured(plan):
    r = rto([probe(-1, "voucher-service", True)], T0, "voucher-service")
    (o,) = objective_results(plan, [r], None)
    assert not o.met and not o.measured and o.reason.startswith(NOT_MEASURED)


def test_rpo_basis_per_service_and_stateless(plan):
    lost_one = RpoResult(rpo_s=0.4, lost=1, last_ack_before_fault_t=T0, last_surviving_ack_t=T0 - 0.4)
    none_lost = RpoResult(rpo_s=0.0, lost=0, last_ack_before_fault_t=T0, last_surviving_ack_t=T0)
    res = objective_results(
        plan, [_rto(s, 2.0) for s in ("authentication", "api-gateway", "voucher-service", "tax-invoice-service")],
        {"voucher-service": lost_one, "tax-invoice-service": lost_one, "authentication": none_lost},
        rpo_basis={"voucher-service": "vouchers", "tax-invoice-service": "tax_invoices",
                   "authentication": "sessions", "api-gateway": "stateless"})
    by = {o.service: o.to_dict() for o in res}
    assert by["api-gateway"]["rpo_measured_s"] is None and by["api-gateway"]["rpo_basis"] == "stateless"
    assert by["api-gateway"]["met"]
    # api-gateway has the zero RPO target, but it keeps no data: its RPO is not borrowed from anyone;
    # vouchers and tax invoices allow 60 min, so 0.4 s of loss (1 record each) meets them
    assert by["voucher-service"]["met"] and by["voucher-service"]["lost"] == 1
    assert by["voucher-service"]["rpo_basis"] == "vouchers"
    assert by["tax-invoice-service"]["met"] and by["tax-invoice-service"]["rpo_measured_s"] == 0.4
    assert by["authentication"]["rpo_basis"] == "sessions" and by["authentication"]["outage_observed"] is True


def test_service_that_never_went_down_meets_rto_with_a_note(plan):
    r = rto([probe(i, "api-gateway", True) for i in range(5)], T0, "api-gateway")
    (o,) = objective_results(plan, [r], None, rpo_basis={"api-gateway": "stateless"})
    assert o.met and o.rto_measured_s == 0.0 and o.outage_observed is False and "never went down" in o.note


def test_unexpired_drops_records_that_expired_before_the_final_read():
    tl = Timeline(clock=lambda: T0)
    tl.record_op("p", "ok", "s-old", f="session", value={"expires_in": 10}, t=T0)
    tl.record_op("p", "ok", "s-new", f="session", value={"expires_in": 3600}, t=T0 + 5)
    tl.record_op("w", "ok", "v1", t=T0)
    kept, expired = unexpired(tl.ops, T0 + 20, "session")
    assert expired == ["s-old"] and sorted(o.key for o in kept) == ["s-new", "v1"]
    assert unexpired(tl.ops, T0 + 5, "session")[1] == []


def test_unrevoked_drops_sessions_issued_under_a_revoked_key_only():
    tl = Timeline(clock=lambda: T0)
    tl.record_op("p", "ok", "s-leaked", f="session", value={"expires_in": 3600, "kid": "k1"}, t=T0)
    tl.record_op("p", "ok", "s-new", f="session", value={"expires_in": 3600, "kid": "k2"}, t=T0 + 1)
    tl.record_op("p", "ok", "s-nokid", f="session", value={"expires_in": 3600}, t=T0 + 2)
    tl.record_op("w", "ok", "v1", value={"kid": "k1"}, t=T0)  # another data set is never touched
    kept, revoked = unrevoked(tl.ops, {"k1"}, "session")
    assert revoked == ["s-leaked"] and sorted(o.key for o in kept) == ["s-new", "s-nokid", "v1"]
    assert unrevoked(tl.ops, set(), "session")[1] == []
