"""The K-ERP seed: deterministic, balanced, gap-free counters (its speed is measured by bench/seed.py)."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from harness.lab.kerp import seed as kseed
from tests.timing import scaled

pytestmark = pytest.mark.integration


@pytest.fixture()
def fresh_db(scratch_pg):
    """A fresh, empty database per test (dropped afterwards)."""
    name = "seed_" + uuid.uuid4().hex[:10]
    with psycopg.connect(scratch_pg.admin_dsn(), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        with psycopg.connect(scratch_pg.admin_dsn(name)) as conn:
            kseed.apply_schema(conn)
            yield conn
    finally:
        with psycopg.connect(scratch_pg.admin_dsn(), autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_seed_scale_1_counts_match(fresh_db):
    t0 = time.perf_counter()
    counts = kseed.seed(fresh_db, scale=1)
    elapsed = time.perf_counter() - t0
    print(f"\n[figure] seed_scale_1_s = {elapsed:.3f} (target <= 1 s: bench/seed.py)")
    assert elapsed < scaled(30.0), f"seed at scale 1 took {elapsed:.2f}s (sanity bound; speed: bench/seed.py)"
    assert counts["companies"] == 3
    assert counts["vouchers"] == 200
    assert counts["accounts"] == 3 * len(kseed.ACCOUNT_TEMPLATE)
    db = {t: fresh_db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in counts}
    assert db == counts
    tiers = {r[0] for r in fresh_db.execute("SELECT tier FROM companies")}
    assert tiers == {"platinum", "gold", "silver"}
    bns = [r[0] for r in fresh_db.execute("SELECT business_no FROM companies")]
    assert all(len(b) == 10 and b.isdigit() for b in bns)


def test_seed_is_deterministic(scratch_pg, fresh_db):
    kseed.seed(fresh_db, scale=2)
    first = kseed.table_fingerprints(fresh_db)
    kseed.seed(fresh_db, scale=2, reset=True)
    second = kseed.table_fingerprints(fresh_db)
    assert first == second
    assert len(set(first.values())) == len(first)  # non-trivial content per table


def test_seed_refuses_a_seeded_database(fresh_db):
    kseed.seed(fresh_db)
    with pytest.raises(kseed.SeedError, match="already seeded"):
        kseed.seed(fresh_db)


def test_vouchers_balanced_and_counters_gap_free(fresh_db):
    kseed.seed(fresh_db, scale=2)
    unbalanced = fresh_db.execute(
        "SELECT count(*) FROM (SELECT voucher_id FROM voucher_lines GROUP BY voucher_id"
        " HAVING sum(debit) <> sum(credit) OR count(*) NOT BETWEEN 2 AND 4) x").fetchone()[0]
    assert unbalanced == 0
    no_lines = fresh_db.execute(
        "SELECT count(*) FROM vouchers v WHERE NOT EXISTS"
        " (SELECT 1 FROM voucher_lines l WHERE l.voucher_id = v.id)").fetchone()[0]
    assert no_lines == 0
    # lines post only to accounts of the voucher's own company
    cross = fresh_db.execute(
        "SELECT count(*) FROM voucher_lines l JOIN vouchers v ON v.id = l.voucher_id"
        " JOIN accounts a ON a.id = l.account_id WHERE a.company_id <> v.company_id").fetchone()[0]
    assert cross == 0
    n, mx, mn = fresh_db.execute("SELECT count(*), max(seq), min(seq) FROM audit_log").fetchone()
    assert (mn, mx) == (1, n)
    assert fresh_db.execute("SELECT last_value FROM counters WHERE name = 'audit_log'").fetchone()[0] == n
    rows = fresh_db.execute(
        "SELECT c.name, c.last_value, t.cnt, t.mx FROM counters c JOIN"
        " (SELECT company_id, count(*) cnt, max(invoice_no) mx FROM tax_invoices GROUP BY company_id) t"
        " ON c.name = 'tax_invoice:' || t.company_id").fetchall()
    assert len(rows) == 6
    for name, last, cnt, mx in rows:
        assert last == cnt == mx, name
    # account hierarchy: five roots per company, every parent in the same company
    roots = fresh_db.execute("SELECT count(*) FROM accounts WHERE parent_id IS NULL").fetchone()[0]
    assert roots == 5 * 6
    orphan = fresh_db.execute(
        "SELECT count(*) FROM accounts a JOIN accounts p ON p.id = a.parent_id"
        " WHERE p.company_id <> a.company_id OR p.kind <> a.kind").fetchone()[0]
    assert orphan == 0


def test_serial_sequences_continue_after_seed(fresh_db):
    kseed.seed(fresh_db)
    new_id = fresh_db.execute(
        "INSERT INTO vouchers (company_id, voucher_date) VALUES (1, current_date) RETURNING id").fetchone()[0]
    assert new_id == 201
    fresh_db.rollback()


def test_lab_credentials_verify_against_seeded_hashes(fresh_db):
    kseed.seed(fresh_db)
    creds = kseed.lab_credentials(1)
    assert creds[0].email == "user1@company1.kerp.test"
    for cred in creds:
        row = fresh_db.execute("SELECT id, company_id, password_hash FROM users WHERE email = %s",
                               (cred.email,)).fetchone()
        assert row[:2] == (cred.user_id, cred.company_id)
        assert kseed.verify_password(cred.password, row[2])
        assert not kseed.verify_password("wrong", row[2])
    leaf = kseed.leaf_account_ids(2)
    kinds = fresh_db.execute("SELECT count(*) FROM accounts WHERE company_id = 2 AND parent_id IS NOT NULL"
                             " AND id = ANY(%s)", (leaf,)).fetchone()[0]
    assert kinds == len(leaf)
