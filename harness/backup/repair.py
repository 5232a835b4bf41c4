"""Repairs of the live K-ERP database from a recovered copy (a point-in-time recovery in a NEW server): re-copy
named rows (a corruption), or every row of one tenant (a ransomware attack), and fingerprint a tenant's rows.

Only rows are written into the live database, by primary key, inside one transaction: an UPSERT from the
recovered copy's values. Nothing is deleted there and rows the copy does not hold (written after its recovery
point) stay as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

from psycopg import sql

from harness.errors import HarnessError

__all__ = ["TENANT_TABLES", "RepairError", "TenantFingerprint", "copy_rows", "max_ids", "restore_tenant", "tenant_fingerprint", "tenant_ids"]

#: the tables holding a tenant's (company's) rows, parents first, and how a row belongs to the company
TENANT_TABLES: tuple[tuple[str, str], ...] = (
    ("companies", "id = %(cid)s"),
    ("accounts", "company_id = %(cid)s"),
    ("users", "company_id = %(cid)s"),
    ("vouchers", "company_id = %(cid)s"),
    ("voucher_lines", "voucher_id IN (SELECT id FROM vouchers WHERE company_id = %(cid)s)"),
    ("tax_invoices", "company_id = %(cid)s"),
)
_TABLES = dict(TENANT_TABLES)


class RepairError(HarnessError):
    """The repair could not be done (a table unknown, the copy lacks rows it must have)."""


def _columns(conn: Any, table: str) -> list[str]:
    rows = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                        "AND NOT attisdropped ORDER BY attnum", (table,)).fetchall()
    if not rows:
        raise RepairError(f"table {table!r} has no columns (does it exist?)")
    return [r[0] for r in rows]


def _upsert(dst: Any, table: str, cols: list[str], rows: list[tuple]) -> int:
    """INSERT ... ON CONFLICT (id) DO UPDATE of `rows` into `table`; the number of rows that changed."""
    if not rows:
        return 0
    others = [c for c in cols if c != "id"]
    q = sql.SQL("INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT (id) DO UPDATE SET {sets} "
                "WHERE ({old}) IS DISTINCT FROM ({new})").format(
        t=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        vals=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in others),
        old=sql.SQL(", ").join(sql.SQL("{t}.{c}").format(t=sql.Identifier(table), c=sql.Identifier(c))
                               for c in others),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in others))
    with dst.cursor() as cur:
        cur.executemany(q, rows)  # pipelined; rowcount adds up every row's
        return max(0, cur.rowcount)


def copy_rows(src: Any, dst: Any, table: str, ids: Iterable[int]) -> dict[str, Any]:
    """Re-copy rows `ids` of `table` from `src` (the recovered copy) into `dst` (the live database), one
    transaction of `dst`; RepairError (nothing written) when the copy lacks one of them."""
    if table not in _TABLES:
        raise RepairError(f"table {table!r} is not one of {', '.join(_TABLES)}")
    wanted = sorted({int(i) for i in ids})
    cols = _columns(src, table)
    rows = src.execute(sql.SQL("SELECT {cols} FROM {t} WHERE id = ANY(%s) ORDER BY id").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)), t=sql.Identifier(table)), (wanted,)).fetchall()
    missing = sorted(set(wanted) - {r[cols.index("id")] for r in rows})
    if missing:
        raise RepairError(f"the recovered copy has no {table} row(s) {missing[:10]}: recovered to a point before "
                          "they were written?")
    with dst.transaction():
        changed = _upsert(dst, table, cols, rows)
    return {"table": table, "rows": len(rows), "changed": changed, "ids": wanted}


def max_ids(conn: Any) -> dict[str, int]:
    """The highest id of each tenant table now (a fingerprint `upto` it leaves later rows aside)."""
    return {t: int(conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {t}").format(
        t=sql.Identifier(t))).fetchone()[0]) for t, _ in TENANT_TABLES}


def tenant_ids(conn: Any, company_id: int) -> dict[str, list[int]]:
    """The ids of every row of company `company_id`, per tenant table."""
    return {t: [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {t} WHERE " + where + " ORDER BY id").format(
        t=sql.Identifier(t)), {"cid": company_id}).fetchall()] for t, where in TENANT_TABLES}


@dataclass(frozen=True)
class TenantFingerprint:
    """Row counts and content digests (sha256 over the rows in id order, as text) of one company's tables."""

    company_id: int
    tables: dict[str, dict[str, Any]]

    def differences(self, other: "TenantFingerprint") -> list[str]:
        out = []
        for t in _TABLES:
            a, b = self.tables.get(t), other.tables.get(t)
            if a != b:
                out.append(f"{t}: {a and a['rows']} rows {a and a['sha256'][:12]} vs "
                           f"{b and b['rows']} rows {b and b['sha256'][:12]}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"company_id": self.company_id, "tables": self.tables}


def tenant_fingerprint(conn: Any, company_id: int, upto: dict[str, int] | None = None) -> TenantFingerprint:
    """Fingerprint company `company_id`'s rows (with `upto`: only rows whose id is at most upto[table])."""
    out: dict[str, dict[str, Any]] = {}
    for t, where in TENANT_TABLES:
        cond = sql.SQL(where)
        params: dict[str, Any] = {"cid": company_id}
        if upto is not None and t in upto:
            cond = cond + sql.SQL(" AND id <= %(upto)s")
            params["upto"] = upto[t]
        h, n = hashlib.sha256(), 0
        q = sql.SQL("SELECT x::text FROM {t} x WHERE ").format(t=sql.Identifier(t)) + cond + sql.SQL(" ORDER BY id")
        for (text,) in conn.execute(q, params):
            h.update(text.encode() + b"\n")
            n += 1
        out[t] = {"rows": n, "sha256": h.hexdigest()}
    return TenantFingerprint(company_id, out)


def restore_tenant(src: Any, dst: Any, company_id: int) -> dict[str, Any]:
    """Every row of company `company_id` in `src` (the recovered copy) UPSERTed into `dst` (the live
    database), parents first, in one transaction of `dst`; other companies' rows are not read or written."""
    per_table: dict[str, dict[str, int]] = {}
    with dst.transaction():
        for t, where in TENANT_TABLES:
            cols = _columns(src, t)
            rows = src.execute(sql.SQL("SELECT {cols} FROM {t} WHERE " + where + " ORDER BY id").format(
                cols=sql.SQL(", ").join(map(sql.Identifier, cols)), t=sql.Identifier(t)),
                {"cid": company_id}).fetchall()
            per_table[t] = {"rows": len(rows), "changed": _upsert(dst, t, cols, rows)}
    return {"company_id": company_id, "tables": per_table,
            "rows": sum(v["rows"] for v in per_table.values()),
            "changed": sum(v["changed"] for v in per_table.values())}
