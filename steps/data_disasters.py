"""Steps of the data disaster drills (corruption, ransomware, natural disaster): the plan's checklist phrased as
Given/When/Then over the real lab; the recoveries go through the backups into new servers."""

from __future__ import annotations

import time

import psycopg
import pytest
from pytest_bdd import given, parsers, then, when

from harness.backup import repair
from harness.drill import data_recovery

from .timing import poll


@pytest.fixture
def data_drill() -> dict:
    """What one data-disaster scenario carries between its steps (results and fingerprints)."""
    return {}


def _live(drill_lab) -> str:
    return data_recovery.live_primary_dsn({"drill_state_dir": str(drill_lab.state)})


@given("a base backup of the live primary is in the backup bucket")
def base_backup(drill, drill_configuration, data_drill):
    data_drill["base"] = data_recovery.take_base_backup(configuration=drill_configuration)
    assert data_drill["base"]["key"].startswith("postgresql/base/")


@given("a base backup of the live primary is copied to the DR region")
def base_backup_copied(drill, drill_configuration, data_drill):
    data_drill["base"] = res = data_recovery.take_base_backup(copy_to_dr=True, configuration=drill_configuration)
    assert res["dr_copy"]["verified"] and res["dr_copy"]["bucket"] == "kerp-backups-dr", res


@given(parsers.parse("the workload has run for {seconds:d} seconds"))
def workload_ran(drill, seconds: int):
    started = next(e.t for e in drill.timeline.of_kind("note") if e.event == "workload started")
    time.sleep(max(0.0, started + seconds - time.time()))


# -- corruption ------------------------------------------------------------------------------------
@when(parsers.parse("the lines of {vouchers:d} vouchers are changed outside the application"))
def corrupt(drill, drill_configuration, data_drill, vouchers: int):
    data_drill["fault"] = res = data_recovery.inject_corruption(vouchers=vouchers, configuration=drill_configuration)
    assert res["changed"] == vouchers, res


@then(parsers.parse("the data integrity checks name every unbalanced voucher after {seconds:d} seconds"))
def integrity_names_vouchers(drill, drill_configuration, data_drill, seconds: int):
    res = data_recovery.detect_integrity_violation(timeout_s=seconds, configuration=drill_configuration)
    assert res["detected"], res["details"]
    touched = {str(v) for v in data_drill["fault"]["voucher_ids"]}
    assert touched <= set(res["offending"]), f"named {res['offending']}, corrupted {sorted(touched)}"


@when("the damaged rows are re-copied from a server recovered to just before the corruption")
def repaired(drill, drill_configuration, data_drill):
    data_drill["repair"] = res = data_recovery.repair_corruption(configuration=drill_configuration)
    assert res["rows_repaired"] == len(data_drill["fault"]["line_ids"]), res
    assert res["integrity_after"]["status"] == "pass", res["integrity_after"]


# -- ransomware ------------------------------------------------------------------------------------
@given("the rows of every company are fingerprinted")
def fingerprint_all(drill_lab, data_drill):
    with psycopg.connect(_live(drill_lab), autocommit=True, connect_timeout=15) as c:
        upto = repair.max_ids(c)
        ids = [r[0] for r in c.execute("SELECT id FROM companies ORDER BY id")]
        data_drill["upto"] = upto
        data_drill["before"] = {cid: repair.tenant_fingerprint(c, cid, upto=upto) for cid in ids}


@when(parsers.parse("ransomware encrypts the rows of company {company_id:d}"))
def ransomware(drill, drill_configuration, data_drill, company_id: int):
    data_recovery.fingerprint_tenant(company_id, configuration=drill_configuration)
    data_drill["fault"] = res = data_recovery.attack_tenant(company_id, configuration=drill_configuration)
    assert res["deleted"]["voucher_lines"] > 0 and res["encrypted"]["companies"] == 1, res


@then(parsers.parse("the data integrity checks detect the damage after {seconds:d} seconds"))
def integrity_detects(drill, drill_configuration, seconds: int):
    res = data_recovery.detect_integrity_violation(fault="encrypt_tenant", timeout_s=seconds,
                                                   configuration=drill_configuration)
    assert res["detected"], res["details"]


@when(parsers.parse("company {company_id:d} is restored from a server recovered to just before the attack"))
def tenant_restored(drill, drill_configuration, data_drill, company_id: int):
    data_drill["restore"] = res = data_recovery.recover_tenant(configuration=drill_configuration)
    assert res["company_id"] == company_id and res["verified_against_pre_attack"], res
    assert res["live_matches_copy"], res["differences"]


@then(parsers.parse("the rows of company {company_id:d} match their fingerprint from before the attack"))
def tenant_matches(drill_lab, data_drill, company_id: int):
    with psycopg.connect(_live(drill_lab), autocommit=True, connect_timeout=15) as c:
        now = repair.tenant_fingerprint(c, company_id, upto=data_drill["upto"])
    diff = data_drill["before"][company_id].differences(now)
    assert not diff, diff


@then("the rows of the other companies are unchanged")
def others_unchanged(drill_lab, data_drill):
    attacked = data_drill["fault"]["company_id"]
    with psycopg.connect(_live(drill_lab), autocommit=True, connect_timeout=15) as c:
        diffs = {cid: fp.differences(repair.tenant_fingerprint(c, cid, upto=data_drill["upto"]))
                 for cid, fp in data_drill["before"].items() if cid != attacked}
    assert diffs and not any(diffs.values()), diffs


# -- natural disaster -----------------------------------------------------------------------------
@when("the primary region's backup bucket becomes unavailable")
def bucket_lost(drill, drill_configuration):
    from harness.targets.s3.actions import block_bucket

    assert block_bucket(bucket="kerp-backups", region="primary", configuration=drill_configuration)["blocked"]


@when("the primary region's backup bucket is available again")
def bucket_back(drill, drill_configuration):
    from harness.targets.s3.actions import bucket_blocked, unblock_bucket

    unblock_bucket(bucket="kerp-backups", configuration=drill_configuration)
    poll(lambda: not bucket_blocked("kerp-backups", configuration=drill_configuration), 10, "bucket available")


@when("the database is restored from the DR-region copies into a new server")
def restored_from_dr(drill, drill_configuration, data_drill):
    data_drill["dr_restore"] = data_recovery.restore_from_dr_copies(configuration=drill_configuration)


@then("the restored database passes the integrity checks within the plan's RPO")
def dr_restore_ok(drill, data_drill):
    from harness.drill.finalize import LEDGER_SERVICES

    res = data_drill["dr_restore"]
    assert not res["primary_bucket_reachable"], "the primary region's bucket still answered"
    failed = [f"{c['check']}: {c['details']}" for c in res["integrity"] if c["status"] == "fail"]
    assert not failed, failed
    assert res["present"] > 0 and res["wal_segments"] > 0, res
    tightest = min(drill.plan.service(s).rpo_s for s in LEDGER_SERVICES)
    assert res["rpo_s"] <= tightest, f"RPO of the DR-copy restore {res['rpo_s']} s exceeds {tightest:.0f} s"
