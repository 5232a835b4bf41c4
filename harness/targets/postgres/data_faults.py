"""Data faults of the K-ERP database: the disaster is the change itself, made outside the application.

* `corrupt_voucher_lines`: a few vouchers' first line amounts silently changed by an UPDATE (the vouchers no
  longer balance), as a faulty batch job or a mistaken manual fix would.
* `encrypt_tenant`: ransomware on one tenant (company): its text columns overwritten with ciphertext under a
  key that is thrown away, its voucher lines deleted.

Each is recorded in the fault ledger first, with what it touches (row ids, the time before the change) and a
named rollback that recovers through the backups: a point-in-time recovery into a NEW server as of just before
the fault, and the damaged rows re-copied from it into the live database (harness.drill.data_recovery; named
here by reference, the repair being a drill of the backup layer). Nothing is dropped or truncated.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

from harness.errors import HarnessError, UsageError
from harness.safety import guard
from harness.targets import _lab
from harness.targets.postgres import ops

__all__ = ["CORRUPT_DELTA", "ENCRYPTED_COLUMNS", "corrupt_voucher_lines", "encrypt_tenant", "live_primary_node", "live_primary_region"]

#: what the corruption adds to a line's amount (debit when it has one, else credit)
CORRUPT_DELTA = "777.77"
#: the text columns the ransomware overwrites with ciphertext, per tenant table
ENCRYPTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "companies": ("name", "business_no"),
    "accounts": ("code", "name"),
    "users": ("email", "password_hash"),
    "vouchers": ("description",),
    "tax_invoices": ("popbill_ref",),
}
_TENANT_WHERE = {"companies": "id = %s", "accounts": "company_id = %s", "users": "company_id = %s",
                 "vouchers": "company_id = %s", "tax_invoices": "company_id = %s"}
#: the gate the faults need: their rollback is a point-in-time recovery (approved with the fault, used by it)
RECOVERY_GATE = "database_point_in_time_recovery"
REPAIR_CORRUPTION = "harness.drill.data_recovery:repair_corruption"
RECOVER_TENANT = "harness.drill.data_recovery:recover_tenant"


def live_primary_node(t: _lab.LabTarget, timeout_s: float = 30.0) -> str:
    """The PostgreSQL node that is the writable primary: a region's, or the in-region standby after a Multi-AZ
    failover (asked again for up to `timeout_s` while none answers: a loaded server may miss a connection
    timeout); HarnessError when none is."""
    deadline = time.monotonic() + timeout_s
    names = [n for n in ("primary", _lab.INREGION, "dr") if n in t.nodes]
    while True:
        primaries = [name for name in names if ops.role(lambda n=name: t.pg_node(n, timeout=10)) == "primary"]
        if len(primaries) > 1:
            raise HarnessError(f"{len(primaries)} PostgreSQL nodes are primaries ({', '.join(primaries)}): "
                               "not touching data until the split brain is resolved")
        if primaries:
            return primaries[0]
        if time.monotonic() >= deadline:
            raise HarnessError(f"no PostgreSQL node ({', '.join(names)}) is a running primary")
        time.sleep(1.0)


def live_primary_region(t: _lab.LabTarget, timeout_s: float = 30.0) -> str:
    """The region whose PostgreSQL serves writes (the region of live_primary_node)."""
    return _lab.region_of_node(live_primary_node(t, timeout_s))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def corrupt_voucher_lines(vouchers: int = 5, older_than_s: float = 1.0, configuration: dict | None = None,
                          secrets: dict | None = None) -> dict[str, Any]:
    """Add CORRUPT_DELTA to the first line of the `vouchers` newest vouchers created at least `older_than_s`
    ago (so a recovery to just before the fault holds them), by a plain UPDATE on the live primary.

    The ledger entry names the lines and vouchers and the time before the UPDATE. Rollback: repair_corruption
    (point-in-time recovery to that time into a new server, the lines re-copied from it)."""
    if not 1 <= int(vouchers) <= 1000:
        raise UsageError(f"vouchers={vouchers!r} must be 1..1000")
    t = _lab.resolve(configuration)
    node = live_primary_node(t)
    region = _lab.region_of_node(node)
    with t.pg_node(node, timeout=10) as c:
        rows = c.execute(
            "SELECT l.id, l.voucher_id FROM voucher_lines l JOIN (SELECT id FROM vouchers "
            "WHERE created_at < clock_timestamp() - make_interval(secs => %s) ORDER BY id DESC LIMIT %s) v "
            "ON v.id = l.voucher_id WHERE l.line_no = 1 ORDER BY l.voucher_id",
            (float(older_than_s), int(vouchers))).fetchall()
    if not rows:
        raise HarnessError(f"no voucher older than {older_than_s} s to corrupt")
    line_ids, voucher_ids = [r[0] for r in rows], [r[1] for r in rows]
    before = _now()
    inj = guard.inject("corrupt_voucher_lines", f"postgres:{region}:kerp.voucher_lines",
                       revert=(REPAIR_CORRUPTION, {"line_ids": line_ids, "before": before.isoformat()}),
                       gate=RECOVERY_GATE, regions=(region,), components=("postgresql",),
                       configuration=configuration, details={"table": "voucher_lines", "line_ids": line_ids, "voucher_ids": voucher_ids,
                                "before": before.isoformat(), "delta": CORRUPT_DELTA})
    if not inj.proceed:
        return inj.to_dict()
    with t.pg_node(node, timeout=10) as c:
        changed = c.execute(
            "UPDATE voucher_lines SET debit = CASE WHEN debit > 0 THEN debit + %(d)s::numeric ELSE debit END, "
            "credit = CASE WHEN debit > 0 THEN credit ELSE credit + %(d)s::numeric END WHERE id = ANY(%(ids)s)",
            {"d": CORRUPT_DELTA, "ids": line_ids}).rowcount
        at = c.execute("SELECT clock_timestamp()").fetchone()[0]
    return {"region": region, "line_ids": line_ids, "voucher_ids": voucher_ids, "changed": changed,
            "before": before.isoformat(), "committed_at": at.isoformat(), "fault_id": inj.entry.id}


def encrypt_tenant(company_id: int, configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Ransomware on company `company_id`: every text column in ENCRYPTED_COLUMNS of its rows replaced by
    AES-GCM ciphertext (base64) under a random key that is never kept, and its voucher lines deleted, in one
    transaction on the live primary. Rollback: recover_tenant (point-in-time recovery to the time before the
    attack into a new server, the company's rows restored from it)."""
    import base64

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cid = int(company_id)
    t = _lab.resolve(configuration)
    node = live_primary_node(t)
    region = _lab.region_of_node(node)
    with t.pg_node(node, timeout=10) as c:
        if c.execute("SELECT 1 FROM companies WHERE id = %s", (cid,)).fetchone() is None:
            raise UsageError(f"company_id {company_id!r} is not a company of the lab's database")
        counts = {tbl: c.execute(f"SELECT count(*) FROM {tbl} WHERE {_TENANT_WHERE[tbl]}", (cid,)).fetchone()[0]
                  for tbl in ENCRYPTED_COLUMNS}
        counts["voucher_lines"] = c.execute("SELECT count(*) FROM voucher_lines WHERE voucher_id IN "
                                            "(SELECT id FROM vouchers WHERE company_id = %s)", (cid,)).fetchone()[0]
    before = _now()
    inj = guard.inject("encrypt_tenant", f"postgres:{region}:kerp.company:{cid}",
                       revert=(RECOVER_TENANT, {"company_id": cid, "before": before.isoformat()}),
                       gate=RECOVERY_GATE, regions=(region,), components=("postgresql",),
                       configuration=configuration, details={"company_id": cid, "rows": counts, "before": before.isoformat(),
                                "encrypted_columns": {k: list(v) for k, v in ENCRYPTED_COLUMNS.items()},
                                "deleted": ["voucher_lines"]})
    if not inj.proceed:
        return inj.to_dict()
    aead = AESGCM(AESGCM.generate_key(bit_length=256))  # the key is never stored: only a backup brings data back

    def seal(text: str) -> str:
        nonce = os.urandom(12)
        return "ENC:" + base64.b64encode(nonce + aead.encrypt(nonce, text.encode(), None)).decode()

    encrypted: dict[str, int] = {}
    with t.pg_node(node, timeout=10, autocommit=False) as c:
        for tbl, cols in ENCRYPTED_COLUMNS.items():
            rows = c.execute(f"SELECT id, {', '.join(cols)} FROM {tbl} WHERE {_TENANT_WHERE[tbl]}",
                             (cid,)).fetchall()
            sets = ", ".join(f"{col} = %s" for col in cols)
            with c.cursor() as cur:
                cur.executemany(f"UPDATE {tbl} SET {sets} WHERE id = %s",
                                [(*(seal(v) for v in r[1:]), r[0]) for r in rows])
            encrypted[tbl] = len(rows)
        deleted = c.execute("DELETE FROM voucher_lines WHERE voucher_id IN (SELECT id FROM vouchers "
                            "WHERE company_id = %s)", (cid,)).rowcount
        c.commit()
        at = c.execute("SELECT clock_timestamp()").fetchone()[0]
    return {"region": region, "company_id": cid, "encrypted": encrypted, "deleted": {"voucher_lines": deleted},
            "before": before.isoformat(), "committed_at": at.isoformat(), "fault_id": inj.entry.id}
