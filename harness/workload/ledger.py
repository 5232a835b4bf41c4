"""Ledger writers (the Jepsen client): create vouchers with unique request ids through the global endpoint and record every operation."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any, Protocol

from harness.workload.loop import BackgroundLoop, EndpointTasks, WorkloadError

OUTCOME_HEADER = "x-drill-outcome"
REGION_HEADER = "x-drill-region"
NOT_APPLIED = "not-applied"

#: error kinds of a request that got no response (see `error_kind`)
ERR_CONNECT = "connect"      # nothing was sent: connection refused, connect timeout, no pool slot
ERR_TIMEOUT = "timeout"      # the request may have been sent; no answer in time
ERR_TRANSPORT = "transport"  # the connection broke after the request may have been sent


class Recorder(Protocol):
    """What the writers need of a timeline (`harness.core.timeline.Timeline` fits)."""

    def record_op(self, process: str, type: str, key: str, f: str = "write",
                  value: Mapping[str, Any] | None = None, t: float | None = None) -> Any: ...


class NullRecorder:
    """A recorder that keeps nothing: the same code path, unrecorded (used to measure recording overhead)."""

    def record_op(self, process: str, type: str, key: str, f: str = "write",
                  value: Mapping[str, Any] | None = None, t: float | None = None) -> None:
        return None

    def append(self, kind: str, event: str, data: Mapping[str, Any] | None = None, t: float | None = None) -> None:
        return None


# -- classification (pure) ---------------------------------------------------------------

def classify(status: int | None, *, outcome: str | None = None, error: str | None = None) -> str:
    """Jepsen outcome of one write: `ok`, `fail` (definitely not applied) or `indeterminate`.

    `status` is the HTTP status (None when no response came), `outcome` the value of the
    `X-Drill-Outcome` header, `error` the kind of transport error (`ERR_CONNECT`,
    `ERR_TIMEOUT`, `ERR_TRANSPORT`) when there was no response.

    - no response: nothing sent (`connect`) -> fail; timeout or broken connection -> indeterminate;
    - 2xx -> ok (an acknowledgement wins over any other header);
    - `X-Drill-Outcome: not-applied` (router without a healthy target, app failed before COMMIT) -> fail;
    - 4xx -> fail (the request was refused), except 408 and 499, which say the exchange was cut while the
      server may still have been working on it -> indeterminate; any other status (5xx, unexpected
      1xx/3xx) -> indeterminate.
    """
    if status is None:
        return "fail" if error == ERR_CONNECT else "indeterminate"
    if 200 <= status < 300:
        return "ok"
    if outcome is not None and outcome.strip().lower() == NOT_APPLIED:
        return "fail"
    if 400 <= status < 500 and status not in (408, 499):
        return "fail"
    return "indeterminate"


def error_kind(exc: BaseException) -> str:
    """Map a client exception to an error kind for `classify` (httpx, or plain OS errors)."""
    import httpx

    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, ConnectionRefusedError)):
        return ERR_CONNECT
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return ERR_TIMEOUT
    return ERR_TRANSPORT


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the writers ------------------------------------------------------------------------

class LedgerWriters(EndpointTasks[dict[str, int]]):
    """`writers` concurrent clients, each creating balanced 2-line vouchers back to back (or at a paced total rate).

    One `httpx.AsyncClient` on a background loop; by default over `LeanTransport` (HTTP/1.1
    keep-alive on asyncio streams), `transport="httpx"` uses httpx's stock transport.
    After an op that is not `ok` a writer pauses `fail_backoff_s` (default 10 ms), so an
    endpoint that fails instantly is not hammered at thousands of requests per second
    (that would starve the lab's own failover of CPU and bloat the history).
    Each op is recorded as `invoke` then exactly one of `ok` / `fail` / `indeterminate`,
    keyed by the voucher's `request_id` = `f"{run_id}-w{i}-{n}"`.
    """

    MAX_LAG_S = 1.0  # a paced run that falls further behind skips the missed slots instead of bursting

    def __init__(self, base_url: str, timeline: Recorder, *, run_id: str, writers: int = 4,
                 rate_per_s: float | None = None, company_id: int, account_ids: Sequence[int],
                 timeout_s: float = 2.0, amount: str = "1000.00", headers: Mapping[str, str] | None = None,
                 loop: BackgroundLoop | None = None, transport: str = "lean",
                 fail_backoff_s: float = 0.01) -> None:
        if writers < 1:
            raise WorkloadError(f"writers must be >= 1, got {writers}")
        if rate_per_s is not None and rate_per_s <= 0:
            raise WorkloadError(f"rate_per_s must be > 0 or None, got {rate_per_s}")
        if len(account_ids) != 2 or account_ids[0] == account_ids[1]:
            raise WorkloadError(f"account_ids must be two distinct accounts (debit, credit), got {account_ids!r}")
        if not run_id or any(c.isspace() for c in run_id):
            raise WorkloadError(f"run_id must be a non-empty word, got {run_id!r}")
        super().__init__(base_url, timeline, timeout_s=timeout_s, transport=transport, loop=loop)
        self.run_id = run_id
        self.writers = writers
        self.rate_per_s = rate_per_s
        self.company_id = company_id
        self.account_ids = (int(account_ids[0]), int(account_ids[1]))
        self.fail_backoff_s = fail_backoff_s
        self._headers = {"content-type": "application/json", **dict(headers or {})}
        self._own_loop = loop is None
        self._next_n = [0] * writers
        self._busy = [False] * writers
        self._next_slot = 0.0
        self._interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self.counts = {"invoke": 0, "ok": 0, "fail": 0, "indeterminate": 0}
        lines = [
            {"account_id": self.account_ids[0], "debit": amount, "credit": "0.00"},
            {"account_id": self.account_ids[1], "debit": "0.00", "credit": amount},
        ]
        head = json.dumps({"company_id": company_id})[:-1] + ', "request_id": '
        tail = ", " + json.dumps({"voucher_date": date.today().isoformat(),
                                  "description": f"drill ledger {run_id}", "lines": lines})[1:]
        self._body_head = head
        self._body_tail = tail

    def body(self, key: str) -> bytes:
        """The JSON body of the voucher for `key` (built from a precomputed template)."""
        return (self._body_head + json.dumps(key) + self._body_tail).encode()

    # -- lifecycle (start / stop / running from EndpointTasks) ---------------------------
    loop_name = "drill-ledger"

    def _result(self) -> dict[str, int]:
        """The op counts (`stop()` returns them once in-flight ops are completed and classified)."""
        return dict(self.counts)

    @property
    def elapsed_s(self) -> float:
        if self._started_at is None:
            return 0.0
        return (self._stopped_at or time.monotonic()) - self._started_at

    # -- on the loop ----------------------------------------------------------------
    async def _start(self) -> None:
        self._open_client(self.writers, self._headers)
        self._next_slot = asyncio.get_running_loop().time()
        self._started_at, self._stopped_at = time.monotonic(), None
        self._tasks = [asyncio.create_task(self._writer(i), name=f"ledger w{i}") for i in range(self.writers)]

    async def _stop(self) -> None:
        self._stopping = True
        for i, task in enumerate(self._tasks):
            if not self._busy[i]:
                task.cancel()  # waiting for its pacing slot: no op is open
        # a request that outlives its own timeout is cancelled (and recorded indeterminate)
        await self._finish(self.timeout_s + 5.0)
        self._stopped_at = time.monotonic()

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = self._next_slot
        if slot < now - self.MAX_LAG_S:
            slot = now
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _writer(self, i: int) -> None:
        import httpx

        proc = f"w{i}"
        prefix = f"{self.run_id}-{proc}-"
        record = self.timeline.record_op
        post = self._client.post
        url = httpx.URL(self.base_url + "/vouchers")  # parsed once
        counts = self.counts
        busy = self._busy
        paced = self._interval > 0
        backoff = self.fail_backoff_s
        n = self._next_n[i]
        while not self._stopping:
            if paced:
                await self._pace()
                if self._stopping:
                    break
            key = prefix + str(n)
            n += 1
            self._next_n[i] = n
            content = self.body(key)
            busy[i] = True
            record(proc, "invoke", key)
            counts["invoke"] += 1
            try:
                resp = await post(url, content=content)
            except asyncio.CancelledError:
                record(proc, "indeterminate", key, value={"status": None, "error": "cancelled while in flight"})
                counts["indeterminate"] += 1
                busy[i] = False
                raise
            except Exception as e:  # every transport failure is classified, never dropped
                kind = classify(None, error=error_kind(e))
                record(proc, kind, key, value={"status": None, "error": describe(e)})
                counts[kind] += 1
            else:
                status = resp.status_code
                rh = resp.headers
                kind = classify(status, outcome=rh.get(OUTCOME_HEADER))
                if kind == "ok":
                    record(proc, "ok", key, value={"status": status, "region": rh.get(REGION_HEADER)})
                else:
                    record(proc, kind, key, value={"status": status, "region": rh.get(REGION_HEADER),
                                                   "outcome": rh.get(OUTCOME_HEADER), "error": _snippet(resp)})
                counts[kind] += 1
            busy[i] = False
            if kind != "ok" and backoff > 0:
                await asyncio.sleep(backoff)  # cancellable by stop(): the op is already recorded


def _snippet(resp: Any, limit: int = 200) -> str:
    try:
        text = resp.text
    except Exception:  # undecodable body: the status says enough
        return ""
    return text[:limit]


# -- final read -------------------------------------------------------------------------

def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def final_read(dsn: str, run_id: str, *, connect_timeout_s: float = 5.0) -> set[str]:
    """Every request id of this run present in the database at `dsn` (read after quiescence, on the primary)."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout_s))) as conn:
            rows = conn.execute("SELECT request_id FROM vouchers WHERE request_id LIKE %s ESCAPE '\\'",
                                (_like_escape(run_id) + "-%",)).fetchall()
    except psycopg.Error as e:
        raise WorkloadError(f"final read of run {run_id!r} failed on {_redact_dsn(dsn)}: {e}") from e
    own = re.compile(re.escape(run_id) + r"-w[0-9]+-[0-9]+")  # not a longer run id that shares the prefix
    return {r[0] for r in rows if own.fullmatch(r[0])}


def invoice_key(company_id: Any, invoice_no: Any) -> str:
    """The op key of an issued tax invoice: "<company_id>:<invoice_no>" (numbers are gap-free per company)."""
    return f"{int(company_id)}:{int(invoice_no)}"


def final_read_invoices(dsn: str, issued: Mapping[str, str], *, connect_timeout_s: float = 5.0) -> set[str]:
    """Keys (see `invoice_key`) of the acknowledged invoices in `issued` present in the database at `dsn`.

    `issued` maps each key to the `popbill_ref` it was first acknowledged with. Only the numbers the
    run saw are read (`invoice_no = ANY(...)` per company). A number counts as present only when the
    stored row carries that same popbill_ref: after a failover that lost invoice N, the new primary's
    counter issues N again to a *different* invoice, and that one must not hide the loss.
    """
    import psycopg

    by_company: dict[int, list[int]] = {}
    for key in issued:
        cid, _, no = key.partition(":")
        by_company.setdefault(int(cid), []).append(int(no))
    present: set[str] = set()
    if not by_company:
        return present
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout_s))) as conn:
            for cid, numbers in sorted(by_company.items()):
                rows = conn.execute("SELECT company_id, invoice_no, popbill_ref FROM tax_invoices "
                                    "WHERE company_id = %s AND invoice_no = ANY(%s)", (cid, numbers)).fetchall()
                for company_id, invoice_no, ref in rows:
                    key = invoice_key(company_id, invoice_no)
                    if issued.get(key) == ref:
                        present.add(key)
    except psycopg.Error as e:
        raise WorkloadError(f"final read of tax invoices failed on {_redact_dsn(dsn)}: {e}") from e
    return present


def _redis_client(url: str, timeout_s: float) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # no client-side retries: a dead server must answer "unreachable" at once
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                decode_responses=True, retry=Retry(NoBackoff(), 0))


def find_primary_redis(topology: Mapping[str, Any], *, connect_timeout_s: float = 3.0) -> str:
    """The URL of the one region whose Redis/Valkey is reachable and a master (INFO replication role)."""
    import redis

    regions = topology.get("regions") or {}
    masters: list[str] = []
    seen: list[str] = []
    for name, region in regions.items():
        url = ((region or {}).get("redis") or {}).get("url")
        if not url:
            continue
        client = _redis_client(url, connect_timeout_s)
        try:
            role = str(client.info("replication").get("role", "?"))
        except redis.RedisError as e:
            seen.append(f"{name}: unreachable ({describe(e)})")
            continue
        finally:
            client.close()
        seen.append(f"{name}: {role}")
        if role == "master":
            masters.append(name)
    if len(masters) != 1:
        what = "no region" if not masters else f"{len(masters)} regions ({', '.join(masters)})"
        raise WorkloadError(f"expected exactly one Redis master, found {what}: {'; '.join(seen) or 'no URL'}")
    return regions[masters[0]]["redis"]["url"]


def final_read_sessions(redis_url: str, session_ids: Iterable[str], *, timeout_s: float = 5.0,
                        chunk: int = 1000) -> set[str]:
    """The ids among `session_ids` whose key `session:<id>` exists on the Redis at `redis_url` (pipelined EXISTS)."""
    import redis

    ids = sorted(set(session_ids))
    present: set[str] = set()
    if not ids:
        return present
    client = _redis_client(redis_url, timeout_s)
    try:
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            pipe = client.pipeline(transaction=False)
            for sid in part:
                pipe.exists(f"session:{sid}")
            present.update(sid for sid, n in zip(part, pipe.execute()) if n)
    except redis.RedisError as e:
        raise WorkloadError(f"final read of sessions failed on {_redact_url(redis_url)}: {describe(e)}") from e
    finally:
        client.close()
    return present


def find_primary_dsn(topology: Mapping[str, Any], *, connect_timeout_s: float = 3.0) -> str:
    """The DSN of the one region whose PostgreSQL is reachable and not in recovery."""
    import psycopg

    regions = topology.get("regions") or {}
    primaries: list[str] = []
    primary_dsns: list[str] = []
    seen: list[str] = []
    # each region's PostgreSQL nodes: its primary node and, in the primary region, the in-region standby
    candidates = [(name, ((region or {}).get(key) or {}).get("dsn"))
                  for name, region in regions.items() for key in ("postgres", "postgres_standby")]
    for name, dsn in candidates:
        if not dsn:
            continue
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout_s))) as conn:
                in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error as e:
            seen.append(f"{name}: unreachable ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})")
            continue
        seen.append(f"{name}: {'standby' if in_recovery else 'primary'}")
        if not in_recovery:
            primaries.append(name)
            primary_dsns.append(dsn)
    if len(primaries) != 1:
        what = "no region" if not primaries else f"{len(primaries)} regions ({', '.join(primaries)})"
        raise WorkloadError(f"expected exactly one primary PostgreSQL, found {what}: {'; '.join(seen) or 'no DSN'}")
    return primary_dsns[0]


def _redact_dsn(dsn: str) -> str:
    return re.sub(r"(password=)\S+|(://[^:/@]+:)[^@]+@", lambda m: (m.group(1) or m.group(2)) + "***" +
                  ("" if m.group(1) else "@"), dsn)


def _redact_url(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]+@", r"\1***@", url)
