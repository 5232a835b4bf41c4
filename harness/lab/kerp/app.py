"""The reference K-ERP ASGI app (Starlette): JWT (ES256, rotatable keys) + Redis sessions, vouchers, gap-free tax
invoices via Popbill, /health, the ops API that rotates the signing key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import jwt
import psycopg
import redis.asyncio as aioredis
from jwt.algorithms import ECAlgorithm
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from psycopg import errors as pgerrors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from harness.errors import HarnessError
from harness.lab.kerp import keyring
from harness.lab.kerp.model import InvalidRequest, parse_login, parse_tax_invoice, parse_voucher
from harness.lab.kerp.seed import verify_password

log = logging.getLogger("harness.lab.kerp")


# -- configuration and errors ---------------------------------------------------------

@dataclass(frozen=True)
class AppConfig:
    """Everything one app replica needs; secrets are never logged."""

    region: str
    replica: int
    dsn: str
    redis_url: str
    popbill_url: str
    jwt_secret: str  # wraps the signing keys stored in the database (keyring.wrapper)
    ops_token: str | None = None  # bearer token of the ops API (/ops/...); None: the ops API answers 404
    key_refresh_s: float = 0.5  # how often a replica reloads the key ring
    pool_size: int = 8
    session_ttl_s: int = 3600
    db_timeout_s: float = 2.0
    statement_timeout_ms: int = 1750
    health_timeout_s: float = 0.5
    popbill_timeout_s: float = 2.0
    redis_timeout_s: float = 1.0


class DependencyDown(HarnessError):
    """A dependency (PostgreSQL, Redis) is unreachable, read-only or too slow: answer 503."""

    def __init__(self, dependency: str, detail: str, *, indeterminate: bool = False):
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail
        # True when a write may have been applied (connection lost or deadline hit after sending it).
        self.indeterminate = indeterminate


class PopbillFailed(HarnessError):
    """The Popbill e-invoice API failed or timed out: answer 502, nothing committed."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# -- PostgreSQL pool --------------------------------------------------------------------

# Connection-level failures: the connection is unusable (and so, likely, are its idle peers).
_CONN_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
# The server answers but cannot take writes now: a standby, shutting down, cancelled by a timeout.
_UNAVAILABLE_SQLSTATE = (
    pgerrors.ReadOnlySqlTransaction,
    pgerrors.QueryCanceled,
    pgerrors.AdminShutdown,
    pgerrors.CannotConnectNow,
    pgerrors.LockNotAvailable,
    pgerrors.SerializationFailure,
    pgerrors.DeadlockDetected,
)


class PgPool:
    """A small pool of autocommit AsyncConnections that drops broken connections and reconnects on demand.

    (psycopg_pool is not a dependency of drill; this is the part of it the app needs.)
    """

    def __init__(self, dsn: str, size: int, *, connect_timeout_s: float = 2.0, acquire_timeout_s: float = 1.5,
                 statement_timeout_ms: int = 2000, application_name: str = "kerp"):
        self._dsn = dsn
        self._size = size
        self._connect_timeout_s = connect_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._kwargs = {
            "connect_timeout": max(2, int(connect_timeout_s)),
            "application_name": application_name,
            # below the client deadline, so the server cancels first and the outcome stays definite
            "options": f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={statement_timeout_ms}"
                       " -c idle_in_transaction_session_timeout=10000",
        }
        self._idle: list[psycopg.AsyncConnection] = []
        self._sem: asyncio.Semaphore | None = None
        self._generation = 0

    @property
    def size(self) -> int:
        return self._size

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._size)
        return self._sem

    async def connect(self) -> psycopg.AsyncConnection:
        try:
            return await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self._dsn, autocommit=True, prepare_threshold=0, **self._kwargs),
                self._connect_timeout_s)
        except TimeoutError as e:
            raise DependencyDown("postgres", f"connect timed out after {self._connect_timeout_s}s") from e
        except _CONN_ERRORS as e:
            raise DependencyDown("postgres", _one_line(e)) from e

    def flush(self) -> None:
        """Close every idle connection (after a connection-level failure, e.g. a restart or failover)."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)

    @asynccontextmanager
    async def connection(self):
        """Yield (connection, reused); broken connections are closed, healthy ones go back to the pool."""
        sem = self._semaphore()
        try:
            await asyncio.wait_for(sem.acquire(), self._acquire_timeout_s)
        except TimeoutError as e:
            raise DependencyDown("postgres", f"no pool connection within {self._acquire_timeout_s}s") from e
        conn = None
        try:
            reused = False
            while self._idle:
                candidate = self._idle.pop()
                if candidate.closed or candidate.broken:
                    _close_quietly(candidate)
                    continue
                conn, reused = candidate, True
                break
            if conn is None:
                conn = await self.connect()
            generation = self._generation
            keep = False
            try:
                yield conn, reused
                keep = True
            except (psycopg.Error, HarnessError):
                keep = True  # e.g. a constraint violation or a rolled-back block: fine if the state says so
                raise
            finally:
                # Cancelled or timed out mid-query: the protocol state is unknown, never reuse.
                if (keep and not conn.closed and not conn.broken and generation == self._generation
                        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE):
                    self._idle.append(conn)
                else:
                    _close_quietly(conn)
        finally:
            sem.release()

    async def run(self, fn: Callable[[psycopg.AsyncConnection], Awaitable[Any]], *, timeout_s: float,
                  retry: Callable[[], bool] | bool = True) -> Any:
        """Run `fn(conn)` with a deadline; map failures to DependencyDown.

        A connection-level failure on a reused connection (stale after a restart) flushes
        the pool and retries once on a fresh connection when `retry` (or `retry()`) allows it.
        """
        prior_unknown = False  # an earlier attempt lost its connection: its outcome is unknown
        for attempt in (1, 2):
            started = False
            try:
                async with asyncio.timeout(timeout_s):
                    async with self.connection() as (conn, reused):
                        started = True
                        try:
                            return await fn(conn)
                        except psycopg.Error as e:
                            if not _connection_lost(e, conn):
                                raise
                            self.flush()
                            may_retry = retry() if callable(retry) else retry
                            if attempt == 1 and reused and may_retry:
                                log.info("postgres connection lost (%s); retrying on a fresh one", _one_line(e))
                                prior_unknown = True
                                continue
                            raise DependencyDown("postgres", _one_line(e), indeterminate=True) from e
            except TimeoutError as e:
                raise DependencyDown("postgres", f"no answer within {timeout_s}s",
                                     indeterminate=started or prior_unknown) from e
            except _UNAVAILABLE_SQLSTATE as e:
                raise DependencyDown("postgres", _one_line(e), indeterminate=prior_unknown) from e
            except DependencyDown as e:
                if prior_unknown and not e.indeterminate:
                    raise DependencyDown(e.dependency, e.detail, indeterminate=True) from e
                raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.flush()


def _connection_lost(e: psycopg.Error, conn: psycopg.AsyncConnection) -> bool:
    """True for a dead connection (not for statement timeouts, lock timeouts or read-only errors)."""
    if conn.closed or conn.broken:
        return True
    state = getattr(e, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _close_quietly(conn: psycopg.AsyncConnection) -> None:
    try:
        conn.pgconn.finish()  # synchronous and immediate; AsyncConnection.close() may wait on a dead socket
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


# -- SQL --------------------------------------------------------------------------------

AUDIT_NEXT = ("INSERT INTO counters (name, last_value) SELECT 'audit_log', 1 FROM {src}"
              " ON CONFLICT (name) DO UPDATE SET last_value = counters.last_value + 1 RETURNING last_value")

# One statement (one round trip, atomic in autocommit): voucher, lines, audit counter, audit row.
# The hot audit counter row is locked last, so it is held only until the commit.
SQL_CREATE_VOUCHER = f"""
WITH v AS (
    INSERT INTO vouchers (company_id, request_id, voucher_date, description, created_by)
    VALUES (%(company_id)s, %(request_id)s, %(voucher_date)s, %(description)s, %(created_by)s)
    ON CONFLICT (request_id) DO NOTHING
    RETURNING id
), l AS (
    INSERT INTO voucher_lines (voucher_id, line_no, account_id, debit, credit)
    SELECT v.id, x.n, x.a, x.d, x.c
    FROM v, unnest(%(accounts)s::bigint[], %(debits)s::numeric[], %(credits)s::numeric[])
         WITH ORDINALITY AS x(a, d, c, n)
), c AS ({AUDIT_NEXT.format(src="v")})
INSERT INTO audit_log (seq, actor, action, entity, entity_id)
SELECT c.last_value, %(actor)s, 'create', 'voucher', v.id::text FROM c, v
RETURNING entity_id::bigint
"""

SQL_VOUCHER_BY_REQUEST = "SELECT id FROM vouchers WHERE request_id = %s"

_VOUCHER_SELECT = """
SELECT v.id, v.company_id, v.request_id, v.voucher_date::text, v.description, v.created_by, v.created_at::text,
       coalesce((SELECT json_agg(json_build_object('line_no', l.line_no, 'account_id', l.account_id,
                                                   'debit', l.debit::text, 'credit', l.credit::text)
                                 ORDER BY l.line_no)
                 FROM voucher_lines l WHERE l.voucher_id = v.id), '[]'::json)
FROM vouchers v WHERE {where}
"""
SQL_VOUCHER_BY_ID = _VOUCHER_SELECT.format(where="v.id = %s")
SQL_VOUCHER_FULL_BY_REQUEST = _VOUCHER_SELECT.format(where="v.request_id = %s")

SQL_NEXT_INVOICE_NO = """
WITH c AS (
    INSERT INTO counters (name, last_value) VALUES ('tax_invoice:' || %(company_id)s::bigint::text, 1)
    ON CONFLICT (name) DO UPDATE SET last_value = counters.last_value + 1
    RETURNING last_value
)
SELECT c.last_value, co.business_no, co.name FROM c, companies co WHERE co.id = %(company_id)s
"""

SQL_INSERT_INVOICE = f"""
WITH i AS (
    INSERT INTO tax_invoices (company_id, invoice_no, voucher_id, amount, popbill_ref)
    VALUES (%(company_id)s, %(invoice_no)s, %(voucher_id)s, %(amount)s, %(popbill_ref)s)
    RETURNING id
), c AS ({AUDIT_NEXT.format(src="i")})
INSERT INTO audit_log (seq, actor, action, entity, entity_id)
SELECT c.last_value, %(actor)s, 'issue', 'tax_invoice', %(company_id)s::bigint::text || ':' || %(invoice_no)s::text
FROM c
"""

SQL_USER_BY_EMAIL = "SELECT id, company_id, password_hash, role FROM users WHERE email = %s"

SQL_AUDIT = f"""
WITH c AS ({AUDIT_NEXT.format(src="(SELECT 1) x")})
INSERT INTO audit_log (seq, actor, action, entity, entity_id)
SELECT c.last_value, %(actor)s, %(action)s, %(entity)s, %(entity_id)s FROM c
RETURNING seq
"""


async def _audit(conn: psycopg.AsyncConnection, actor: str, action: str, entity: str, entity_id: str) -> int:
    """One audit_log row with the next gap-free seq, in the caller's transaction; returns its seq."""
    cur = await conn.execute(SQL_AUDIT, {"actor": actor, "action": action, "entity": entity, "entity_id": entity_id})
    return (await cur.fetchone())[0]


# -- metrics ----------------------------------------------------------------------------

class Metrics:
    """Request counts and latency per route (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("kerp_http_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("kerp_http_request_duration_seconds", "HTTP request latency", ["route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.dependency_errors = Counter("kerp_dependency_errors_total", "503s by dependency", ["dependency"],
                                         registry=self.registry)
        self.popbill_errors = Counter("kerp_popbill_errors_total", "Popbill failures (502)", registry=self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): count and time each request by route."""

    def __init__(self, app, metrics: Metrics, labels: dict[Any, str]):
        self.app = app
        self.metrics = metrics
        self.labels = labels

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = self.labels.get(scope.get("endpoint"), "other")
            self.metrics.requests.labels(route, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


# -- the app ----------------------------------------------------------------------------

def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), status_code=status,
                    media_type="application/json")


OUTCOME_HEADER = "x-drill-outcome"
NOT_APPLIED, INDETERMINATE = "not-applied", "indeterminate"


def _error(status: int, message: str, *, outcome: str = NOT_APPLIED, **extra: Any) -> Response:
    """An error body and `X-Drill-Outcome`: a write was definitely `not-applied`, or `indeterminate`."""
    resp = _json({"error": message, "outcome": outcome, **extra}, status)
    resp.headers[OUTCOME_HEADER] = outcome
    return resp


class KerpApp:
    """State of one replica: PostgreSQL pool, Redis client, Popbill client, metrics; the endpoints."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.pool = PgPool(config.dsn, config.pool_size, connect_timeout_s=config.db_timeout_s,
                           acquire_timeout_s=min(1.5, config.db_timeout_s),
                           statement_timeout_ms=config.statement_timeout_ms,
                           application_name=f"kerp-{config.region}-{config.replica}")
        self.redis = aioredis.Redis.from_url(
            config.redis_url, socket_timeout=config.redis_timeout_s, socket_connect_timeout=config.redis_timeout_s,
            retry=Retry(NoBackoff(), 1), decode_responses=True, health_check_interval=0)
        self.health_redis = aioredis.Redis.from_url(
            config.redis_url, socket_timeout=config.health_timeout_s,
            socket_connect_timeout=config.health_timeout_s, retry=Retry(NoBackoff(), 1), decode_responses=True)
        self.popbill = httpx.AsyncClient(base_url=config.popbill_url.rstrip("/"),
                                         timeout=httpx.Timeout(config.popbill_timeout_s),
                                         limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
        self.metrics = Metrics()
        self._health_conn: psycopg.AsyncConnection | None = None
        self._health_lock = asyncio.Lock()
        self._verified: dict[str, bool] = {}
        self.fernet = keyring.wrapper(config.jwt_secret)
        self.ring = keyring.Ring()
        self._ring_lock: asyncio.Lock | None = None
        self._ring_conn: psycopg.AsyncConnection | None = None
        self._refresher: asyncio.Task | None = None

    # -- lifecycle --
    async def startup(self) -> None:
        """Warm one pool connection and load the key ring (best effort: the app starts even with the database
        down), then reload the ring every `key_refresh_s`."""
        try:
            await self.pool.run(lambda conn: conn.execute("SELECT 1"), timeout_s=self.config.db_timeout_s)
            await self.reload_ring()
        except DependencyDown as e:
            log.warning("starting without the database: %s", e)
        self._refresher = asyncio.create_task(self._refresh_ring_forever())

    async def shutdown(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            try:
                await self._refresher
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        await self.pool.close()
        for conn in (self._health_conn, self._ring_conn):
            if conn is not None:
                _close_quietly(conn)
        for client in (self.redis, self.health_redis):
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001
                pass
        await self.popbill.aclose()

    # -- the key ring --
    def _ring_mutex(self) -> asyncio.Lock:
        if self._ring_lock is None:
            self._ring_lock = asyncio.Lock()
        return self._ring_lock

    async def reload_ring(self) -> keyring.Ring:
        """Read `signing_keys` (the primary's, or the DR standby's) into this replica's ring. Reloads run one at a
        time, so a slower read started before a rotation never replaces the ring a later read took after it."""
        async with self._ring_mutex():
            return await self._reload_ring_now()

    async def _reload_ring_now(self) -> keyring.Ring:
        # on a connection of its own: the reloads never take a request's pool slot, and never see (and flush)
        # the pool's connections first after a database restart
        conn = self._ring_conn
        try:
            async with asyncio.timeout(self.config.db_timeout_s):
                if conn is None or conn.closed or conn.broken:
                    conn = self._ring_conn = await self.pool.connect()
                cur = await conn.execute(keyring.SQL_RING)
                rows = await cur.fetchall()
        except (TimeoutError, psycopg.Error) as e:
            self._ring_conn = None
            if conn is not None:
                _close_quietly(conn)
            raise DependencyDown("postgres", f"key ring not read: {_one_line(e) if str(e) else 'timed out'}") from e
        ring = keyring.Ring.from_rows(rows)
        ring.follow(self.ring)
        self.ring = ring
        return ring

    async def _refresh_ring_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.key_refresh_s)
            try:
                await self.reload_ring()
            except DependencyDown as e:  # keep the last ring; the next period tries again
                log.debug("key ring not reloaded: %s", e)
            except Exception:  # noqa: BLE001 - the refresher never dies
                log.exception("key ring reload failed")

    async def _reload_for(self, kid: Any) -> None:
        """A token names a kid this replica does not know (a key another replica just created): reload at once,
        at most once per 0.2 s however many such tokens arrive."""
        async with self._ring_mutex():
            if kid in self.ring.keys or time.monotonic() - self.ring.loaded_at < 0.2:
                return
            await self._reload_ring_now()

    async def _signing_key(self) -> tuple[str, Any]:
        """(kid, private key) of the current key; the first login of a fresh database creates it."""
        if self.ring.current_kid is None:
            await self.reload_ring()
        if self.ring.current_kid is None:
            await self._create_first_key()
        return self.ring.signing_key(self.fernet)

    async def _create_first_key(self) -> None:
        new = keyring.new_key(self.fernet)

        async def create(conn):
            async with conn.transaction():
                await conn.execute(keyring.SQL_LOCK_RING)
                cur = await conn.execute("SELECT 1 FROM signing_keys WHERE state = 'current'")
                if await cur.fetchone() is not None:
                    return False  # another replica was first
                await conn.execute(keyring.SQL_INSERT_KEY, {**new, "reason": "first key"})
                await _audit(conn, "kerp", "create", "signing_key", new["kid"])
                return True

        if await self.pool.run(create, timeout_s=self.config.db_timeout_s, retry=False):
            log.info("created the first signing key %s", new["kid"])
        await self.reload_ring()

    # -- helpers --
    async def _identity(self, request: Request, *, required: bool) -> dict | None:
        """Claims of a valid Bearer JWT signed by a key of the ring that is not revoked; None when absent and not
        required; raises _Unauthorized."""
        header = request.headers.get("authorization", "")
        if not header:
            if required:
                raise _Unauthorized("missing bearer token")
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Unauthorized("malformed authorization header")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as e:
            raise _Unauthorized(f"invalid token: {e}") from e
        if isinstance(kid, str) and kid and kid not in self.ring.keys:
            if not self.ring.loaded_at:  # never read the ring: this replica cannot judge any token yet
                await self.reload_ring()
            else:
                try:
                    await self._reload_for(kid)
                except DependencyDown:
                    pass  # judged on the ring it has: an unknown kid is refused
        try:
            key = self.ring.verification_key(kid)
            return jwt.decode(token, key, algorithms=[keyring.ALGORITHM], issuer="kerp",
                              options={"require": ["exp", "sub", "sid"]})
        except (keyring.KeyRefused, jwt.PyJWTError) as e:
            raise _Unauthorized(f"invalid token: {e}") from e

    def _require_ops(self, request: Request) -> None:
        """The ops API takes its own bearer token, never a JWT: a leaked signing key must not authorise its rotation."""
        if not self.config.ops_token:
            raise _NotFound("the ops API is not enabled on this replica (no --ops-token-file)")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), self.config.ops_token.encode()):
            raise _Unauthorized("the ops API needs its bearer token")

    async def _redis(self, coro: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.config.redis_timeout_s + 0.5):
                return await coro
        except TimeoutError as e:
            raise DependencyDown("redis", "no answer in time") from e
        except (RedisError, OSError) as e:
            raise DependencyDown("redis", _one_line(e)) from e

    async def _check_password(self, password: str, stored: str) -> bool:
        key = hashlib.sha256(f"{password}\0{stored}".encode()).hexdigest()
        ok = self._verified.get(key)
        if ok is None:
            ok = await asyncio.to_thread(verify_password, password, stored)
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified[key] = ok
        return ok

    # -- endpoints --
    async def login(self, request: Request) -> Response:
        creds = parse_login(await _body(request))

        async def fetch(conn):
            cur = await conn.execute(SQL_USER_BY_EMAIL, (creds.email,))
            return await cur.fetchone()

        row = await self.pool.run(fetch, timeout_s=self.config.db_timeout_s)
        if row is None or not await self._check_password(creds.password, row[2]):
            return _error(401, "invalid email or password")
        user_id, company_id, _, role = row
        kid, private = await self._signing_key()
        sid = secrets.token_urlsafe(18)
        now = int(time.time())
        session = {"user_id": user_id, "company_id": company_id, "email": creds.email, "role": role,
                   "created_at": now, "region": self.config.region, "kid": kid}
        await self._redis(self.redis.set(f"session:{sid}", json.dumps(session), ex=self.config.session_ttl_s))
        token = jwt.encode({"sub": str(user_id), "sid": sid, "cid": company_id, "email": creds.email, "iss": "kerp",
                            "iat": now, "exp": now + self.config.session_ttl_s}, private,
                           algorithm=keyring.ALGORITHM, headers={"kid": kid})
        return _json({"token": token, "session_id": sid, "expires_in": self.config.session_ttl_s, "kid": kid})

    async def me(self, request: Request) -> Response:
        claims = await self._identity(request, required=True)
        raw = await self._redis(self.redis.get(f"session:{claims['sid']}"))
        if raw is None:
            return _error(401, "session expired or revoked")
        session = json.loads(raw)
        if str(session.get("user_id")) != claims["sub"]:
            return _error(401, "session does not match the token")
        return _json({"user_id": session["user_id"], "company_id": session["company_id"], "email": session["email"],
                      "role": session.get("role"), "session_id": claims["sid"], "region": self.config.region,
                      "replica": self.config.replica})

    async def logout(self, request: Request) -> Response:
        claims = await self._identity(request, required=True)
        await self._redis(self.redis.delete(f"session:{claims['sid']}"))
        return Response(status_code=204)

    # -- ops API: the signing keys --
    async def rotate_signing_key(self, request: Request) -> Response:
        """POST /ops/signing-keys/rotate {"reason", "mode": "compromised"|"scheduled", "actor"?}.

        One transaction: a new current key; "compromised" revokes every other usable key (private half erased),
        "scheduled" retires the current one (it still verifies); an audit entry per key. Then, for a compromise,
        the sessions issued under a revoked key are removed from Redis: once at once, and again after every
        replica has reloaded its ring (`key_refresh_s`), for logins a replica still signed with the old key
        meanwhile; an audit entry with the count.
        """
        self._require_ops(request)
        body = await _body(request)
        body = body if isinstance(body, dict) else {}
        reason, mode, actor = body.get("reason"), body.get("mode", "compromised"), body.get("actor", "ops")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
            raise InvalidRequest("reason must be a non-empty string of at most 200 characters")
        if mode not in ("compromised", "scheduled"):
            raise InvalidRequest(f"mode {mode!r} must be 'compromised' or 'scheduled'")
        if not isinstance(actor, str) or not actor.strip() or len(actor) > 100:
            raise InvalidRequest("actor must be a non-empty string of at most 100 characters")
        actor = f"ops:{actor}" if actor != "ops" else actor
        compromised = mode == "compromised"
        new = keyring.new_key(self.fernet)

        async def rotate(conn):
            async with conn.transaction():
                await conn.execute(keyring.SQL_LOCK_RING)
                cur = await conn.execute(keyring.SQL_REVOKE_ALL if compromised else keyring.SQL_RETIRE_CURRENT,
                                         {"reason": reason})
                old = [r[0] for r in await cur.fetchall()]
                await conn.execute(keyring.SQL_INSERT_KEY, {**new, "reason": reason})
                seqs = [await _audit(conn, actor, "rotate", "signing_key", new["kid"])]
                for kid in old:
                    seqs.append(await _audit(conn, actor, "revoke" if compromised else "retire", "signing_key", kid))
                cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
                at = (await cur.fetchone())[0]
            return old, seqs, at

        # never retried: a lost connection during the commit leaves the outcome to GET /ops/signing-keys
        old, seqs, rotated_at = await self.pool.run(rotate, timeout_s=self.config.db_timeout_s, retry=False)
        await self.reload_ring()
        result: dict[str, Any] = {"kid": new["kid"], "alg": keyring.ALGORITHM, "mode": mode, "rotated_at": rotated_at,
                                  ("revoked" if compromised else "retired"): old, "audit_seqs": seqs}
        if compromised and old:
            first = await self._sweep_sessions(set(old))
            await asyncio.sleep(self.config.key_refresh_s + 0.25)
            second = await self._sweep_sessions(set(old))
            revoked = first["revoked"] + second["revoked"]
            seq = await self.pool.run(
                lambda conn: _audit(conn, actor, "revoke_sessions", "session", f"{revoked} of keys {','.join(old)}"),
                timeout_s=self.config.db_timeout_s, retry=False)
            result["audit_seqs"].append(seq)
            result["sessions"] = {"scanned": first["scanned"], "revoked": revoked,
                                  "passes": [first["revoked"], second["revoked"]]}
        return _json(result)

    async def _sweep_sessions(self, kids: set[str]) -> dict[str, int]:
        """Delete every `session:*` issued under one of `kids` (or naming no key); counts."""
        scanned = revoked = 0
        cursor = 0
        while True:
            cursor, keys = await self._redis(self.redis.scan(cursor, match="session:*", count=1000))
            if keys:
                values = await self._redis(self.redis.mget(keys))
                scanned += sum(v is not None for v in values)
                doomed = [k for k, v in zip(keys, values) if v is not None and _session_kid(v) in kids | {None}]
                if doomed:
                    revoked += await self._redis(self.redis.delete(*doomed))
            if not cursor:
                return {"scanned": scanned, "revoked": revoked}

    async def signing_keys(self, request: Request) -> Response:
        """GET /ops/signing-keys: this replica's ring as it holds it now (not reloaded for the request)."""
        self._require_ops(request)
        ring = self.ring
        return _json({"region": self.config.region, "replica": self.config.replica, "current": ring.current_kid,
                      "age_s": round(time.monotonic() - ring.loaded_at, 3) if ring.loaded_at else None,
                      "since": ring.since,
                      "keys": ring.describe()})

    async def jwks(self, request: Request) -> Response:
        """GET /.well-known/jwks.json: the public keys that verify tokens (current and retired, never revoked)."""
        keys = []
        for kid, entry in self.ring.keys.items():
            if entry["state"] != keyring.REVOKED:
                jwk = ECAlgorithm.to_jwk(entry["public"], as_dict=True)
                keys.append({**jwk, "kid": kid, "alg": entry["alg"], "use": "sig"})
        return _json({"keys": keys})

    async def create_voucher(self, request: Request) -> Response:
        claims = await self._identity(request, required=False)
        v = parse_voucher(await _body(request))
        params = {
            "company_id": v.company_id, "request_id": v.request_id, "voucher_date": v.voucher_date,
            "description": v.description, "created_by": int(claims["sub"]) if claims else None,
            "accounts": [ln.account_id for ln in v.lines], "debits": [ln.debit for ln in v.lines],
            "credits": [ln.credit for ln in v.lines],
            "actor": claims.get("email", f"user:{claims['sub']}") if claims else "api",
        }

        async def write(conn):
            try:
                cur = await conn.execute(SQL_CREATE_VOUCHER, params)
                row = await cur.fetchone()
            except (pgerrors.ForeignKeyViolation, pgerrors.CheckViolation, pgerrors.NotNullViolation) as e:
                raise InvalidRequest(f"rejected by the database: {_one_line(e)}") from e
            if row is not None:
                return row[0], True
            cur = await conn.execute(SQL_VOUCHER_BY_REQUEST, (v.request_id,))
            existing = await cur.fetchone()
            if existing is None:  # pragma: no cover - a conflicting insert rolled back between the two statements
                raise DependencyDown("postgres", "concurrent voucher creation with the same request_id, retry")
            return existing[0], False

        # Idempotent on request_id, so a retry after a lost connection is always safe.
        voucher_id, created = await self.pool.run(write, timeout_s=self.config.db_timeout_s)
        return _json({"id": voucher_id, "request_id": v.request_id}, 201 if created else 200)

    async def get_voucher(self, request: Request) -> Response:
        raw = request.path_params["voucher_id"]
        if not raw.isdigit():
            return _error(404, f"no voucher {raw!r}")
        return await self._voucher(SQL_VOUCHER_BY_ID, int(raw))

    async def list_vouchers(self, request: Request) -> Response:
        request_id = request.query_params.get("request_id")
        if not request_id:
            return _error(422, "query parameter request_id is required")
        return await self._voucher(SQL_VOUCHER_FULL_BY_REQUEST, request_id)

    async def _voucher(self, sql: str, key: Any) -> Response:
        async def read(conn):
            cur = await conn.execute(sql, (key,))
            return await cur.fetchone()

        row = await self.pool.run(read, timeout_s=self.config.db_timeout_s)
        if row is None:
            return _error(404, f"no voucher {key!r}")
        vid, cid, rid, vdate, desc, created_by, created_at, lines = row
        return _json({"id": vid, "company_id": cid, "request_id": rid, "voucher_date": vdate, "description": desc,
                      "created_by": created_by, "created_at": created_at, "lines": lines})

    async def create_tax_invoice(self, request: Request) -> Response:
        claims = await self._identity(request, required=False)
        inv = parse_tax_invoice(await _body(request))
        actor = claims.get("email", f"user:{claims['sub']}") if claims else "api"
        popbill_called = False

        async def issue(conn):
            nonlocal popbill_called
            async with conn.transaction():
                try:
                    cur = await conn.execute(SQL_NEXT_INVOICE_NO, {"company_id": inv.company_id})
                    row = await cur.fetchone()
                    if row is None:
                        raise _NotFound(f"no company {inv.company_id}")
                    invoice_no, business_no, company_name = row
                    popbill_called = True
                    ref = await self._popbill_issue(inv.company_id, business_no, company_name, invoice_no,
                                                    inv.amount)
                    await conn.execute(SQL_INSERT_INVOICE, {
                        "company_id": inv.company_id, "invoice_no": invoice_no, "voucher_id": inv.voucher_id,
                        "amount": inv.amount, "popbill_ref": ref, "actor": actor})
                except (pgerrors.ForeignKeyViolation, pgerrors.CheckViolation) as e:
                    raise InvalidRequest(f"rejected by the database: {_one_line(e)}") from e
            return invoice_no, ref

        # Retry on a fresh connection only if Popbill was not called yet (no duplicate e-invoice).
        invoice_no, ref = await self.pool.run(issue, timeout_s=self.config.db_timeout_s + self.config.popbill_timeout_s
                                              + 0.5, retry=lambda: not popbill_called)
        return _json({"invoice_no": invoice_no, "popbill_ref": ref, "company_id": inv.company_id}, 201)

    async def _popbill_issue(self, company_id: int, business_no: str, company_name: str, invoice_no: int,
                             amount: Decimal) -> str:
        payload = {"corpNum": business_no, "corpName": company_name, "companyId": company_id,
                   "invoiceNo": invoice_no, "mgtKey": f"KERP-{company_id}-{invoice_no}", "totalAmount": str(amount)}
        try:
            resp = await self.popbill.post("/api/taxinvoice", json=payload)
        except httpx.HTTPError as e:
            raise PopbillFailed(f"popbill request failed: {_one_line(e)}") from e
        if resp.status_code != 200:
            raise PopbillFailed(f"popbill answered HTTP {resp.status_code}")
        try:
            data = resp.json()
            ref = data["ntsConfirmNum"]
            if data.get("code") != 1 or not isinstance(ref, str) or not ref:
                raise ValueError(f"code {data.get('code')!r}")
        except (ValueError, KeyError, TypeError) as e:
            raise PopbillFailed(f"popbill refused the invoice: {_one_line(e)}") from e
        return ref

    async def health(self, request: Request) -> Response:
        pg, rd = await asyncio.gather(self._health_postgres(), self._health_redis())
        ok = pg["ok"] and rd["ok"]
        return _json({"status": "ok" if ok else "unavailable", "region": self.config.region,
                      "replica": self.config.replica, "checks": {"postgres": pg, "redis": rd}},
                     200 if ok else 503)

    async def _health_postgres(self) -> dict:
        start = time.perf_counter()
        timeout = self.config.health_timeout_s
        try:
            async with asyncio.timeout(timeout):
                async with self._health_lock:
                    conn = self._health_conn
                    if conn is None or conn.closed or conn.broken:
                        conn = self._health_conn = await self.pool.connect()
                    try:
                        cur = await conn.execute("SELECT pg_is_in_recovery()")
                        in_recovery = (await cur.fetchone())[0]
                    except BaseException:
                        self._health_conn = None
                        _close_quietly(conn)
                        raise
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {timeout}s", "latency_ms": _ms(start)}
        except DependencyDown as e:
            return {"ok": False, "error": e.detail, "latency_ms": _ms(start)}
        except psycopg.Error as e:
            return {"ok": False, "error": _one_line(e), "latency_ms": _ms(start)}
        result = {"ok": not in_recovery, "in_recovery": in_recovery, "latency_ms": _ms(start)}
        if in_recovery:
            result["error"] = "database is in recovery (read-only standby)"
        return result

    async def _health_redis(self) -> dict:
        start = time.perf_counter()
        timeout = self.config.health_timeout_s
        try:
            async with asyncio.timeout(timeout):
                info = await self.health_redis.info("replication")
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {timeout}s", "latency_ms": _ms(start)}
        except (RedisError, OSError) as e:
            return {"ok": False, "error": _one_line(e), "latency_ms": _ms(start)}
        role = info.get("role")
        result = {"ok": role == "master", "role": role, "latency_ms": _ms(start)}
        if role != "master":
            result["error"] = f"redis role is {role!r}, not master"
        return result

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _session_kid(raw: str) -> str | None:
    try:
        kid = json.loads(raw).get("kid")
    except (ValueError, AttributeError):
        return None
    return kid if isinstance(kid, str) else None


class _Unauthorized(HarnessError):
    """401: missing or invalid credentials."""


class _NotFound(HarnessError):
    """404: the referenced entity does not exist."""


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError as e:
        raise InvalidRequest(f"the body is not valid JSON: {_one_line(e)}") from e


def _guard(app: KerpApp, handler: Callable[[Request], Awaitable[Response]]):
    """Map the app's errors to JSON responses: 422, 401, 404, 502, 503; anything else 500 (never a traceback)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidRequest as e:
            return _error(422, str(e))
        except _Unauthorized as e:
            return _error(401, str(e))
        except _NotFound as e:
            return _error(404, str(e))
        except PopbillFailed as e:
            app.metrics.popbill_errors.inc()
            return _error(502, str(e))
        except DependencyDown as e:
            app.metrics.dependency_errors.labels(e.dependency).inc()
            return _error(503, str(e), dependency=e.dependency,
                          outcome=INDETERMINATE if e.indeterminate else NOT_APPLIED)
        except Exception as e:  # noqa: BLE001 - the app never shows a traceback page
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return _error(500, f"internal error: {type(e).__name__}", outcome=INDETERMINATE)

    endpoint.__name__ = handler.__name__
    return endpoint


def create_app(config: AppConfig) -> Starlette:
    """Build the Starlette app of one replica (the KerpApp is at `app.state.kerp`)."""
    kerp = KerpApp(config)
    routes = [
        Route("/auth/login", _guard(kerp, kerp.login), methods=["POST"]),
        Route("/auth/me", _guard(kerp, kerp.me), methods=["GET"]),
        Route("/auth/logout", _guard(kerp, kerp.logout), methods=["POST"]),
        Route("/.well-known/jwks.json", _guard(kerp, kerp.jwks), methods=["GET"]),
        Route("/ops/signing-keys", _guard(kerp, kerp.signing_keys), methods=["GET"]),
        Route("/ops/signing-keys/rotate", _guard(kerp, kerp.rotate_signing_key), methods=["POST"]),
        Route("/vouchers", _guard(kerp, kerp.create_voucher), methods=["POST"]),
        Route("/vouchers", _guard(kerp, kerp.list_vouchers), methods=["GET"]),
        Route("/vouchers/{voucher_id}", _guard(kerp, kerp.get_voucher), methods=["GET"]),
        Route("/tax-invoices", _guard(kerp, kerp.create_tax_invoice), methods=["POST"]),
        Route("/health", _guard(kerp, kerp.health), methods=["GET"]),
        Route("/metrics", _guard(kerp, kerp.metrics_endpoint), methods=["GET"]),
    ]
    labels = {r.endpoint: f"{'|'.join(sorted(r.methods - {'HEAD'}))} {r.path}" for r in routes}

    @asynccontextmanager
    async def lifespan(app):
        await kerp.startup()
        try:
            yield
        finally:
            await kerp.shutdown()

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.detail)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.kerp = kerp
    app.add_middleware(MetricsMiddleware, metrics=kerp.metrics, labels=labels)
    return app


__all__ = ["AppConfig", "DependencyDown", "KerpApp", "PgPool", "PopbillFailed", "create_app"]
