"""Plant known integrity faults in a scratch copy of the K-ERP database (tests and `drill calibrate`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg import sql

from harness.errors import HarnessError

__all__ = ["plant_audit_gap", "plant_invoice_gap", "plant_orphan_account", "plant_orphan_voucher_line",
           "plant_unbalanced_voucher", "scratch_copy"]


class PlantError(HarnessError):
    """A fault could not be planted (empty database, no suitable row)."""


@contextlib.contextmanager
def _bypass_foreign_keys(conn: psycopg.Connection) -> Iterator[None]:
    """Disable FK triggers for this transaction (superuser only; fine in the lab's scratch copies)."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        yield


def _one(conn: psycopg.Connection, query: str, params: dict[str, Any] | None = None) -> tuple:
    row = conn.execute(query, params).fetchone()
    if row is None or row[0] is None:
        raise PlantError(f"cannot plant: no suitable row ({query.split()[0:6]}...)")
    return row


def plant_unbalanced_voucher(conn: psycopg.Connection, *, off_by: str = "0.01") -> int:
    """Insert a voucher whose 2 lines differ by `off_by` (debit > credit); returns the voucher id."""
    with conn.transaction():
        company_id, a1, a2 = _one(conn, """
            SELECT a.company_id, min(a.id), max(a.id) FROM accounts a
            GROUP BY a.company_id HAVING count(*) >= 2 ORDER BY a.company_id LIMIT 1""")
        vid = _one(conn, "SELECT coalesce(max(id), 0) + 1 FROM vouchers")[0]
        conn.execute("""INSERT INTO vouchers (id, company_id, request_id, voucher_date, description)
                        VALUES (%(id)s, %(c)s, %(r)s, current_date, 'planted: unbalanced')""",
                     {"id": vid, "c": company_id, "r": f"planted-unbalanced-{vid}"})
        conn.execute("""INSERT INTO voucher_lines (voucher_id, line_no, account_id, debit, credit)
                        SELECT %(v)s, 1, %(a1)s, 100 + %(off)s::numeric, 0
                        UNION ALL SELECT %(v)s, 2, %(a2)s, 0, 100""",
                     {"v": vid, "a1": a1, "a2": a2, "off": off_by})
        conn.execute("SELECT setval(pg_get_serial_sequence('vouchers', 'id'), %(v)s)", {"v": vid})
    return vid


def plant_orphan_account(conn: psycopg.Connection) -> int:
    """Insert an account whose parent_id points to a missing account; returns the account id."""
    with _bypass_foreign_keys(conn):
        company_id = _one(conn, "SELECT min(id) FROM companies")[0]
        aid = _one(conn, "SELECT coalesce(max(id), 0) + 1 FROM accounts")[0]
        conn.execute("""INSERT INTO accounts (id, company_id, code, name, kind, parent_id)
                        VALUES (%(id)s, %(c)s, %(code)s, 'planted: orphan', 'asset', %(p)s)""",
                     {"id": aid, "c": company_id, "code": f"P{aid}", "p": aid + 1_000_000})
    return aid


def plant_orphan_voucher_line(conn: psycopg.Connection, *, delete_voucher: bool = False) -> list[int]:
    """Leave voucher_lines without their voucher; returns the orphan line ids.

    Default: insert one line pointing past the last voucher. `delete_voucher`: delete a voucher in
    the middle of the id range (and nothing that references it), so its lines become orphans.
    """
    with _bypass_foreign_keys(conn):
        if delete_voucher:
            vid = _one(conn, """SELECT v.id FROM vouchers v WHERE EXISTS (SELECT 1 FROM voucher_lines l
                                WHERE l.voucher_id = v.id) ORDER BY v.id
                                OFFSET (SELECT count(*) / 2 FROM vouchers) LIMIT 1""")[0]
            conn.execute("DELETE FROM vouchers WHERE id = %(v)s", {"v": vid})
            return [r[0] for r in conn.execute("SELECT id FROM voucher_lines WHERE voucher_id = %(v)s ORDER BY id",
                                               {"v": vid})]
        account_id = _one(conn, "SELECT min(id) FROM accounts")[0]
        missing = _one(conn, "SELECT coalesce(max(id), 0) + 1000 FROM vouchers")[0]
        lid = _one(conn, "SELECT coalesce(max(id), 0) + 1 FROM voucher_lines")[0]
        conn.execute("""INSERT INTO voucher_lines (id, voucher_id, line_no, account_id, debit, credit)
                        VALUES (%(id)s, %(v)s, 1, %(a)s, 0, 0)""", {"id": lid, "v": missing, "a": account_id})
        conn.execute("SELECT setval(pg_get_serial_sequence('voucher_lines', 'id'), %(id)s)", {"id": lid})
    return [lid]


def plant_audit_gap(conn: psycopg.Connection, *, size: int = 3) -> list[int]:
    """Delete `size` consecutive audit_log rows in the middle of the sequence; returns the deleted seqs."""
    with conn.transaction():
        lo, hi = _one(conn, "SELECT min(seq), max(seq) FROM audit_log")
        if hi - lo + 1 < size + 2:
            raise PlantError(f"cannot plant an audit gap of {size}: only {hi - lo + 1} audit rows")
        start = lo + (hi - lo + 1 - size) // 2
        rows = conn.execute("DELETE FROM audit_log WHERE seq BETWEEN %(a)s AND %(b)s RETURNING seq",
                            {"a": start, "b": start + size - 1}).fetchall()
    return sorted(r[0] for r in rows)


def plant_invoice_gap(conn: psycopg.Connection) -> tuple[int, int]:
    """Delete a middle tax invoice of the company with the most invoices; returns (company_id, invoice_no)."""
    with conn.transaction():
        company_id, n = _one(conn, """SELECT company_id, max(invoice_no) FROM tax_invoices GROUP BY company_id
                                      HAVING count(*) >= 3 ORDER BY count(*) DESC, company_id LIMIT 1""")
        no = n // 2 + 1 if n // 2 + 1 < n else 2
        conn.execute("DELETE FROM tax_invoices WHERE company_id = %(c)s AND invoice_no = %(n)s",
                     {"c": company_id, "n": no})
    return company_id, no


def scratch_copy(admin_conn: psycopg.Connection, source_db: str, new_db: str, *, rt: Any = None,
                 admin_dsn: str | None = None) -> str:
    """Copy database `source_db` into a new database `new_db` and return how ("template" or "dump").

    `admin_conn` must be an autocommit connection to another database of the same server (e.g.
    `postgres`), as a superuser. `CREATE DATABASE new TEMPLATE source` is used first: it needs the
    source to have no other connections. When the source is busy and a PostgreSQL runtime `rt` is
    given, the copy is made with pg_dump -Fc / pg_restore instead (a consistent snapshot, no lock
    beyond ACCESS SHARE); `admin_dsn` is a conninfo of the server without dbname (default: from
    `admin_conn`).
    """
    try:
        admin_conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(new_db),
                                                                            sql.Identifier(source_db)))
        return "template"
    except psycopg.errors.ObjectInUse as e:
        if rt is None:
            raise PlantError(f"cannot copy database {source_db!r}: it has other connections and no "
                             "PostgreSQL runtime was given for pg_dump/pg_restore") from e
    base = admin_dsn or _server_conninfo(admin_conn)
    admin_conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(new_db)))
    work = Path(tempfile.mkdtemp(prefix="drill-copy-"))
    try:
        rt.chown(work)
        os.chmod(work, 0o700)
        dump = work / "source.dump"
        rt.run("pg_dump", ["-Fc", "-f", str(dump), "--dbname", psycopg.conninfo.make_conninfo(base, dbname=source_db)],
               timeout=3600)
        rt.run("pg_restore", ["--no-owner", "--exit-on-error", "--dbname",
                              psycopg.conninfo.make_conninfo(base, dbname=new_db), str(dump)], timeout=3600)
    except Exception as e:
        admin_conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(new_db)))
        raise PlantError(f"cannot copy database {source_db!r} with pg_dump/pg_restore: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return "dump"


def _server_conninfo(conn: psycopg.Connection) -> str:
    p = conn.info.get_parameters()
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in p.items() if k in ("host", "port", "user")})
