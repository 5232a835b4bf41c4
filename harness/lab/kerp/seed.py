"""Deterministic K-ERP reference data (companies, accounts, users, vouchers, audit log, tax invoices) with a size knob."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from importlib import resources

from harness.errors import LabError

RNG_SEED = 431_0707
LAB_PASSWORD = "drill-lab-password"
COMPANIES_PER_SCALE = 3
VOUCHERS_PER_SCALE = 200
USERS_PER_COMPANY = 2
TIERS = ("platinum", "gold", "silver")
KST = timezone(timedelta(hours=9))
EPOCH = datetime(2024, 1, 2, 9, 0, tzinfo=KST)
SEED_TABLES = ("companies", "accounts", "users", "vouchers", "voucher_lines", "counters", "audit_log", "tax_invoices")

# Chart of accounts template (계정과목): (code, name, kind, parent code or None).
ACCOUNT_TEMPLATE: tuple[tuple[str, str, str, str | None], ...] = (
    ("1000", "자산", "asset", None),
    ("1010", "현금", "asset", "1000"),
    ("1020", "보통예금", "asset", "1000"),
    ("1030", "외상매출금", "asset", "1000"),
    ("1040", "부가세대급금", "asset", "1000"),
    ("1050", "상품", "asset", "1000"),
    ("2000", "부채", "liability", None),
    ("2010", "외상매입금", "liability", "2000"),
    ("2020", "미지급금", "liability", "2000"),
    ("2030", "부가세예수금", "liability", "2000"),
    ("2040", "단기차입금", "liability", "2000"),
    ("3000", "자본", "equity", None),
    ("3010", "자본금", "equity", "3000"),
    ("3020", "이익잉여금", "equity", "3000"),
    ("4000", "수익", "revenue", None),
    ("4010", "상품매출", "revenue", "4000"),
    ("4020", "용역매출", "revenue", "4000"),
    ("4030", "이자수익", "revenue", "4000"),
    ("5000", "비용", "expense", None),
    ("5010", "급여", "expense", "5000"),
    ("5020", "임차료", "expense", "5000"),
    ("5030", "소모품비", "expense", "5000"),
    ("5040", "접대비", "expense", "5000"),
    ("5050", "감가상각비", "expense", "5000"),
)
ACCOUNTS_PER_COMPANY = len(ACCOUNT_TEMPLATE)
_LEAF_INDEXES = tuple(i for i, a in enumerate(ACCOUNT_TEMPLATE) if a[3] is not None)

_NAME_HEADS = ("한빛", "세종", "미래", "대한", "누리", "가람", "태평양", "동해", "한울", "새봄", "푸른", "금강")
_NAME_TAILS = ("상사", "전자", "물산", "건설", "테크", "식품", "유통", "화학", "정밀", "솔루션")
_DESCRIPTIONS = ("상품 매출", "사무용품 구입", "임차료 지급", "급여 지급", "외상대금 회수", "거래처 접대",
                 "차입금 상환", "용역 매출", "부가세 정산", "감가상각")


class SeedError(LabError):
    """The reference data could not be applied (e.g. the database is already seeded)."""


@dataclass(frozen=True)
class LabCredential:
    """A seeded login the workload can use."""

    email: str
    password: str
    user_id: int
    company_id: int


def company_ids(scale: int = 1) -> list[int]:
    """Ids of the companies `seed(conn, scale)` creates."""
    return list(range(1, COMPANIES_PER_SCALE * scale + 1))


def account_id(company_id: int, index: int) -> int:
    """Id of the `index`-th template account (0-based) of a company."""
    return (company_id - 1) * ACCOUNTS_PER_COMPANY + index + 1


def leaf_account_ids(company_id: int) -> list[int]:
    """Ids of the postable (non-root) accounts of a company, usable in voucher lines."""
    return [account_id(company_id, i) for i in _LEAF_INDEXES]


def user_email(company_id: int, n: int) -> str:
    return f"user{n}@company{company_id}.kerp.test"


def lab_credentials(scale: int = 1) -> list[LabCredential]:
    """Every seeded login (all share the lab password); the first is the workload's default."""
    return [LabCredential(user_email(c, n), LAB_PASSWORD, (c - 1) * USERS_PER_COMPANY + n, c)
            for c in company_ids(scale) for n in range(1, USERS_PER_COMPANY + 1)]


# -- password hashing (shared with the app) ---------------------------------------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@lru_cache(maxsize=64)
def hash_password(password: str, salt: bytes) -> str:
    """`scrypt$N$r$p$salt$hash` (hex); cached because the seed reuses one salt."""
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


@lru_cache(maxsize=256)
def verify_password(password: str, stored: str) -> bool:
    """Check a password against a `hash_password` string (cached: the lab logs in often)."""
    import hmac

    try:
        algo, n, r, p, salt_hex, hash_hex = stored.split("$")
        if algo != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
                                dklen=len(hash_hex) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), hash_hex)


# -- schema and seed ---------------------------------------------------------------------

def schema_sql() -> str:
    return resources.files("harness.lab.kerp").joinpath("schema.sql").read_text(encoding="utf-8")


def apply_schema(conn) -> None:
    """Create the K-ERP tables (idempotent: CREATE ... IF NOT EXISTS) and commit."""
    with conn.transaction():
        conn.execute(schema_sql())


def is_seeded(conn) -> bool:
    """True when the companies table already holds rows."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM companies)").fetchone()[0]


def _money(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(1, 500) * 1000).quantize(Decimal("0.01"))


def _lines(rng: random.Random, company_id: int) -> list[tuple[int, Decimal, Decimal]]:
    """2-4 balanced lines (account_id, debit, credit) on distinct leaf accounts."""
    n = rng.randint(2, 4)
    accounts = rng.sample(leaf_account_ids(company_id), n)
    n_debit = 1 if n == 2 else rng.randint(1, n - 1)
    zero = Decimal("0.00")
    debits = [_money(rng) for _ in range(n_debit)]
    total = sum(debits, zero)
    n_credit = n - n_debit
    credits: list[Decimal] = []
    rest = total
    for _ in range(n_credit - 1):
        part = (total / n_credit).quantize(Decimal("1")).quantize(Decimal("0.01"))
        credits.append(part)
        rest -= part
    credits.append(rest)
    rows = [(a, d, zero) for a, d in zip(accounts, debits)]
    rows += [(a, zero, c) for a, c in zip(accounts[n_debit:], credits)]
    return rows


def seed(conn, scale: int = 1, *, reset: bool = False) -> dict[str, int]:
    """Insert the deterministic reference data in one transaction; returns row counts per table.

    Refuses a database that already holds companies unless `reset` (which truncates every
    K-ERP table first). Explicit ids are used and the serial sequences are set past them.
    """
    if scale < 1:
        raise SeedError(f"seed scale must be >= 1, got {scale}")
    rng = random.Random(RNG_SEED)
    with conn.transaction():
        if reset:
            conn.execute("TRUNCATE " + ", ".join(SEED_TABLES) + " RESTART IDENTITY CASCADE")
        elif is_seeded(conn):
            raise SeedError("the K-ERP database is already seeded (pass reset=True to re-seed)")

        companies, accounts, users = [], [], []
        used_bns: set[str] = set()
        for cid in company_ids(scale):
            name = f"{rng.choice(_NAME_HEADS)}{rng.choice(_NAME_TAILS)} 주식회사 {cid}"
            while True:
                bn = f"{rng.randint(101, 899)}{rng.randint(81, 88)}{rng.randint(0, 99999):05d}"
                if bn not in used_bns:
                    used_bns.add(bn)
                    break
            companies.append((cid, name, bn, TIERS[(cid - 1) % 3], EPOCH - timedelta(days=400 - cid)))
            for i, (code, aname, kind, parent) in enumerate(ACCOUNT_TEMPLATE):
                pid = None
                if parent is not None:
                    pidx = next(j for j, a in enumerate(ACCOUNT_TEMPLATE) if a[0] == parent)
                    pid = account_id(cid, pidx)
                accounts.append((account_id(cid, i), cid, code, aname, kind, pid))
        salt = rng.randbytes(16)
        pw_hash = hash_password(LAB_PASSWORD, salt)
        for cred in lab_credentials(scale):
            role = "admin" if cred.user_id % USERS_PER_COMPANY == 1 else "accountant"
            users.append((cred.user_id, cred.company_id, cred.email, pw_hash, role))

        # Events in time order: vouchers and tax invoices interleaved, each with an audit row.
        vouchers, lines, invoices, audit = [], [], [], []
        line_id = 0
        n_vouchers = VOUCHERS_PER_SCALE * scale
        cids = company_ids(scale)
        by_company: dict[int, list[int]] = {c: [] for c in cids}
        at = EPOCH
        for vid in range(1, n_vouchers + 1):
            cid = rng.choice(cids)
            at = at + timedelta(seconds=rng.randint(30, 900))
            creator = (cid - 1) * USERS_PER_COMPANY + rng.randint(1, USERS_PER_COMPANY)
            vdate = at.date()
            vouchers.append((vid, cid, f"seed-{vid:08d}", vdate, rng.choice(_DESCRIPTIONS), creator, at))
            for no, (acc, debit, credit) in enumerate(_lines(rng, cid), start=1):
                line_id += 1
                lines.append((line_id, vid, no, acc, debit, credit))
            by_company[cid].append(vid)
            audit.append((len(audit) + 1, at, user_email(cid, (creator - 1) % USERS_PER_COMPANY + 1),
                          "create", "voucher", str(vid)))

        counters = []
        inv_id = 0
        for cid in cids:
            k = rng.randint(5, 15)  # per company; companies grow with scale
            for no in range(1, k + 1):
                inv_id += 1
                at = at + timedelta(seconds=rng.randint(30, 300))
                vid = rng.choice(by_company[cid]) if by_company[cid] and rng.random() < 0.7 else None
                ref = f"SEED{cid:04d}{no:06d}"
                invoices.append((inv_id, cid, no, vid, _money(rng), ref, at))
                audit.append((len(audit) + 1, at, user_email(cid, 1), "issue", "tax_invoice", f"{cid}:{no}"))
            counters.append((f"tax_invoice:{cid}", k))
        counters.append(("audit_log", len(audit)))

        with conn.cursor() as cur:
            for sql, rows in (
                ("COPY companies (id, name, business_no, tier, created_at) FROM STDIN", companies),
                ("COPY accounts (id, company_id, code, name, kind, parent_id) FROM STDIN", accounts),
                ("COPY users (id, company_id, email, password_hash, role) FROM STDIN", users),
                ("COPY vouchers (id, company_id, request_id, voucher_date, description, created_by, created_at)"
                 " FROM STDIN", vouchers),
                ("COPY voucher_lines (id, voucher_id, line_no, account_id, debit, credit) FROM STDIN", lines),
                ("COPY tax_invoices (id, company_id, invoice_no, voucher_id, amount, popbill_ref, issued_at)"
                 " FROM STDIN", invoices),
                ("COPY audit_log (seq, at, actor, action, entity, entity_id) FROM STDIN", audit),
                ("COPY counters (name, last_value) FROM STDIN", counters),
            ):
                with cur.copy(sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            for table in ("vouchers", "voucher_lines", "tax_invoices"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                            f" (SELECT coalesce(max(id), 0) + 1 FROM {table}), false)")
    return {"companies": len(companies), "accounts": len(accounts), "users": len(users),
            "vouchers": len(vouchers), "voucher_lines": len(lines), "tax_invoices": len(invoices),
            "audit_log": len(audit), "counters": len(counters)}


_FINGERPRINT_ORDER = {
    "companies": "id", "accounts": "id", "users": "id", "vouchers": "id", "voucher_lines": "id",
    "counters": "name", "audit_log": "seq", "tax_invoices": "id",
}


def table_fingerprints(conn, tables: tuple[str, ...] = SEED_TABLES) -> dict[str, str]:
    """md5 of every row's text in key order, per table (one scan each)."""
    out = {}
    for table in tables:
        order = _FINGERPRINT_ORDER[table]
        row = conn.execute(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.{order}), ''))"
                           f" FROM {table} t").fetchone()
        out[table] = row[0]
    return out


__all__ = [
    "ACCOUNT_TEMPLATE", "LAB_PASSWORD", "LabCredential", "SeedError", "account_id", "apply_schema", "company_ids",
    "hash_password", "is_seeded", "lab_credentials", "leaf_account_ids", "seed", "table_fingerprints",
    "user_email", "verify_password",
]
