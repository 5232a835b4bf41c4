"""Benchmark: run_all over 1,000,000 voucher_lines against a plain count(*) of the same tables (target ratio <= 3)."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from harness.checks.integrity import CHECK_NAMES, SNAPSHOT_TABLES, run_all, take_snapshot
import harness.lab
from harness.lab import paths
from harness.lab.postgres import PgNode, runtime

SCHEMA = Path(harness.lab.__file__).with_name("kerp") / "schema.sql"
SQL_CHECKS = tuple(n for n in CHECK_NAMES if n != "pg_amcheck")
TABLES = ("companies", "accounts", "users", "vouchers", "voucher_lines", "counters", "audit_log", "tax_invoices")
COMPANIES = 50
ACCOUNTS_PER_COMPANY = 40
USERS_PER_COMPANY = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres():
    """A throwaway PostgreSQL server (same pattern as the `scratch_pg` fixture); stopped and wiped on exit."""
    base = Path(tempfile.mkdtemp(prefix="drill-bench-"))
    rt = runtime(paths.install_cache_root())
    root = paths.server_root(base)  # as root: a place the unprivileged server user can reach (also for its log)
    node = PgNode("bench", root / "bench", free_port(), root / "bench.log", rt)
    node.initdb()
    try:
        node.start()
        yield node
    finally:
        node.stop(mode="immediate")
        node.wipe()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def build(conn: psycopg.Connection, vouchers: int, invoices_per_company: int) -> None:
    """Fill an empty K-ERP schema with `vouchers` vouchers of 4 lines, their audit rows and tax invoices."""
    conn.execute(SCHEMA.read_text())
    conn.execute("""
        INSERT INTO companies (id, name, business_no, tier)
        SELECT c, 'company ' || c, 'BN-' || lpad(c::text, 6, '0'), (ARRAY['platinum','gold','silver'])[1 + c %% 3]
        FROM generate_series(1, %(companies)s::bigint) c""", {"companies": COMPANIES})
    # per company: 5 root accounts (one per kind), the others children of a root of the same company
    conn.execute("""
        INSERT INTO accounts (id, company_id, code, name, kind, parent_id)
        SELECT (c - 1) * %(apc)s + k, c, lpad(k::text, 4, '0'), 'account ' || k,
               (ARRAY['asset','liability','equity','revenue','expense'])[1 + (k - 1) %% 5],
               CASE WHEN k <= 5 THEN NULL ELSE (c - 1) * %(apc)s + 1 + (k - 1) %% 5 END
        FROM generate_series(1, %(companies)s::bigint) c, generate_series(1, %(apc)s::bigint) k
        ORDER BY k""", {"companies": COMPANIES, "apc": ACCOUNTS_PER_COMPANY})
    conn.execute("""
        INSERT INTO users (id, company_id, email, password_hash, role)
        SELECT (c - 1) * %(upc)s + u, c, 'user' || u || '@company' || c || '.example', 'x', 'accountant'
        FROM generate_series(1, %(companies)s::bigint) c, generate_series(1, %(upc)s::bigint) u""",
                 {"companies": COMPANIES, "upc": USERS_PER_COMPANY})
    conn.execute("""
        INSERT INTO vouchers (id, company_id, request_id, voucher_date, description)
        SELECT v, 1 + v %% %(companies)s, 'bench-' || v, date '2024-01-01' + (v %% 365)::int, 'bench voucher'
        FROM generate_series(1, %(n)s::bigint) v""", {"companies": COMPANIES, "n": vouchers})
    conn.execute("SELECT setval('vouchers_id_seq', %(n)s)", {"n": vouchers})
    # lines 1/2 and 3/4 are debit/credit pairs of the same amount
    conn.execute("""
        INSERT INTO voucher_lines (id, voucher_id, line_no, account_id, debit, credit)
        SELECT (v - 1) * 4 + l, v, l, ((v %% %(companies)s)) * %(apc)s + 1 + (v + l) %% %(apc)s,
               CASE WHEN l %% 2 = 1 THEN ((v * 7 + l) %% 100000) / 100.0 + 1 ELSE 0 END,
               CASE WHEN l %% 2 = 0 THEN ((v * 7 + l - 1) %% 100000) / 100.0 + 1 ELSE 0 END
        FROM generate_series(1, %(n)s::bigint) v, generate_series(1, 4) l
        ORDER BY v, l""", {"companies": COMPANIES, "apc": ACCOUNTS_PER_COMPANY, "n": vouchers})
    conn.execute("SELECT setval('voucher_lines_id_seq', %(n)s)", {"n": vouchers * 4})
    conn.execute("""
        INSERT INTO tax_invoices (id, company_id, invoice_no, voucher_id, amount, popbill_ref)
        SELECT (n - 1) * %(companies)s + c, c, n, (n - 1) * %(companies)s + c, 1000 + n, 'PB-' || c || '-' || n
        FROM generate_series(1, %(ipc)s::bigint) n, generate_series(1, %(companies)s::bigint) c""",
                 {"companies": COMPANIES, "ipc": invoices_per_company})
    conn.execute("SELECT setval('tax_invoices_id_seq', %(n)s)", {"n": COMPANIES * invoices_per_company})
    conn.execute("""
        INSERT INTO audit_log (seq, actor, action, entity, entity_id)
        SELECT s, 'bench', 'create', CASE WHEN s <= %(n)s THEN 'voucher' ELSE 'tax_invoice' END,
               CASE WHEN s <= %(n)s THEN s ELSE s - %(n)s END::text
        FROM generate_series(1, %(total)s::bigint) s""",
                 {"n": vouchers, "total": vouchers + COMPANIES * invoices_per_company})
    conn.execute("INSERT INTO counters (name, last_value) VALUES ('audit_log', %(total)s)",
                 {"total": vouchers + COMPANIES * invoices_per_company})
    conn.execute("""
        INSERT INTO counters (name, last_value)
        SELECT 'tax_invoice:' || c, %(ipc)s FROM generate_series(1, %(companies)s) c""",
                 {"companies": COMPANIES, "ipc": invoices_per_company})


def time_counts(conn: psycopg.Connection) -> tuple[float, dict[str, float]]:
    per: dict[str, float] = {}
    t0 = time.perf_counter()
    for t in TABLES:
        t1 = time.perf_counter()
        conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(t))).fetchone()
        per[t] = time.perf_counter() - t1
    return time.perf_counter() - t0, per


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vouchers", type=int, default=250_000, help="vouchers of 4 lines each (default 250000)")
    ap.add_argument("--invoices-per-company", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds; the fastest of each side counts")
    ap.add_argument("--target", type=float, default=3.0)
    args = ap.parse_args(argv)

    with throwaway_postgres() as node:
        dsn = node.admin_dsn("kerp")
        with psycopg.connect(node.admin_dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE kerp TEMPLATE template0")
        t0 = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            with conn.transaction():
                build(conn, args.vouchers, args.invoices_per_company)
            conn.execute("VACUUM ANALYZE")
            lines = conn.execute("SELECT count(*) FROM voucher_lines").fetchone()[0]
            print(f"built {lines:,} voucher_lines in {time.perf_counter() - t0:.1f} s")
            snapshot = take_snapshot(conn, SNAPSHOT_TABLES)
            # warm-up round (caches, plans), then the timed rounds
            run_all(conn, snapshot=snapshot, dsn=dsn, only=SQL_CHECKS)
            time_counts(conn)
            # rounds interleave the two measurements; the fastest of each counts (noise on a shared machine)
            best_total, best_base = float("inf"), float("inf")
            results, per_table = [], {}
            for _ in range(args.repeat):
                base, per = time_counts(conn)
                if base < best_base:
                    best_base, per_table = base, per
                t1 = time.perf_counter()
                res = run_all(conn, snapshot=snapshot, dsn=dsn, only=SQL_CHECKS)
                total = time.perf_counter() - t1
                if total < best_total:
                    best_total, results = total, res
            total, base = best_total, best_base
            t2 = time.perf_counter()
            amcheck = run_all(conn, snapshot=snapshot, rt=node.rt, dsn=dsn, only=("pg_amcheck",))
            amcheck_s = time.perf_counter() - t2

    print(f"count(*) over {len(TABLES)} tables: {base:.3f} s  "
          + ", ".join(f"{t} {s * 1000:.0f} ms" for t, s in per_table.items()))
    for r in results:
        print(f"  {r.check:30s} {r.status:8s} {r.seconds * 1000:8.1f} ms  {r.details}")
    ratio = total / base
    print(f"run_all (without pg_amcheck): {total:.3f} s")
    print(f"ratio run_all / count(*): {ratio:.2f} (target <= {args.target:g})")
    a = amcheck[0]
    print(f"pg_amcheck (separately): {a.status} in {amcheck_s:.3f} s  {a.details}")
    bad = [r.check for r in results if r.status != "pass"]
    if bad:
        print(f"unexpected findings on clean data: {bad}", file=sys.stderr)
        return 1
    return 0 if ratio <= args.target else 3


if __name__ == "__main__":
    raise SystemExit(main())
