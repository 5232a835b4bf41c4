"""Integrity checks of the K-ERP database: set-based SQL, one scan per table, results that never raise."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import psycopg
from psycopg import sql

CHECK_NAMES = (
    "companies_exist",
    "vouchers_balanced",
    "account_hierarchy_no_orphans",
    "foreign_keys_valid",
    "audit_sequence_gap_free",
    "invoice_numbers_gap_free",
    "snapshot_unchanged",
    "pg_amcheck",
)
SNAPSHOT_TABLES = ("companies", "accounts", "users")
MAX_NAMED = 20
MAX_BITMAP_BITS = 1 << 28  # 32 MiB: above this an id range is tested with a join instead of a bitmap
INVOICE_COUNTER_PREFIX = "tax_invoice:"
AUDIT_COUNTER = "audit_log"

STATUSES = ("pass", "fail", "warning")


# -- results ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check: `offending` names at most MAX_NAMED items, `count` is the total."""

    check: str
    status: str
    details: str
    offending: tuple[str, ...] = ()
    count: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "details": self.details,
                "offending": list(self.offending), "count": self.count, "seconds": round(self.seconds, 6)}


@dataclass(frozen=True)
class TableFingerprint:
    """Row count and an order-independent content fingerprint of one table."""

    table: str
    rows: int
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Snapshot:
    """Fingerprints of the tables the workload does not write, taken before the fault."""

    tables: tuple[TableFingerprint, ...]
    taken_at: float = 0.0

    def table(self, name: str) -> TableFingerprint | None:
        return next((t for t in self.tables if t.table == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"taken_at": self.taken_at, "tables": [t.to_dict() for t in self.tables]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Snapshot":
        return cls(tables=tuple(TableFingerprint(t["table"], int(t["rows"]), str(t["fingerprint"]))
                                for t in d.get("tables", ())),
                   taken_at=float(d.get("taken_at", 0.0)))


def _ranges(values: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _fmt_range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _span_count(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


# -- shared scans -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Membership:
    """Exact membership test for an id set: a range, plus a bitmap when the set has holes."""

    lo: int
    hi: int
    bitmap: bytes | None  # bit (id - lo) set when id is present; None: every id in lo..hi is present

    def sql(self, column: sql.Composable, prefix: str) -> tuple[sql.Composable, dict[str, Any]]:
        lo, hi, bm = f"{prefix}_lo", f"{prefix}_hi", f"{prefix}_bm"
        params: dict[str, Any] = {lo: self.lo, hi: self.hi}
        expr = sql.SQL("({c} BETWEEN {lo}::int8 AND {hi}::int8").format(c=column, lo=sql.Placeholder(lo),
                                                                        hi=sql.Placeholder(hi))
        if self.bitmap is not None:
            params[bm] = self.bitmap
            expr += sql.SQL(" AND get_bit({bm}::bytea, {c} - {lo}::int8) = 1").format(
                bm=sql.Placeholder(bm), c=column, lo=sql.Placeholder(lo))
        return expr + sql.SQL(")"), params


def _bitmap(lo: int, hi: int, present: Iterable[int] = (), absent: Iterable[tuple[int, int]] = ()) -> bytes:
    """A bitmap over lo..hi (get_bit order: bit n is bit n%8 of byte n//8); either from present ids or all-set minus holes."""
    n = hi - lo + 1
    if absent:
        bm = bytearray(b"\xff" * ((n + 7) // 8))
        for a, b in absent:
            for v in range(a, b + 1):
                i = v - lo
                bm[i >> 3] &= ~(1 << (i & 7)) & 0xFF
    else:
        bm = bytearray((n + 7) // 8)
        for v in present:
            i = v - lo
            bm[i >> 3] |= 1 << (i & 7)
    return bytes(bm)


class Scans:
    """Per-run cache of the table scans several checks share, so each big table is read once.

    Fast path (exact): an id set is tested by range + bitmap instead of a join; balance and
    line counts are screened by one linear aggregate over voucher_lines. When a screen is not
    clean the exact set-based queries below name the offenders.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def q(self, query: sql.Composable | str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        return self.conn.execute(query, params, prepare=False).fetchall()

    # ids of the small tables
    def company_ids(self) -> list[int]:
        return self._once("companies", lambda: [r[0] for r in self.q("SELECT id FROM companies")])

    def _membership_from_ids(self, ids: list[int]) -> _Membership | None:
        if not ids:
            return _Membership(1, 0, None)  # empty range: nothing is a member
        lo, hi = min(ids), max(ids)
        if hi - lo + 1 == len(set(ids)):
            return _Membership(lo, hi, None)
        if hi - lo + 1 > MAX_BITMAP_BITS:
            return None
        return _Membership(lo, hi, _bitmap(lo, hi, present=ids))

    def companies_member(self) -> _Membership | None:
        return self._once("companies_m", lambda: self._membership_from_ids(self.company_ids()))

    def accounts_member(self) -> _Membership | None:
        def load() -> _Membership | None:
            return self._membership_from_ids([r[0] for r in self.q("SELECT id FROM accounts")])
        return self._once("accounts_m", load)

    # vouchers: one scan for count, range, set fingerprint and bad company references
    def vouchers(self) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            cm = self.companies_member()
            if cm is None:
                bad = sql.SQL("NOT EXISTS (SELECT 1 FROM companies c WHERE c.id = v.company_id)")
                params: dict[str, Any] = {}
            else:
                expr, params = cm.sql(sql.SQL("v.company_id"), "c")
                bad = sql.SQL("NOT ") + expr
            row = self.q(sql.SQL("SELECT count(*), (SELECT min(id) FROM vouchers), (SELECT max(id) FROM vouchers),"
                                 " count(*) FILTER (WHERE {bad}) FROM vouchers v").format(bad=bad), params)[0]
            n, lo, hi, bad_company = row
            holes: list[tuple[int, int]] = []
            if n and hi - lo + 1 != n:
                # ids with holes (rollbacks, sequence jumps after a failover): only the gaps come back
                holes = [(a, b) for a, b in self.q(
                    "SELECT prev + 1, id - 1 FROM (SELECT id, lag(id) OVER (ORDER BY id) AS prev FROM vouchers) s"
                    " WHERE id - prev > 1")]
            if not n:
                member: _Membership | None = _Membership(1, 0, None)
            elif not holes:
                member = _Membership(lo, hi, None)
            elif hi - lo + 1 > MAX_BITMAP_BITS:
                member = None
            else:
                member = _Membership(lo, hi, _bitmap(lo, hi, absent=holes))
            return {"count": n, "bad_company": bad_company, "member": member}
        return self._once("vouchers", load)

    # voucher_lines: one linear aggregate screens balance, line counts and both foreign keys
    def ledger(self) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            v = self.vouchers()
            vm, am = v["member"], self.accounts_member()
            if vm is None or am is None:
                return {"screen": False}
            v_expr, params = vm.sql(sql.SQL("voucher_id"), "v")
            a_expr, p2 = am.sql(sql.SQL("account_id"), "a")
            params.update(p2)
            # Balance: the sum over lines of (debit - credit) in cents times an odd 24-bit weight of the voucher
            # is 0 when every voucher balances; non-zero proves an unbalanced voucher (a false 0 needs an exact
            # cancellation of unbalanced vouchers' weighted differences, e.g. a line moved between two vouchers
            # of equal weight: 2^-23). CASE saves a numeric subtraction; a line above ~10^9 in cents times the
            # weight overflows int8, which sends the check down the exact path.
            # Line counts: with UNIQUE (voucher_id, line_no) and every line's voucher present, the lines numbered
            # 1 and 2 are at most one each per voucher; 2 x vouchers of them means every voucher has both (exact).
            # Foreign keys: range + bitmap membership of voucher_id and account_id (exact), no join. Bad
            # references and the line count share one int8 sum (bad ones in the high 32 bits).
            query = sql.SQL("""
                SELECT coalesce(sum(CASE WHEN credit = 0 THEN (debit * 100)::int8
                                         WHEN debit = 0 THEN -(credit * 100)::int8
                                         ELSE ((debit - credit) * 100)::int8 END
                                    * ((hashint8(voucher_id) >> 8) | 1)), 0),
                       coalesce(sum(CASE WHEN NOT ({v_expr} AND {a_expr}) THEN 4294967296
                                         WHEN line_no BETWEEN 1 AND 2 THEN 1 ELSE 0 END), 0)
                FROM voucher_lines""").format(v_expr=v_expr, a_expr=a_expr)
            unique_lines = _has_unique_index(self, "voucher_lines", ["voucher_id", "line_no"])
            try:
                with self.conn.transaction():
                    weighted, packed = self.q(query, params)[0]
            except psycopg.errors.NumericValueOutOfRange:
                return {"screen": False}  # amounts too large for the int8 screen: exact path
            bad_refs, n12 = divmod(int(packed), 1 << 32)
            balanced = weighted == 0 and unique_lines and bad_refs == 0 and n12 == 2 * v["count"]
            return {"screen": True, "balanced": balanced, "bad_refs": bad_refs}
        return self._once("ledger", load)

    # tax_invoices: one scan, per company (count, min, max, bad references)
    def invoices(self) -> list[tuple]:
        def load() -> list[tuple]:
            vm, cm = self.vouchers()["member"], self.companies_member()
            params: dict[str, Any] = {}
            if vm is None:
                bad_v = sql.SQL("t.voucher_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vouchers v"
                                " WHERE v.id = t.voucher_id)")
            else:
                e, p = vm.sql(sql.SQL("t.voucher_id"), "v")
                bad_v = sql.SQL("t.voucher_id IS NOT NULL AND NOT ") + e
                params.update(p)
            if cm is None:
                bad_c = sql.SQL("NOT EXISTS (SELECT 1 FROM companies c WHERE c.id = t.company_id)")
            else:
                e, p = cm.sql(sql.SQL("t.company_id"), "c")
                bad_c = sql.SQL("NOT ") + e
                params.update(p)
            return self.q(sql.SQL("""
                SELECT t.company_id, count(*), min(t.invoice_no), max(t.invoice_no),
                       count(*) FILTER (WHERE {bad_c}), count(*) FILTER (WHERE {bad_v})
                FROM tax_invoices t GROUP BY t.company_id""").format(bad_c=bad_c, bad_v=bad_v), params)
        return self._once("invoices", load)


def _named(rows: Sequence[tuple], fmt: Callable[[tuple], str]) -> tuple[tuple[str, ...], int]:
    """Rows of `..., total` (count(*) OVER ()): the first MAX_NAMED formatted, and the total."""
    if not rows:
        return (), 0
    return tuple(fmt(r) for r in rows[:MAX_NAMED]), int(rows[0][-1])


def _capped(items: Sequence[str], total: int) -> str:
    more = f" (+{total - len(items)} more)" if total > len(items) else ""
    return ", ".join(items) + more


# -- the checks ---------------------------------------------------------------------------------

def check_companies_exist(s: Scans) -> CheckResult:
    ids = s.company_ids()
    if not ids:
        return CheckResult("companies_exist", "fail", "no company exists", ("companies:none",), 1)
    found: list[str] = []
    total = 0
    for table in ("users", "accounts"):  # small tables: exact anti-joins
        rows = s.q(sql.SQL("SELECT t.id, t.company_id, count(*) OVER () FROM {t} t WHERE NOT EXISTS"
                           " (SELECT 1 FROM companies c WHERE c.id = t.company_id) ORDER BY t.id LIMIT {n}")
                   .format(t=sql.Identifier(table), n=sql.Literal(MAX_NAMED)))
        named, n = _named(rows, lambda r, t=table: f"{t}:{r[0]}")
        found += named
        total += n
    if s.vouchers()["bad_company"]:
        named, n = _missing_company_rows(s, "vouchers")
        found += named
        total += n
    bad_inv = sum(r[4] for r in s.invoices())
    if bad_inv:
        named, n = _missing_company_rows(s, "tax_invoices")
        found += named
        total += n
    if total:
        return CheckResult("companies_exist", "fail",
                           f"{total} rows reference a missing company: {_capped(found[:MAX_NAMED], total)}",
                           tuple(found[:MAX_NAMED]), total)
    return CheckResult("companies_exist", "pass",
                       f"{len(ids)} companies; every user, account, voucher and tax invoice references one")


def _missing_company_rows(s: Scans, table: str) -> tuple[tuple[str, ...], int]:
    rows = s.q(sql.SQL("SELECT t.id, t.company_id, count(*) OVER () FROM {t} t WHERE NOT EXISTS"
                       " (SELECT 1 FROM companies c WHERE c.id = t.company_id) ORDER BY t.id LIMIT {n}")
               .format(t=sql.Identifier(table), n=sql.Literal(MAX_NAMED)))
    return _named(rows, lambda r: f"{table}:{r[0]}")


def check_vouchers_balanced(s: Scans) -> CheckResult:
    v = s.vouchers()
    led = s.ledger()
    if led.get("screen") and led["balanced"]:
        return CheckResult("vouchers_balanced", "pass",
                           f"{v['count']} vouchers balanced with >= 2 lines each")
    # exact: aggregate voucher_lines once per voucher, compare with vouchers in one statement
    rows = s.q(sql.SQL("""
        SELECT v.id, coalesce(g.n, 0), coalesce(g.debit, 0), coalesce(g.credit, 0), count(*) OVER ()
        FROM vouchers v
        LEFT JOIN (SELECT voucher_id, count(*) AS n, sum(debit) AS debit, sum(credit) AS credit
                   FROM voucher_lines GROUP BY voucher_id) g ON g.voucher_id = v.id
        WHERE g.n IS NULL OR g.n < 2 OR g.debit <> g.credit
        ORDER BY v.id LIMIT {n}""").format(n=sql.Literal(MAX_NAMED)))
    if not rows:
        return CheckResult("vouchers_balanced", "pass",
                           f"{v['count']} vouchers balanced with >= 2 lines each (exact check)")
    named, total = _named(rows, lambda r: str(r[0]))
    desc = [f"{r[0]} (debit {r[2]}, credit {r[3]}, {r[1]} lines)" for r in rows[:MAX_NAMED]]
    return CheckResult("vouchers_balanced", "fail",
                       f"{total} vouchers unbalanced or with fewer than 2 lines: {_capped(desc, total)}",
                       named, total)


def check_account_hierarchy(s: Scans) -> CheckResult:
    rows = s.q(sql.SQL("""
        SELECT a.id, a.company_id, a.parent_id, p.company_id, count(*) OVER ()
        FROM accounts a LEFT JOIN accounts p ON p.id = a.parent_id
        WHERE a.parent_id IS NOT NULL AND (p.id IS NULL OR p.company_id <> a.company_id)
        ORDER BY a.id LIMIT {n}""").format(n=sql.Literal(MAX_NAMED)))
    if not rows:
        return CheckResult("account_hierarchy_no_orphans", "pass",
                           "every account's parent exists and belongs to the same company")
    named, total = _named(rows, lambda r: str(r[0]))
    desc = [f"{r[0]} (parent {r[2]} " + ("missing" if r[3] is None else f"of company {r[3]}, not {r[1]}") + ")"
            for r in rows[:MAX_NAMED]]
    return CheckResult("account_hierarchy_no_orphans", "fail",
                       f"{total} orphan accounts: {_capped(desc, total)}", named, total)


def _anti_join(s: Scans, table: str, column: str, ref: str) -> tuple[tuple[str, ...], list[str], int]:
    rows = s.q(sql.SQL("""
        SELECT t.id, t.{col}, count(*) OVER () FROM {t} t
        WHERE t.{col} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {r} r WHERE r.id = t.{col})
        ORDER BY t.id LIMIT {n}""").format(t=sql.Identifier(table), col=sql.Identifier(column),
                                           r=sql.Identifier(ref), n=sql.Literal(MAX_NAMED)))
    named, total = _named(rows, lambda r: f"{table}:{r[0]}")
    return named, [f"{table} {r[0]} -> {ref} {r[1]}" for r in rows[:MAX_NAMED]], total


def check_foreign_keys(s: Scans) -> CheckResult:
    led = s.ledger()
    v = s.vouchers()
    inv = s.invoices()
    todo = []  # (table, column, referenced table) that need naming
    if not led.get("screen") or led["bad_refs"]:
        todo.append(("voucher_lines", "voucher_id", "vouchers"))
        todo.append(("voucher_lines", "account_id", "accounts"))
    if v["bad_company"]:
        todo.append(("vouchers", "company_id", "companies"))
    if any(r[4] for r in inv):
        todo.append(("tax_invoices", "company_id", "companies"))
    if any(r[5] for r in inv):
        todo.append(("tax_invoices", "voucher_id", "vouchers"))
    named: list[str] = []
    desc: list[str] = []
    total = 0
    for table, col, ref in todo:
        n_named, n_desc, n = _anti_join(s, table, col, ref)
        named += n_named
        desc += n_desc
        total += n
    if total:
        return CheckResult("foreign_keys_valid", "fail",
                           f"{total} rows reference a missing row: {_capped(desc[:MAX_NAMED], total)}",
                           tuple(named[:MAX_NAMED]), total)
    return CheckResult("foreign_keys_valid", "pass",
                       "voucher_lines->vouchers, voucher_lines->accounts, vouchers->companies, "
                       "tax_invoices->companies/vouchers all resolve")


UNIQUE_INDEX_TABLES = ("voucher_lines", "audit_log", "tax_invoices")  # looked up together, once per run


def _has_unique_index(s: Scans, table: str, columns: Sequence[str]) -> bool:
    """True when a valid unique index on exactly `columns` exists: then count/min/max prove no gaps."""
    def load() -> dict[str, list[list[str]]]:
        names = sorted(set(UNIQUE_INDEX_TABLES) | {table})
        out: dict[str, list[list[str]]] = {n: [] for n in names}
        for name, cols in s.q("""
                SELECT t.name, array_agg(a.attname::text ORDER BY k.ord) FROM unnest(%(t)s::text[]) AS t(name)
                JOIN pg_index i ON i.indrelid = to_regclass(t.name)
                CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL
                GROUP BY t.name, i.indexrelid""", {"t": names}):
            out[name].append(list(cols))
        return out
    found = s._once("unique_indexes", load)
    if table not in found:  # a table outside UNIQUE_INDEX_TABLES: its own lookup
        found.update(s._once(f"unique_indexes:{table}", load))
    return any(cols == list(columns) for cols in found[table])


def check_audit_sequence(s: Scans) -> CheckResult:
    n, lo, hi, counter = s.q("SELECT count(*), (SELECT min(seq) FROM audit_log), (SELECT max(seq) FROM audit_log),"
                             " (SELECT last_value FROM counters WHERE name = %(c)s) FROM audit_log",
                             {"c": AUDIT_COUNTER})[0]
    unique = _has_unique_index(s, "audit_log", ["seq"])
    if n == 0:
        if counter:
            return CheckResult("audit_sequence_gap_free", "fail",
                               f"audit_log is empty but counter {AUDIT_COUNTER!r} is at {counter}: "
                               f"missing {_fmt_range(1, counter)}", (_fmt_range(1, counter),), counter)
        return CheckResult("audit_sequence_gap_free", "pass", "audit_log is empty and its counter unset")
    if unique and lo == 1 and hi - lo + 1 == n and counter == hi:
        return CheckResult("audit_sequence_gap_free", "pass", f"seq 1..{hi} without gaps; counter at {counter}")
    problems: list[str] = []
    missing: list[tuple[int, int]] = []
    if lo > 1:
        missing.append((1, lo - 1))
    dup = 0
    if not unique or hi - lo + 1 != n:
        for prev, seq in s.q("SELECT prev, seq FROM (SELECT seq, lag(seq) OVER (ORDER BY seq) AS prev"
                             " FROM audit_log) s WHERE seq - prev <> 1"):
            if seq == prev:
                dup += 1
            else:
                missing.append((prev + 1, seq - 1))
    if counter is None:
        problems.append(f"counter {AUDIT_COUNTER!r} is missing")
    elif counter > hi:
        missing.append((hi + 1, counter))
        problems.append(f"counter at {counter} is ahead of max(seq) {hi}")
    elif counter < hi:
        problems.append(f"counter at {counter} is behind max(seq) {hi}")
    if dup:
        problems.append(f"{dup} duplicate seq values")
    items = [_fmt_range(a, b) for a, b in missing]
    total = _span_count(missing)
    if missing:
        problems.insert(0, f"missing {_capped(items[:MAX_NAMED], len(items))} ({total} seq values)")
    if not problems:
        return CheckResult("audit_sequence_gap_free", "pass", f"seq 1..{hi} without gaps; counter at {counter}")
    return CheckResult("audit_sequence_gap_free", "fail", "; ".join(problems),
                       tuple(items[:MAX_NAMED]) or (f"counter:{counter}",), total or 1)


def check_invoice_numbers(s: Scans) -> CheckResult:
    stats = {r[0]: r for r in s.invoices()}
    counters = dict(s.q("SELECT substr(name, %(k)s)::int8, last_value FROM counters WHERE name ~ %(re)s",
                        {"k": len(INVOICE_COUNTER_PREFIX) + 1, "re": "^tax_invoice:[0-9]+$"}))
    unique = _has_unique_index(s, "tax_invoices", ["company_id", "invoice_no"])
    suspects = []
    for cid in sorted(set(stats) | set(counters)):
        _, n, lo, hi, _, _ = stats.get(cid, (cid, 0, None, 0, 0, 0))
        if not (unique and n and lo == 1 and hi == n and counters.get(cid) == hi):
            suspects.append(cid)
    if not suspects:
        return CheckResult("invoice_numbers_gap_free", "pass",
                           f"{len(stats)} companies: invoice numbers 1..max without gaps, counters match")
    gaps: dict[int, list[tuple[int, int]]] = {c: [] for c in suspects}
    dups: dict[int, int] = {}
    for cid, prev, no in s.q("""
            SELECT company_id, prev, invoice_no FROM (
                SELECT company_id, invoice_no, lag(invoice_no, 1, 0::int8) OVER w AS prev
                FROM tax_invoices WHERE company_id = ANY(%(c)s)
                WINDOW w AS (PARTITION BY company_id ORDER BY invoice_no)) s
            WHERE invoice_no - prev <> 1""", {"c": suspects}):
        if no == prev:
            dups[cid] = dups.get(cid, 0) + 1
        else:
            gaps[cid].append((prev + 1, no - 1))
    items: list[str] = []
    desc: list[str] = []
    total = 0
    for cid in suspects:
        hi = stats[cid][3] if cid in stats else 0
        counter = counters.get(cid)
        missing = list(gaps[cid])
        notes = []
        if counter is None:
            notes.append("no counter")
        elif counter > hi:
            missing.append((hi + 1, counter))
            notes.append(f"counter {counter} ahead of max {hi}")
        elif counter < hi:
            notes.append(f"counter {counter} behind max {hi}")
        if dups.get(cid):
            notes.append(f"{dups[cid]} duplicate numbers")
        for a, b in missing:
            items.append(f"{cid}:{_fmt_range(a, b)}")
        total += _span_count(missing) + (0 if missing else len(notes))
        rng = ", ".join(_fmt_range(a, b) for a, b in missing)
        desc.append(f"company {cid}" + (f" missing {rng}" if rng else "") + (f" ({'; '.join(notes)})" if notes else ""))
    if not items and not any(d for d in desc if "(" in d):
        return CheckResult("invoice_numbers_gap_free", "pass",
                           f"{len(stats)} companies: invoice numbers 1..max without gaps, counters match")
    return CheckResult("invoice_numbers_gap_free", "fail", _capped(desc[:MAX_NAMED], len(desc)),
                       tuple(items[:MAX_NAMED]) or tuple(f"{c}:counter" for c in suspects[:MAX_NAMED]), total)


def _fingerprint(conn: psycopg.Connection, table: str) -> TableFingerprint:
    # order-independent: count plus the sum of 64-bit row hashes, one scan; text rendering pinned (UTC, ISO)
    n, fp = conn.execute(sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 431)), 0)"
                                 " FROM {} t").format(sql.Identifier(table)), prepare=False).fetchone()
    return TableFingerprint(table, int(n), f"{int(fp):x}")


def _pinned_rendering(conn: psycopg.Connection) -> None:
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    conn.execute("SET LOCAL extra_float_digits = 3")


def take_snapshot(conn: psycopg.Connection, tables: Iterable[str] = SNAPSHOT_TABLES) -> Snapshot:
    """Row count and content fingerprint of each table (raises psycopg errors: a snapshot must succeed)."""
    with conn.transaction():
        _pinned_rendering(conn)
        fps = tuple(_fingerprint(conn, t) for t in tables)
    return Snapshot(fps, time.time())


def check_snapshot(s: Scans, snapshot: Snapshot | None) -> CheckResult:
    if snapshot is None:
        return CheckResult("snapshot_unchanged", "warning", "no pre-fault snapshot was taken")
    _pinned_rendering(s.conn)
    changed: list[str] = []
    desc: list[str] = []
    for before in snapshot.tables:
        try:
            with s.conn.transaction():
                now = _fingerprint(s.conn, before.table)
        except psycopg.errors.UndefinedTable:
            changed.append(before.table)
            desc.append(f"{before.table} is missing")
            continue
        if now.rows != before.rows:
            changed.append(before.table)
            desc.append(f"{before.table} rows {before.rows} -> {now.rows}")
        elif now.fingerprint != before.fingerprint:
            changed.append(before.table)
            desc.append(f"{before.table} content changed ({before.rows} rows)")
    names = ", ".join(t.table for t in snapshot.tables)
    if changed:
        return CheckResult("snapshot_unchanged", "fail", "; ".join(desc), tuple(changed), len(changed))
    return CheckResult("snapshot_unchanged", "pass", f"row counts and fingerprints unchanged: {names}")


def _dsn_of(conn: psycopg.Connection) -> str:
    p = conn.info.get_parameters()
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in p.items() if k in ("host", "port", "user", "dbname")})


def check_pg_amcheck(s: Scans, rt: Any = None, dsn: str | None = None) -> CheckResult:
    """Run the pg_amcheck binary of `rt` (heap + btree, heapallindexed; installs the amcheck extension if missing)."""
    if rt is None or not getattr(rt, "has", lambda _: False)("pg_amcheck"):
        return CheckResult("pg_amcheck", "warning", "pg_amcheck not available (no PostgreSQL runtime given)")
    target = dsn or _dsn_of(s.conn)
    try:
        r = rt.run("pg_amcheck", ["--install-missing", "--heapallindexed", target],
                   timeout=600, check=False)
    except Exception as e:  # LabError (timeout, missing binary), OSError
        return CheckResult("pg_amcheck", "warning", f"pg_amcheck could not run: {e}")
    out = (r.stdout + r.stderr).strip()
    lines = [ln for ln in out.splitlines() if ln.strip()]
    # exit 0: every check passed; 2: corruption found; 1: it could not run (connection, permissions)
    if r.returncode == 0:
        return CheckResult("pg_amcheck", "pass", "pg_amcheck (heap + btree, heapallindexed) found no corruption")
    if r.returncode == 2:
        return CheckResult("pg_amcheck", "fail", f"pg_amcheck reported corruption: {' | '.join(lines[:5])}",
                           tuple(lines[:MAX_NAMED]), len(lines))
    return CheckResult("pg_amcheck", "warning",
                       f"pg_amcheck exited {r.returncode}: {' | '.join(lines[-3:]) or 'no output'}")


# -- running --------------------------------------------------------------------------------------

def _guard(name: str, fn: Callable[[], CheckResult], conn: psycopg.Connection) -> CheckResult:
    """Run one check in a savepoint, timed; a check that cannot run is a fail (integrity is not proven), never a raise."""
    t0 = time.perf_counter()
    try:
        with conn.transaction():
            r = fn()
    except psycopg.errors.UndefinedTable as e:
        r = CheckResult(name, "fail", f"missing table: {str(e).splitlines()[0]}")
    except psycopg.Error as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        r = CheckResult(name, "fail", f"check could not run: {type(e).__name__}: {msg}")
    except Exception as e:  # a finding never raises
        r = CheckResult(name, "fail", f"check failed to run: {type(e).__name__}: {e}")
    return CheckResult(r.check, r.status, r.details, r.offending, r.count, time.perf_counter() - t0)


def run_all(conn: psycopg.Connection, *, snapshot: Snapshot | None = None, rt: Any = None,
            dsn: str | None = None, only: Iterable[str] | None = None) -> list[CheckResult]:
    """Run every check (or those in `only`), each timed, in one read-only repeatable-read snapshot."""
    wanted = list(CHECK_NAMES) if only is None else [n for n in CHECK_NAMES if n in set(only)]
    unknown = set(only or ()) - set(CHECK_NAMES)
    if unknown:
        raise ValueError(f"unknown integrity check(s): {sorted(unknown)}; known: {', '.join(CHECK_NAMES)}")
    s = Scans(conn)
    fns: dict[str, Callable[[], CheckResult]] = {
        "companies_exist": lambda: check_companies_exist(s),
        "vouchers_balanced": lambda: check_vouchers_balanced(s),
        "account_hierarchy_no_orphans": lambda: check_account_hierarchy(s),
        "foreign_keys_valid": lambda: check_foreign_keys(s),
        "audit_sequence_gap_free": lambda: check_audit_sequence(s),
        "invoice_numbers_gap_free": lambda: check_invoice_numbers(s),
        "snapshot_unchanged": lambda: check_snapshot(s, snapshot),
        "pg_amcheck": lambda: check_pg_amcheck(s, rt, dsn),
    }
    results: list[CheckResult] = []
    sql_checks = [n for n in wanted if n != "pg_amcheck"]
    if sql_checks:
        with contextlib.ExitStack() as stack:
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                # one consistent view for every check (counters vs. max(seq) must not race the workload)
                stack.enter_context(conn.transaction())
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for name in sql_checks:
                results.append(_guard(name, fns[name], conn))
    if "pg_amcheck" in wanted:
        results.append(_guard("pg_amcheck", fns["pg_amcheck"], conn))
    return results


def run_check(conn: psycopg.Connection, name: str, **kwargs: Any) -> CheckResult:
    """Run one check by name (see CHECK_NAMES)."""
    return run_all(conn, only=(name,), **kwargs)[0]


__all__ = ["CHECK_NAMES", "SNAPSHOT_TABLES", "CheckResult", "Snapshot", "TableFingerprint", "run_all",
           "run_check", "take_snapshot"]
