"""The plan's backup layers on the real lab: `create --layer`, `list` with layer/age/size/verified, retention applied
by `prune` (expired deleted, kept ones never), and the pre_test rule reading the metadata table and the bucket.

Backdated backups are real objects and metadata records whose `created_at` is in the past (S3 sets LastModified
itself); everything a test adds is removed again.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from harness.backup import retention
from harness.config import load_plan
from harness.lab.aws import client
from tests.cli import drill_on as drill

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BUCKET, TABLE = "kerp-backups", "kerp-backup-metadata"


@pytest.fixture(scope="module")
def lab(drill_lab):
    return drill_lab


@pytest.fixture(scope="module")
def endpoint(lab):
    return lab.topology()["s3"]["endpoint_url"]


def put_backdated(endpoint: str, prefix: str, days: float, *, upload: bool = True) -> str:
    """A backup of `days` ago: the object (unless not `upload`) and its metadata record."""
    created = datetime.now(timezone.utc) - timedelta(days=days)
    key = f"{prefix}test_{uuid.uuid4().hex[:8]}.dump"
    if upload:
        client("s3", endpoint).put_object(Bucket=BUCKET, Key=key, Body=b"backdated", ServerSideEncryption="aws:kms",
                                          SSEKMSKeyId="alias/kerp-backups",
                                          Metadata={"sha256": "0" * 64, "created-at": created.isoformat()})
    client("dynamodb", endpoint).put_item(TableName=TABLE, Item={
        "backup_id": {"S": f"test:{key}"}, "file_path": {"S": f"s3://{BUCKET}/{key}"},
        "created_at": {"S": created.isoformat()}, "sha256": {"S": "0" * 64}, "size_bytes": {"N": "9"}})
    return key


def remove(endpoint: str, key: str) -> None:
    s3 = client("s3", endpoint)
    listing = s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        if v["Key"] == key:
            s3.delete_object(Bucket=BUCKET, Key=key, VersionId=v["VersionId"])
    ddb = client("dynamodb", endpoint)
    for it in ddb.scan(TableName=TABLE, FilterExpression="file_path = :p",
                       ExpressionAttributeValues={":p": {"S": f"s3://{BUCKET}/{key}"}})["Items"]:
        ddb.delete_item(TableName=TABLE, Key={"backup_id": it["backup_id"]})


def exists(endpoint: str, key: str) -> bool:
    return any(o["Key"] == key for o in client("s3", endpoint).list_objects_v2(Bucket=BUCKET, Prefix=key)
               .get("Contents", []))


def test_create_a_layer_then_list_shows_layer_age_size_and_verified(lab, endpoint):
    r = drill(lab, "backup", "create", "--layer", "snapshot.postgresql_dump", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    try:
        assert info["layer"] == "snapshot.postgresql_dump" and info["key"].startswith("postgresql/daily/")
        assert info["retention"]["layer"] == "snapshot.postgresql_dump"
        listed = {b["key"]: b for b in json.loads(drill(lab, "backup", "list", "--json").stdout)}
        assert listed[info["key"]]["verified"] is None and listed[info["key"]]["size"] == info["size"]
        assert any(b["layer"] == "snapshot.postgresql" for b in listed.values())  # the base backup of `lab up`
        assert drill(lab, "backup", "verify", info["key"]).returncode == 0
        r = drill(lab, "backup", "list", "--layer", "snapshot.postgresql_dump", "--json")
        items = json.loads(r.stdout)
        mine = next(b for b in items if b["key"] == info["key"])
        assert mine["verified"] is True and mine["layer"] == "snapshot.postgresql_dump" and mine["age_s"] < 300
        assert {b["layer"] for b in items} == {"snapshot.postgresql_dump"}
        text = drill(lab, "backup", "list", "--layer", "snapshot.postgresql_dump").stdout
        assert f"{info['key']}  snapshot.postgresql_dump" in text and "verified" in text
    finally:
        remove(endpoint, info["key"])


def test_unknown_layer_is_a_usage_error(lab):
    r = drill(lab, "backup", "create", "--layer", "snapshot.nope")
    assert r.returncode == 2 and "unknown backup layer 'snapshot.nope'" in r.stderr
    r = drill(lab, "backup", "create", "--layer", "snapshot.postgresql_wal")
    assert r.returncode == 2 and "taken continuously by the lab" in r.stderr


def test_retention_deletes_the_expired_and_never_the_kept(lab, endpoint):
    prefix = "postgresql/daily/"
    old = put_backdated(endpoint, prefix, 40)       # the dump layer keeps 30 days
    kept = put_backdated(endpoint, prefix, 29)
    fresh = put_backdated(endpoint, prefix, 0.01)
    try:
        dry = json.loads(drill(lab, "backup", "prune", "--layer", "snapshot.postgresql_dump", "--dry-run",
                               "--json").stdout)
        assert dry[0]["deleted"] == [old] and exists(endpoint, old)
        r = drill(lab, "backup", "prune", "--layer", "snapshot.postgresql_dump", "--json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)[0]
        assert res["deleted"] == [old] and res["retention_s"] == 30 * 86400
        assert not exists(endpoint, old)
        assert exists(endpoint, kept) and exists(endpoint, fresh)
        listing = client("s3", endpoint).list_object_versions(Bucket=BUCKET, Prefix=old)
        assert not listing.get("Versions") and not listing.get("DeleteMarkers")  # every version went
        recs = client("dynamodb", endpoint).scan(TableName=TABLE, FilterExpression="file_path = :p",
                                                ExpressionAttributeValues={":p": {"S": f"s3://{BUCKET}/{old}"}})
        assert [r["status"]["S"] for r in recs["Items"]] == ["expired"]  # the record says why it is gone
    finally:
        for k in (old, kept, fresh):
            remove(endpoint, k)


def test_pre_test_rule_finds_a_recorded_backup_missing_from_the_bucket(lab, endpoint):
    plan = load_plan()
    # the newest two on the shared lab, whatever backups earlier drills took
    fresh = put_backdated(endpoint, "postgresql/daily/", 0.0)
    gone = put_backdated(endpoint, "postgresql/daily/", -0.00001, upload=False)
    try:
        v = retention.recent_verdict(plan, "backups_recent", endpoint_url=endpoint)
        assert not v.ok and f"missing in S3: {gone}" in v.observed, v.observed
        remove(endpoint, gone)
        v = retention.recent_verdict(plan, "backups_recent", endpoint_url=endpoint)
        assert v.ok and v.newest.key == fresh, v.observed
    finally:
        remove(endpoint, fresh)
        remove(endpoint, gone)
