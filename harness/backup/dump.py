"""PostgreSQL logical backups to S3 (SSE-KMS) with metadata in DynamoDB: create, list, verify, restore into a new database."""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from harness.checks import integrity
from harness.errors import HarnessError, UsageError
from harness.safety import guard

__all__ = ["DEFAULT_LAYER", "PREFIX", "RESTORE_GATE", "BackupError", "BackupInfo", "BackupNotFound", "RestoreResult",
           "VerifyResult", "check_database_name", "create", "list_backups", "mark_verified", "restore", "verify"]

PREFIX = "postgresql/daily/"
RESTORE_GATE = "data_restore_from_backup"
#: integrity checks not run on a restored copy: it has no pre-fault snapshot of its own to compare with
RESTORE_SKIPPED_CHECKS = ("snapshot_unchanged",)
#: databases a restore never writes into, whatever the caller says
PROTECTED_DATABASES = frozenset({"kerp", "postgres", "template0", "template1"})
#: pg_restore's parallel jobs (the lab's machine has 2 cores)
RESTORE_JOBS = 2
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class BackupError(HarnessError):
    """A backup could not be taken, uploaded, listed, downloaded or restored."""


class BackupNotFound(UsageError):
    """The named backup key is not in the bucket."""


@dataclass(frozen=True)
class BackupInfo:
    key: str
    size: int
    last_modified: float
    sha256: str | None = None
    layer: str = ""
    #: when the backup was taken (the object's `created-at` metadata, else its LastModified)
    created_at: float | None = None
    #: the last verification's outcome from the metadata table (None: never verified)
    verified: bool | None = None

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - (self.created_at or self.last_modified))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "layer": self.layer, "size": self.size, "age_s": round(self.age_s, 1),
                "sha256": self.sha256, "verified": self.verified,
                "created_at": datetime.fromtimestamp(self.created_at or self.last_modified, tz=timezone.utc).isoformat(),
                "last_modified": datetime.fromtimestamp(self.last_modified, tz=timezone.utc).isoformat()}


DEFAULT_LAYER = "snapshot.postgresql_dump"


def create(dsn: str, *, pg_runtime, endpoint_url: str, bucket: str = "kerp-backups", kms_alias: str = "alias/kerp-backups",
           metadata_table: str = "kerp-backup-metadata", prefix: str = PREFIX, layer: str = DEFAULT_LAYER,
           storage_class: str | None = None) -> BackupInfo:
    """pg_dump (custom format) of `dsn` streamed into S3 (SSE-KMS, multipart, hashed on the way: the dump is never
    held in memory or on disk), its sha256 set in the object's metadata, checked by size, recorded in DynamoDB."""
    from harness.lab.aws import client
    from harness.lab.walarchive import READ_AHEAD, HashingReader, transfer_config

    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%d_%H%M%S")
    key = f"{prefix}kerp_{stamp}.dump"
    s3 = client("s3", endpoint_url)
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_alias}
    if storage_class:
        extra["StorageClass"] = storage_class
    proc = pg_runtime.popen("pg_dump", ["--format=custom", "--no-owner", "--no-acl", "-d", dsn])
    reader = HashingReader(proc.stdout, ahead=READ_AHEAD)
    try:
        s3.upload_fileobj(reader, bucket, key, Config=transfer_config(), ExtraArgs=extra)
    except Exception as e:
        proc.kill()
        proc.wait()
        raise BackupError(f"uploading s3://{bucket}/{key} failed: {e}") from e
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        s3.delete_object(Bucket=bucket, Key=key)
        raise BackupError(f"pg_dump of {dsn.split('@')[-1]} failed: {err.strip()[-300:]}")
    digest, size = reader.hexdigest, reader.size
    meta = {"sha256": digest, "layer": layer, "created-at": now.isoformat()}
    try:  # the digest is known only at the end: set it by copying the object onto itself
        s3.copy({"Bucket": bucket, "Key": key}, bucket, key, Config=transfer_config(),
                ExtraArgs={**extra, "Metadata": meta, "MetadataDirective": "REPLACE"})
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as e:
        raise BackupError(f"recording the sha256 of s3://{bucket}/{key} failed: {e}") from e
    if int(head["ContentLength"]) != size or (head.get("Metadata") or {}).get("sha256") != digest:
        raise BackupError(f"s3://{bucket}/{key} has {head['ContentLength']} bytes, expected {size}")
    try:
        client("dynamodb", endpoint_url).put_item(TableName=metadata_table, Item={
            "backup_id": {"S": f"{layer}:{stamp}"}, "backup_type": {"S": "postgresql_full"}, "layer": {"S": layer},
            "file_path": {"S": f"s3://{bucket}/{key}"}, "size_bytes": {"N": str(size)},
            "sha256": {"S": digest}, "created_at": {"S": now.isoformat()}, "status": {"S": "completed"}})
    except Exception as e:
        raise BackupError(f"recording backup metadata in {metadata_table} failed: {e}") from e
    return BackupInfo(key, size, head["LastModified"].timestamp(), digest, layer, now.timestamp())


def _records_by_path(endpoint_url: str, table: str) -> dict[str, dict[str, Any]]:
    """The newest metadata record of each file path."""
    from harness.lab.aws import client

    out: dict[str, dict[str, Any]] = {}
    try:
        for page in client("dynamodb", endpoint_url).get_paginator("scan").paginate(TableName=table):
            for it in page.get("Items", []):
                path = it.get("file_path", {}).get("S")
                if path and it.get("created_at", {}).get("S", "") >= out.get(path, {}).get("created_at", {}).get("S", ""):
                    out[path] = it
    except Exception as e:
        raise BackupError(f"reading backup metadata from {table} failed: {e}") from e
    return out


def list_backups(*, endpoint_url: str, bucket: str = "kerp-backups", prefix: str = PREFIX, layer: str = "",
                 metadata_table: str = "kerp-backup-metadata", with_records: bool = False) -> list[BackupInfo]:
    """Backups under `prefix`, newest first; with_records joins the metadata table (sha256, verified)."""
    from harness.lab.aws import client

    s3 = client("s3", endpoint_url)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        items = [o for p in pages for o in p.get("Contents", []) if not o["Key"].endswith(".partial")]
    except Exception as e:
        raise BackupError(f"listing s3://{bucket}/{prefix} failed: {e}") from e
    recs = _records_by_path(endpoint_url, metadata_table) if with_records else {}
    out = []
    for o in items:
        rec = recs.get(f"s3://{bucket}/{o['Key']}", {})
        created = rec.get("created_at", {}).get("S")
        verified = rec.get("verified", {}).get("BOOL")
        out.append(BackupInfo(o["Key"], int(o["Size"]), o["LastModified"].timestamp(), rec.get("sha256", {}).get("S"),
                              layer or rec.get("layer", {}).get("S", ""),
                              datetime.fromisoformat(created).timestamp() if created else None, verified))
    return sorted(out, key=lambda b: b.created_at or b.last_modified, reverse=True)


def mark_verified(endpoint_url: str, table: str, bucket: str, key: str, ok: bool) -> None:
    """Record a verification's outcome on the backup's metadata records (what `list` shows as verified)."""
    from harness.lab.aws import client

    ddb = client("dynamodb", endpoint_url)
    for rec in _metadata_records(endpoint_url, table, bucket, key):
        try:
            ddb.update_item(TableName=table, Key={"backup_id": rec["backup_id"]},
                            UpdateExpression="SET verified = :v, verified_at = :t",
                            ExpressionAttributeValues={":v": {"BOOL": ok},
                                                       ":t": {"S": datetime.now(timezone.utc).isoformat()}})
        except Exception as e:
            raise BackupError(f"recording the verification in {table} failed: {e}") from e


# -- verify ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found: each check (name, ok, detail); `ok` when every check passed."""

    key: str
    size: int
    sha256: str
    checks: tuple[tuple[str, bool, str], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    @property
    def reason(self) -> str:
        """The failed checks' details, or "" when every check passed."""
        return "; ".join(f"{name}: {detail}" for name, ok, detail in self.checks if not ok)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "ok": self.ok, "size": self.size, "sha256": self.sha256, "reason": self.reason,
                "checks": [{"check": n, "ok": ok, "details": d} for n, ok, d in self.checks]}


def _without_password(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "(unparsable dsn)"
    params.pop("password", None)
    return make_conninfo(**params)


def _private_to(pg_runtime: Any, directory: Path) -> None:
    """A dump holds the whole database: only the user the PostgreSQL tools run as may read it."""
    pg_runtime.chown(directory)
    directory.chmod(0o700)


@contextlib.contextmanager
def _downloaded(s3: Any, bucket: str, key: str, pg_runtime: Any) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The object in a temp file the PostgreSQL OS user can read, and its head (metadata, size, version)."""
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except Exception as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise BackupNotFound(f"no backup s3://{bucket}/{key} (see `drill backup list`)") from e
        raise BackupError(f"downloading s3://{bucket}/{key} failed: {e}") from e
    with tempfile.TemporaryDirectory(prefix="drill-verify-") as tmp:
        _private_to(pg_runtime, Path(tmp))  # as root, pg_restore runs as the unprivileged lab user
        path = Path(tmp) / "backup.dump"
        try:
            with path.open("wb") as f:
                for chunk in obj["Body"].iter_chunks(1 << 20):
                    f.write(chunk)
        except Exception as e:
            raise BackupError(f"downloading s3://{bucket}/{key} failed: {e}") from e
        path.chmod(0o600)
        pg_runtime.chown(path)
        yield path, obj


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _metadata_records(endpoint_url: str, table: str, bucket: str, key: str) -> list[dict[str, Any]]:
    from harness.lab.aws import client

    ddb = client("dynamodb", endpoint_url)
    want = f"s3://{bucket}/{key}"
    items: list[dict[str, Any]] = []
    try:
        for page in ddb.get_paginator("scan").paginate(
                TableName=table, FilterExpression="file_path = :p", ExpressionAttributeValues={":p": {"S": want}}):
            items.extend(page.get("Items", []))
    except Exception as e:
        raise BackupError(f"reading backup metadata from {table} failed: {e}") from e
    return items


def _verify_file(path: Path, obj: dict[str, Any], key: str, *, pg_runtime: Any, endpoint_url: str, bucket: str,
                 metadata_table: str) -> VerifyResult:
    size = path.stat().st_size
    digest = _sha256_file(path)
    checks: list[tuple[str, bool, str]] = []
    declared = (obj.get("Metadata") or {}).get("sha256")
    if not declared:
        checks.append(("object_sha256", False, "the object carries no sha256 metadata"))
    elif declared != digest:
        checks.append(("object_sha256", False, f"content sha256 {digest} differs from the object's metadata "
                                               f"{declared}"))
    else:
        checks.append(("object_sha256", True, f"sha256 {digest} matches the object's metadata"))
    records = _metadata_records(endpoint_url, metadata_table, bucket, key)
    if not records:
        checks.append(("metadata_record", False, f"no record for s3://{bucket}/{key} in {metadata_table}"))
    else:
        rec = max(records, key=lambda r: r.get("created_at", {}).get("S", ""))
        rsha, rsize = rec.get("sha256", {}).get("S"), rec.get("size_bytes", {}).get("N")
        bad = []
        if rsha != digest:
            bad.append(f"sha256 {digest} differs from the recorded {rsha}")
        if rsize is not None and int(rsize) != size:
            bad.append(f"size {size} differs from the recorded {rsize}")
        checks.append(("metadata_record", not bad, "; ".join(bad) or
                       f"matches {metadata_table} record {rec.get('backup_id', {}).get('S')} (sha256, size)"))
    if not key.endswith(".dump"):
        checks.append(_readable(path, key))
        return VerifyResult(key, size, digest, tuple(checks))
    r = pg_runtime.run("pg_restore", ["--list", str(path)], timeout=120, check=False)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout or "").strip().splitlines()
        checks.append(("pg_restore_list", False, f"pg_restore --list failed: {msg[-1] if msg else r.returncode}"))
    else:
        entries = sum(1 for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith(";"))
        checks.append(("pg_restore_list", True, f"pg_restore --list reads {entries} archive entries"))
    return VerifyResult(key, size, digest, tuple(checks))


def _readable(path: Path, key: str) -> tuple[str, bool, str]:
    """The format check of a backup that is not a pg_dump archive: a base backup's tar lists, an RDB has its magic."""
    import tarfile

    if key.endswith(".tar.gz"):
        try:
            with tarfile.open(path, "r:gz") as tar:
                names = tar.getnames()
        except (tarfile.TarError, OSError, EOFError) as e:
            return ("tar_list", False, f"the base backup's tar does not read: {e}")
        ok = "backup_label" in names and "global/pg_control" in names
        return ("tar_list", ok, f"{len(names)} tar entries" + ("" if ok else ", no backup_label or pg_control"))
    if key.endswith(".rdb"):
        with path.open("rb") as f:
            magic = f.read(9)
        ok = magic.startswith((b"REDIS", b"VALKEY"))
        return ("rdb_header", ok, f"RDB header {magic[:9]!r}")
    return ("format", False, f"unknown backup format of {key}")


def verify(key: str, *, pg_runtime: Any, endpoint_url: str, bucket: str = "kerp-backups",
           metadata_table: str = "kerp-backup-metadata") -> VerifyResult:
    """Download `key`, check its sha256 against the object metadata and the DynamoDB record, and its format
    (`pg_restore --list` of a dump, the tar of a base backup, an RDB's header). Findings are in the result (and
    recorded as the backup's `verified`); BackupNotFound / BackupError when it cannot run."""
    from harness.lab.aws import client

    s3 = client("s3", endpoint_url)
    with _downloaded(s3, bucket, key, pg_runtime) as (path, obj):
        res = _verify_file(path, obj, key, pg_runtime=pg_runtime, endpoint_url=endpoint_url, bucket=bucket,
                           metadata_table=metadata_table)
    mark_verified(endpoint_url, metadata_table, bucket, key, res.ok)
    return res


# -- restore --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreResult:
    """A restore into a new database: the backup's verification, the database, and its integrity checks."""

    key: str
    database: str
    dsn: str
    verification: VerifyResult
    integrity: tuple[Any, ...] = ()  # harness.checks.integrity.CheckResult
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verification.ok and all(c.status != "fail" for c in self.integrity)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "database": self.database, "dsn": _without_password(self.dsn), "ok": self.ok,
                "seconds": round(self.seconds, 3), "verification": self.verification.to_dict(),
                "integrity": [c.to_dict() for c in self.integrity]}


def check_database_name(name: str) -> str:
    """A plain lower-case identifier that is none of the protected databases; UsageError otherwise."""
    if not _DB_NAME.match(name or ""):
        raise UsageError(f"database name {name!r} must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63)")
    if name in PROTECTED_DATABASES:
        raise UsageError(f"refusing to restore into {name!r}: restores go into a new database, never into "
                         f"{', '.join(sorted(PROTECTED_DATABASES))}")
    return name


def _with_dbname(dsn: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(**{**conninfo_to_dict(dsn), "dbname": dbname})


def restore(key: str, database: str, *, dsn: str, pg_runtime: Any, endpoint_url: str, bucket: str = "kerp-backups",
            metadata_table: str = "kerp-backup-metadata", configuration: dict[str, Any] | None = None,
            connect_timeout_s: float = 5, integrity_checks: bool = True) -> RestoreResult:
    """Restore `key` into the NEW database `database` on the server of `dsn`, then run the integrity checks on it.

    The plan's gate `data_restore_from_backup` must be approved first (configuration drill_approvals or the
    session's approvals), else SafetyRefusal ("not injecting: ...") before anything is read or created.
    The backup is verified first: a failed verification creates nothing. A database that exists or is
    protected is refused (UsageError): a restore never drops or overwrites one. pg_restore runs with
    --no-owner --no-acl --exit-on-error --jobs 2 (in parallel, so not in one transaction); when it fails, the
    database this call created (and only it) is dropped again. The database named in `dsn` is never used: only the server's `postgres`
    database (to create) and the new one.
    """
    import psycopg
    from psycopg import sql

    from harness.lab.aws import client

    guard.approve(RESTORE_GATE, "restore_from_backup", configuration)
    check_database_name(database)
    t0 = time.monotonic()
    admin = _with_dbname(dsn, "postgres")
    target = _with_dbname(dsn, database)

    def connect(d: str) -> Any:
        return psycopg.connect(d, autocommit=True, connect_timeout=max(1, int(connect_timeout_s)))

    def exists(c: Any) -> bool:
        return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None

    try:
        with connect(admin) as c:
            if exists(c):
                raise UsageError(f"database {database!r} already exists on {dsn.split('@')[-1].split('/')[0]}; "
                                 "restore into a new name (nothing was changed)")
    except psycopg.Error as e:
        raise BackupError(f"cannot reach the restore server {dsn.split('@')[-1]}: {str(e).strip()}") from e
    s3 = client("s3", endpoint_url)
    with _downloaded(s3, bucket, key, pg_runtime) as (path, obj):
        ver = _verify_file(path, obj, key, pg_runtime=pg_runtime, endpoint_url=endpoint_url, bucket=bucket,
                           metadata_table=metadata_table)
        if not ver.ok:
            return RestoreResult(key, database, target, ver, (), time.monotonic() - t0)
        try:
            with connect(admin) as c:
                c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase as e:  # created by someone else since the check: not ours
            raise UsageError(f"database {database!r} already exists; restore into a new name "
                             "(nothing was changed)") from e
        except psycopg.Error as e:
            raise BackupError(f"creating database {database!r} failed: {str(e).strip()}") from e
        r = pg_runtime.run("pg_restore", ["--no-owner", "--no-acl", "--exit-on-error", f"--jobs={RESTORE_JOBS}",
                                          "-d", target, str(path)], timeout=3600, check=False)
        if r.returncode != 0:
            msg = (r.stderr or r.stdout or "").strip().splitlines()
            dropped = _drop_own(connect, admin, database)
            raise BackupError(f"pg_restore of {key} into {database!r} failed: {msg[-1] if msg else r.returncode}"
                              f"{'; the new database was dropped again' if dropped else ''}")
    if not integrity_checks:  # the bench times the restore alone
        return RestoreResult(key, database, target, ver, (), time.monotonic() - t0)
    wanted = [n for n in integrity.CHECK_NAMES if n not in RESTORE_SKIPPED_CHECKS]
    with connect(target) as c:
        checks = integrity.run_all(c, rt=pg_runtime, dsn=target, only=wanted)
    return RestoreResult(key, database, target, ver, tuple(checks), time.monotonic() - t0)


def _drop_own(connect: Any, admin: str, database: str) -> bool:
    """Drop the database this restore created a moment ago (only after its own pg_restore failed)."""
    from psycopg import sql

    try:
        with connect(admin) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        return True
    except Exception:
        return False
