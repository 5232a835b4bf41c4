"""`drill detect` and `drill backup create|list|verify|restore` against the real lab, through the CLI in a subprocess.

Everything a test adds (backups, a tampered copy, databases) is removed again; the live kerp database is never written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import psycopg
import httpx
import pytest
from psycopg import sql

from harness.lab.aws import client
from tests.cli import drill_on as drill

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HARNESS_ERROR, USAGE, INTEGRITY, REFUSED = 1, 2, 4, 5


def error_line(r: subprocess.CompletedProcess) -> str:
    """The one `drill: error:` line, last on stderr, no traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("drill: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    return errors[0]


@pytest.fixture(scope="module")
def lab(drill_lab):
    topo = drill_lab.status()
    assert topo["healthy"], f"lab unhealthy: {[k for k, v in topo['health'].items() if not v.get('alive')]}"
    return drill_lab


@pytest.fixture(scope="module")
def s3(lab):
    return client("s3", lab.topology()["s3"]["endpoint_url"])


@pytest.fixture(scope="module")
def admin_dsn(lab):
    from harness.workload import find_primary_dsn

    return psycopg.conninfo.make_conninfo(find_primary_dsn(lab.topology()), dbname="postgres")


def databases(admin_dsn: str) -> set[str]:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database")}


def drop(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def delete_key(s3, key: str, version_id: str | None = None) -> None:
    """Remove one version of `key` (or every version and delete marker) from the versioned bucket."""
    if version_id:
        s3.delete_object(Bucket="kerp-backups", Key=key, VersionId=version_id)
        return
    listing = s3.list_object_versions(Bucket="kerp-backups", Prefix=key)
    for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        if v["Key"] == key:
            s3.delete_object(Bucket="kerp-backups", Key=key, VersionId=v["VersionId"])


@pytest.fixture(scope="module")
def backup(lab, s3):
    """A backup taken through `drill backup create`; its S3 version and metadata record are removed afterwards."""
    r = drill(lab, "backup", "create", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    version = s3.head_object(Bucket="kerp-backups", Key=info["key"]).get("VersionId")
    try:
        yield info
    finally:
        delete_key(s3, info["key"], version)
        ddb = client("dynamodb", lab.topology()["s3"]["endpoint_url"])
        items = ddb.scan(TableName="kerp-backup-metadata", FilterExpression="file_path = :p",
                         ExpressionAttributeValues={":p": {"S": f"s3://kerp-backups/{info['key']}"}})["Items"]
        for it in items:
            if it.get("sha256", {}).get("S") == info["sha256"]:
                ddb.delete_item(TableName="kerp-backup-metadata", Key={"backup_id": it["backup_id"]})


# -- detect ---------------------------------------------------------------------------------------
def test_detect_on_a_healthy_lab_is_level_0(lab):
    r = drill(lab, "detect", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["level"], d["name"], d["failed_weight"], d["failed"]) == (0, "normal", 0, [])
    assert set(d["indicators"]) >= {"database_primary", "database_replica", "redis_cluster", "api_health"}
    assert all(v["healthy"] is True and v["weight"] is not None for v in d["indicators"].values()), d
    table = drill(lab, "detect")
    assert table.returncode == 0 and "disaster level 0 (normal)" in table.stdout
    prom = drill(lab, "detect", "--prometheus")
    assert prom.returncode == 0, prom.stderr
    assert 'kerp_disaster_level{region="primary"} 0.0' in prom.stdout.splitlines()
    for name in d["indicators"]:
        assert f'kerp_indicator_{name}{{region="primary"}} 1.0' in prom.stdout.splitlines(), name
    # the same sample is served by the lab's metrics endpoint
    served = httpx.get(lab.topology()["metrics"]["url"], timeout=5)
    assert served.status_code == 200 and 'kerp_disaster_level{region="primary"} 0.0' in served.text.splitlines()


def test_detect_without_a_lab_is_one_error_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DRILL_STATE_DIR"}
    r = subprocess.run([sys.executable, "-m", "harness.cli", "detect", "--state-dir", str(tmp_path / "none")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == HARNESS_ERROR
    assert "no lab is running" in error_line(r)


# -- create, list, verify -------------------------------------------------------------------------
def test_create_prints_key_size_and_sha256(backup):
    assert backup["key"].startswith("postgresql/daily/kerp_") and backup["key"].endswith(".dump")
    assert backup["size"] > 0 and len(backup["sha256"]) == 64


def test_list_shows_the_new_backup_first(lab, backup):
    r = drill(lab, "backup", "list", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert items[0]["key"] == backup["key"], items[:3]
    assert items[0]["age_s"] < 120
    ages = [i["age_s"] for i in items]
    assert ages == sorted(ages)
    text = drill(lab, "backup", "list")
    assert text.returncode == 0 and text.stdout.splitlines()[0].startswith(backup["key"])


def test_verify_an_intact_backup(lab, backup):
    r = drill(lab, "backup", "verify", backup["key"], "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    v = json.loads(r.stdout)
    assert v["ok"] and v["sha256"] == backup["sha256"]
    assert {c["check"] for c in v["checks"] if c["ok"]} == {"object_sha256", "metadata_record", "pg_restore_list"}


def test_verify_a_tampered_copy_is_an_integrity_violation(lab, backup, s3):
    data = bytearray(s3.get_object(Bucket="kerp-backups", Key=backup["key"])["Body"].read())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    key = f"postgresql/daily/tampered_{uuid.uuid4().hex[:8]}.dump"
    s3.put_object(Bucket="kerp-backups", Key=key, Body=bytes(data), ServerSideEncryption="aws:kms",
                  SSEKMSKeyId="alias/kerp-backups", Metadata={"sha256": backup["sha256"]})
    try:
        r = drill(lab, "backup", "verify", key)
        assert r.returncode == INTEGRITY, r.stdout + r.stderr
        line = error_line(r)
        assert f"backup {key} failed verification" in line and "object_sha256" in line
        assert f"differs from the object's metadata {backup['sha256']}" in line
        assert "FAIL object_sha256" in r.stdout
    finally:
        delete_key(s3, key)


def test_verify_an_unknown_key_is_usage(lab):
    r = drill(lab, "backup", "verify", "postgresql/daily/never.dump")
    assert r.returncode == USAGE
    assert "no backup s3://kerp-backups/postgresql/daily/never.dump" in error_line(r)


# -- restore --------------------------------------------------------------------------------------
def test_restore_without_approval_is_refused_and_creates_nothing(lab, backup, admin_dsn):
    name = f"drill_restore_{uuid.uuid4().hex[:8]}"
    before = databases(admin_dsn)
    r = drill(lab, "backup", "restore", backup["key"], "--into", name)
    try:
        assert r.returncode == REFUSED, r.stdout + r.stderr
        line = error_line(r)
        assert "not injecting:" in line and "--approve data_restore_from_backup" in line
        assert databases(admin_dsn) == before
    finally:
        if name in databases(admin_dsn):
            drop(admin_dsn, name)


def test_restore_with_approval_into_a_new_database_passes_integrity(lab, backup, admin_dsn):
    name = f"drill_restore_{uuid.uuid4().hex[:8]}"
    try:
        r = drill(lab, "backup", "restore", backup["key"], "--into", name, "--approve", "data_restore_from_backup",
                  "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert res["ok"] and res["database"] == name and res["verification"]["ok"]
        statuses = {c["check"]: c["status"] for c in res["integrity"]}
        assert "fail" not in statuses.values(), res["integrity"]
        assert statuses["vouchers_balanced"] == statuses["foreign_keys_valid"] == "pass"
        assert name in databases(admin_dsn)
        with psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)) as c:
            assert c.execute("SELECT count(*) FROM vouchers").fetchone()[0] > 0
    finally:
        drop(admin_dsn, name)
    assert name not in databases(admin_dsn)


def test_restore_into_an_existing_database_changes_nothing(lab, backup, admin_dsn):
    name = f"drill_exists_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    try:
        with psycopg.connect(target, autocommit=True) as c:
            c.execute("CREATE TABLE marker (v text)")
            c.execute("INSERT INTO marker VALUES ('keep me')")
        before = databases(admin_dsn)
        r = drill(lab, "backup", "restore", backup["key"], "--into", name, "--approve", "data_restore_from_backup")
        assert r.returncode == USAGE, r.stdout + r.stderr
        assert f"database '{name}' already exists" in error_line(r)
        assert databases(admin_dsn) == before
        with psycopg.connect(target) as c:
            tables = {t[0] for t in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            assert tables == {"marker"}
            assert c.execute("SELECT v FROM marker").fetchall() == [("keep me",)]
    finally:
        drop(admin_dsn, name)


def test_restore_never_targets_the_live_database(lab, backup, admin_dsn):
    live = psycopg.conninfo.make_conninfo(admin_dsn, dbname="kerp")
    with psycopg.connect(live) as c:
        before = c.execute("SELECT count(*), max(id) FROM vouchers").fetchone()
    r = drill(lab, "backup", "restore", backup["key"], "--into", "kerp", "--approve", "data_restore_from_backup")
    assert r.returncode == USAGE
    assert "refusing to restore into 'kerp'" in error_line(r)
    with psycopg.connect(live) as c:
        assert c.execute("SELECT count(*), max(id) FROM vouchers").fetchone() == before
