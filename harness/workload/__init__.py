"""The workload: ledger writers and service probes that use the system through the global endpoint and record every operation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.workload.ledger import (
    LedgerWriters,
    NullRecorder,
    WorkloadError,
    classify,
    error_kind,
    final_read,
    final_read_invoices,
    final_read_sessions,
    find_primary_dsn,
    find_primary_redis,
)
from harness.workload.loop import BackgroundLoop
from harness.workload.probes import SERVICES, ProbeResult, ServiceProbes

__all__ = [
    "SERVICES", "BackgroundLoop", "LedgerWriters", "NullRecorder", "ProbeResult", "ServiceProbes", "Workload",
    "WorkloadError", "classify", "error_kind", "final_read", "final_read_invoices", "final_read_sessions",
    "find_primary_dsn", "find_primary_redis",
]

#: The op `f` of each data set the workload writes, and the final read that finds it.
FINAL_READS = ("write", "invoice", "session")


def _lab_defaults(company_id: int | None) -> tuple[tuple[str, str], int, tuple[int, int]]:
    """Seeded login, company and (debit, credit) accounts of the embedded lab."""
    from harness.lab.kerp.seed import ACCOUNT_TEMPLATE, account_id, lab_credentials

    creds = lab_credentials()
    cred = next((c for c in creds if company_id is None or c.company_id == company_id), creds[0])
    cid = company_id if company_id is not None else cred.company_id
    codes = [a[0] for a in ACCOUNT_TEMPLATE]
    # 현금 (cash) debited, 상품매출 (sales) credited
    return (cred.email, cred.password), cid, (account_id(cid, codes.index("1010")), account_id(cid, codes.index("4010")))


def _seeded_voucher_id(dsn: str, company_id: int) -> int:
    """Id of the first seeded voucher of the company (falls back to voucher 1)."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SELECT min(id) FROM vouchers WHERE company_id = %s AND request_id LIKE 'seed-%%'",
                               (company_id,)).fetchone()
    except psycopg.Error as e:
        raise WorkloadError(f"cannot find a seeded voucher of company {company_id}: {e}") from e
    return int(row[0]) if row and row[0] is not None else 1


class Workload:
    """Ledger writers plus service probes on one shared background loop, wired from a topology dict."""

    def __init__(self, writers: LedgerWriters | None, probes: ServiceProbes | None, topology: Mapping[str, Any],
                 loop: BackgroundLoop) -> None:
        self.writers = writers
        self.probes = probes
        self.topology = topology
        self.loop = loop
        #: f -> why its final read failed (set by final_read_all; that f is then absent from its result)
        self.final_read_errors: dict[str, str] = {}
        #: where final_read_all read: {"postgres": dsn-region, "redis": region}
        self.final_read_regions: dict[str, str | None] = {}

    @classmethod
    def from_topology(cls, topology: Mapping[str, Any], timeline: Any, *, run_id: str, writers: int = 4,
                      rate_per_s: float | None = None, services: Iterable[str] | None = None,
                      probe_interval_s: float = 0.1, probe_timeout_s: float = 1.0, write_timeout_s: float = 2.0,
                      credentials: tuple[str, str] | None = None, company_id: int | None = None,
                      account_ids: Sequence[int] | None = None, voucher_id: int | None = None,
                      with_writers: bool = True, with_probes: bool = True, transport: str = "lean",
                      probe_recorder: Any = None) -> "Workload":
        """Writers and probes against `topology["router"]["url"]`; login, company, accounts default to the lab seed.

        `probe_recorder` (default: `timeline`) receives the probe events; the records the probes
        write (tax invoices, sessions) are ops in `timeline`, beside the writers' vouchers.
        """
        try:
            base_url = topology["router"]["url"]
        except (KeyError, TypeError) as e:
            raise WorkloadError("topology has no router.url (the global endpoint)") from e
        lab_creds, cid, lab_accounts = _lab_defaults(company_id)
        loop = BackgroundLoop(f"drill-workload-{run_id}")
        w = p = None
        if with_writers:
            w = LedgerWriters(base_url, timeline, run_id=run_id, writers=writers, rate_per_s=rate_per_s,
                              company_id=cid, account_ids=tuple(account_ids or lab_accounts),
                              timeout_s=write_timeout_s, loop=loop, transport=transport)
        if with_probes:
            if voucher_id is None:
                voucher_id = _seeded_voucher_id(find_primary_dsn(topology), cid)
            p = ServiceProbes(base_url, timeline if probe_recorder is None else probe_recorder, services=services, interval_s=probe_interval_s,
                              timeout_s=probe_timeout_s, credentials=credentials or lab_creds, company_id=cid,
                              voucher_id=voucher_id, loop=loop, transport=transport, ops=timeline)
        return cls(w, p, topology, loop)

    def start(self) -> "Workload":
        if self.probes is not None:
            self.probes.start()
        if self.writers is not None:
            try:
                self.writers.start()
            except BaseException:
                if self.probes is not None:
                    self.probes.stop()
                raise
        return self

    def stop(self) -> dict[str, Any]:
        """Stop writers then probes; returns their counts."""
        out: dict[str, Any] = {}
        try:
            if self.writers is not None:
                out["writes"] = self.writers.stop()
        finally:
            if self.probes is not None:
                out["probes"] = self.probes.stop()
        return out

    def final_read(self, run_id: str | None = None) -> set[str]:
        """Keys of this run present on whichever database is primary now."""
        rid = run_id or (self.writers.run_id if self.writers is not None else None)
        if rid is None:
            raise WorkloadError("final_read needs a run_id (this workload has no writers)")
        return final_read(find_primary_dsn(self.topology), rid)

    def final_read_all(self, run_id: str | None = None, *, dsn: str | None = None) -> dict[str, set[str]]:
        """Every data set of this run, read where it lives now: {f: keys present}.

        - "write": the writers' voucher request ids on the primary PostgreSQL (raises WorkloadError if
          that read fails, as `final_read` does);
        - "invoice": the tax invoices the tax-invoice probe saw acknowledged, present with the same
          popbill_ref on the primary PostgreSQL (when that service is probed);
        - "session": the sessions the authentication probe saw acknowledged whose `session:<id>` key
          exists on the Redis that is master now (when that service is probed).
        A failed invoice or session read leaves its f out and says why in `final_read_errors`
        (the RPO of that service is then not measured, never guessed).
        """
        self.final_read_errors = {}
        regions = self.topology.get("regions") or {}
        dsn = dsn or find_primary_dsn(self.topology)
        self.final_read_regions = {"postgres": next((r for r, v in regions.items()
                                                     if ((v or {}).get("postgres") or {}).get("dsn") == dsn), None)}
        out: dict[str, set[str]] = {"write": self._final_read_writes(run_id, dsn)}
        probes = self.probes
        if probes is None:
            return out
        if "tax-invoice-service" in probes.services:
            try:
                out["invoice"] = final_read_invoices(dsn, dict(probes.invoices))
            except WorkloadError as e:
                self.final_read_errors["invoice"] = str(e)
        if "authentication" in probes.services:
            try:
                url = find_primary_redis(self.topology)
                self.final_read_regions["redis"] = next(
                    (r for r, v in regions.items() if ((v or {}).get("redis") or {}).get("url") == url), None)
                out["session"] = final_read_sessions(url, list(probes.sessions))
            except WorkloadError as e:
                self.final_read_errors["session"] = str(e)
        return out

    def _final_read_writes(self, run_id: str | None, dsn: str) -> set[str]:
        rid = run_id or (self.writers.run_id if self.writers is not None else None)
        if rid is None:
            raise WorkloadError("final_read needs a run_id (this workload has no writers)")
        return final_read(dsn, rid)

    def __enter__(self) -> "Workload":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
