"""Integrity checks against a real PostgreSQL: clean seed data passes, each planted fault is named by its check."""

from __future__ import annotations

import itertools
import json

import psycopg
import pytest

from harness.checks import plant
from harness.checks.integrity import CHECK_NAMES, SNAPSHOT_TABLES, CheckResult, Snapshot, run_all, take_snapshot
from harness.lab.kerp import seed as kerp_seed

pytestmark = pytest.mark.integration

SQL_CHECKS = tuple(n for n in CHECK_NAMES if n != "pg_amcheck")
_counter = itertools.count()


@pytest.fixture(scope="module")
def seeded_template(scratch_pg):
    """A seeded database used as the template of every test's fresh copy."""
    name = "integrity_tpl"
    with psycopg.connect(scratch_pg.admin_dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    with psycopg.connect(scratch_pg.admin_dsn(name)) as conn:
        kerp_seed.apply_schema(conn)
        kerp_seed.seed(conn, 2)
    return name


@pytest.fixture
def db(scratch_pg, seeded_template):
    """A fresh copy of the seeded database (autocommit connection)."""
    name = f"integrity_{next(_counter)}"
    with psycopg.connect(scratch_pg.admin_dsn(), autocommit=True) as admin:
        assert plant.scratch_copy(admin, seeded_template, name) == "template"
    with psycopg.connect(scratch_pg.admin_dsn(name), autocommit=True) as conn:
        yield conn
    with psycopg.connect(scratch_pg.admin_dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def failing(results: list[CheckResult]) -> list[str]:
    return [r.check for r in results if r.status != "pass"]


def test_clean_seed_passes_every_check(db):
    snap = take_snapshot(db, SNAPSHOT_TABLES)
    results = run_all(db, snapshot=snap, only=SQL_CHECKS)
    assert [r.check for r in results] == list(SQL_CHECKS)
    assert failing(results) == [], [r.to_dict() for r in results]
    for r in results:
        d = r.to_dict()
        assert set(d) >= {"check", "status", "details"} and d["status"] == "pass" and r.seconds >= 0
    json.dumps([r.to_dict() for r in results])
    json.dumps(snap.to_dict())
    assert Snapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap


def test_no_runtime_and_no_snapshot_are_warnings(db):
    res = by_name(run_all(db))
    assert res["pg_amcheck"].status == "warning" and "not available" in res["pg_amcheck"].details
    assert res["snapshot_unchanged"].status == "warning"
    assert [n for n, r in res.items() if r.status == "fail"] == []


def test_unbalanced_voucher_is_named(db):
    vid = plant.plant_unbalanced_voucher(db)
    results = run_all(db, only=SQL_CHECKS, snapshot=take_snapshot(db))
    assert failing(results) == ["vouchers_balanced"]
    r = by_name(results)["vouchers_balanced"]
    assert r.offending == (str(vid),) and r.count == 1 and str(vid) in r.details


def test_orphan_account_is_named(db):
    snap = take_snapshot(db, ("companies", "users"))
    aid = plant.plant_orphan_account(db)
    results = run_all(db, only=SQL_CHECKS, snapshot=snap)
    assert failing(results) == ["account_hierarchy_no_orphans"]
    r = by_name(results)["account_hierarchy_no_orphans"]
    assert r.offending == (str(aid),) and "missing" in r.details


def test_account_parent_of_another_company_is_named(db):
    child, parent = db.execute("""SELECT a.id, b.id FROM accounts a JOIN accounts b ON b.company_id <> a.company_id
                                  WHERE a.parent_id IS NOT NULL ORDER BY a.id, b.id LIMIT 1""").fetchone()
    db.execute("UPDATE accounts SET parent_id = %s WHERE id = %s", (parent, child))
    r = by_name(run_all(db, only=["account_hierarchy_no_orphans"]))["account_hierarchy_no_orphans"]
    assert r.status == "fail" and r.offending == (str(child),)


def test_voucher_line_without_voucher_is_named(db):
    (lid,) = plant.plant_orphan_voucher_line(db)
    results = run_all(db, only=SQL_CHECKS, snapshot=take_snapshot(db))
    assert failing(results) == ["foreign_keys_valid"]
    r = by_name(results)["foreign_keys_valid"]
    assert r.offending == (f"voucher_lines:{lid}",) and r.count == 1


def test_deleted_voucher_leaves_named_orphan_lines(db):
    lids = plant.plant_orphan_voucher_line(db, delete_voucher=True)
    assert len(lids) >= 2
    results = run_all(db, only=SQL_CHECKS, snapshot=take_snapshot(db))
    assert failing(results) == ["foreign_keys_valid"]
    r = by_name(results)["foreign_keys_valid"]
    assert {f"voucher_lines:{i}" for i in lids} <= set(r.offending)


def test_audit_gap_is_reported_as_range(db):
    seqs = plant.plant_audit_gap(db, size=3)
    results = run_all(db, only=SQL_CHECKS, snapshot=take_snapshot(db))
    assert failing(results) == ["audit_sequence_gap_free"]
    r = by_name(results)["audit_sequence_gap_free"]
    assert r.offending == (f"{seqs[0]}..{seqs[-1]}",) and r.count == 3
    assert f"missing {seqs[0]}..{seqs[-1]}" in r.details


def test_audit_counter_ahead_is_reported(db):
    hi = db.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
    db.execute("UPDATE counters SET last_value = last_value + 2 WHERE name = 'audit_log'")
    r = by_name(run_all(db, only=["audit_sequence_gap_free"]))["audit_sequence_gap_free"]
    assert r.status == "fail" and r.offending == (f"{hi + 1}..{hi + 2}",)


def test_invoice_gap_is_named_by_company_and_number(db):
    company_id, no = plant.plant_invoice_gap(db)
    results = run_all(db, only=SQL_CHECKS, snapshot=take_snapshot(db))
    assert failing(results) == ["invoice_numbers_gap_free"]
    r = by_name(results)["invoice_numbers_gap_free"]
    assert r.offending == (f"{company_id}:{no}",) and f"company {company_id} missing {no}" in r.details


def test_snapshot_fails_naming_the_changed_table(db):
    snap = take_snapshot(db, SNAPSHOT_TABLES)
    db.execute("UPDATE companies SET name = name || ' (changed)' WHERE id = (SELECT min(id) FROM companies)")
    r = by_name(run_all(db, snapshot=snap, only=["snapshot_unchanged"]))["snapshot_unchanged"]
    assert r.status == "fail" and r.offending == ("companies",) and "companies" in r.details


def test_snapshot_ignores_session_rendering_settings(db):
    snap = take_snapshot(db, SNAPSHOT_TABLES)
    db.execute("SET TimeZone = 'Asia/Seoul'")
    db.execute("SET DateStyle = 'German'")
    assert by_name(run_all(db, snapshot=snap, only=["snapshot_unchanged"]))["snapshot_unchanged"].status == "pass"


def test_dropped_table_is_a_finding_not_an_exception(db):
    db.execute("DROP TABLE audit_log")
    results = run_all(db, only=SQL_CHECKS)
    r = by_name(results)["audit_sequence_gap_free"]
    assert r.status in ("fail", "warning") and "audit_log" in r.details
    assert by_name(results)["vouchers_balanced"].status == "pass"  # the others still ran


def test_dropped_ledger_table_is_a_finding(db):
    db.execute("DROP TABLE voucher_lines")
    results = run_all(db, only=SQL_CHECKS)
    assert {by_name(results)[n].status for n in ("vouchers_balanced", "foreign_keys_valid")} <= {"fail", "warning"}
    assert by_name(results)["audit_sequence_gap_free"].status == "pass"


def test_exact_path_agrees_when_voucher_ids_have_holes(db):
    # a hole in vouchers ids (sequence jump after a failover): the bitmap path must still pass
    db.execute("SELECT setval(pg_get_serial_sequence('vouchers', 'id'), (SELECT max(id) + 40 FROM vouchers))")
    cid, a1, a2 = db.execute("SELECT company_id, min(id), max(id) FROM accounts GROUP BY company_id"
                             " ORDER BY company_id LIMIT 1").fetchone()
    vid = db.execute("INSERT INTO vouchers (company_id, voucher_date) VALUES (%s, current_date) RETURNING id",
                     (cid,)).fetchone()[0]
    db.execute("INSERT INTO voucher_lines (voucher_id, line_no, account_id, debit, credit)"
               " VALUES (%s, 1, %s, 5, 0), (%s, 2, %s, 0, 5)", (vid, a1, vid, a2))
    assert failing(run_all(db, only=SQL_CHECKS, snapshot=take_snapshot(db))) == []
    lid = db.execute("INSERT INTO voucher_lines (voucher_id, line_no, account_id, debit, credit)"
                     " VALUES (%s, 3, %s, 1, 0) RETURNING id", (vid, a1)).fetchone()[0]
    r = by_name(run_all(db, only=["vouchers_balanced"]))["vouchers_balanced"]
    assert r.status == "fail" and r.offending == (str(vid),), lid


def test_inside_caller_transaction(scratch_pg, seeded_template):
    with psycopg.connect(scratch_pg.admin_dsn(seeded_template)) as conn:  # not autocommit
        conn.execute("SELECT 1")
        assert failing(run_all(conn, only=SQL_CHECKS, snapshot=take_snapshot(conn))) == []


def test_pg_amcheck_passes_on_clean_db(db, scratch_pg):
    r = by_name(run_all(db, rt=scratch_pg.rt, only=["pg_amcheck"]))["pg_amcheck"]
    assert r.status == "pass", r.details


def test_scratch_copy_of_a_busy_database_uses_dump(scratch_pg, seeded_template):
    with psycopg.connect(scratch_pg.admin_dsn(seeded_template)) as busy, \
            psycopg.connect(scratch_pg.admin_dsn(), autocommit=True) as admin:
        busy.execute("SELECT 1")
        with pytest.raises(plant.PlantError, match="other connections"):
            plant.scratch_copy(admin, seeded_template, "integrity_busy_fail")
        assert plant.scratch_copy(admin, seeded_template, "integrity_busy", rt=scratch_pg.rt) == "dump"
        with psycopg.connect(scratch_pg.admin_dsn("integrity_busy")) as copy:
            assert failing(run_all(copy, only=SQL_CHECKS)) == ["snapshot_unchanged"]  # warning: no snapshot
        admin.execute("DROP DATABASE integrity_busy WITH (FORCE)")


def test_single_line_voucher_is_named(db):
    # balanced (0 = 0) but with one line: the line-count screen (lines numbered 1 and 2) must catch it
    cid, aid = db.execute("SELECT company_id, min(id) FROM accounts GROUP BY company_id ORDER BY 1 LIMIT 1").fetchone()
    vid = db.execute("INSERT INTO vouchers (company_id, voucher_date) VALUES (%s, current_date) RETURNING id",
                     (cid,)).fetchone()[0]
    db.execute("INSERT INTO voucher_lines (voucher_id, line_no, account_id, debit, credit) VALUES (%s, 2, %s, 0, 0)",
               (vid, aid))
    r = by_name(run_all(db, only=["vouchers_balanced"]))["vouchers_balanced"]
    assert r.status == "fail" and r.offending == (str(vid),) and "1 lines" in r.details


def test_unique_indexes_are_looked_up_per_table(db):
    # without the unique index on (company_id, invoice_no) a duplicate number must still be found, while the
    # other tables' unique indexes (looked up in the same catalog query) keep their fast paths
    cid, no = db.execute("SELECT company_id, max(invoice_no) FROM tax_invoices GROUP BY company_id"
                         " ORDER BY 1 LIMIT 1").fetchone()
    con = db.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'tax_invoices'::regclass"
                     " AND contype = 'u'").fetchone()[0]
    db.execute(f'ALTER TABLE tax_invoices DROP CONSTRAINT "{con}"')
    db.execute("INSERT INTO tax_invoices (company_id, invoice_no, amount, popbill_ref)"
               " VALUES (%s, %s, 1, 'dup')", (cid, no))
    res = by_name(run_all(db, only=SQL_CHECKS, snapshot=take_snapshot(db)))
    assert failing(list(res.values())) == ["invoice_numbers_gap_free"]
    assert "1 duplicate numbers" in res["invoice_numbers_gap_free"].details
    assert res["vouchers_balanced"].details.endswith("with >= 2 lines each")  # screen, not the exact path
