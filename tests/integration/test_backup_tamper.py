"""Tamper evidence: one flipped byte anywhere in a stored backup of any layer (a dump, a base backup, a Redis
snapshot) is found by `drill backup verify` (exit 4), its sha256 no longer the one in the metadata and DynamoDB.
The tampered copies are written under new keys with the original's metadata and removed afterwards."""

from __future__ import annotations

import json

import pytest

from harness.lab.aws import client
from tests.cli import drill_on as drill

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BUCKET, TABLE = "kerp-backups", "kerp-backup-metadata"


def remove(endpoint: str, key: str) -> None:
    for bucket in (BUCKET, "kerp-backups-dr"):
        s3 = client("s3", endpoint)
        try:
            listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
        except Exception:
            continue
        for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
            if v["Key"] == key:
                s3.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
    ddb = client("dynamodb", endpoint)
    for it in ddb.scan(TableName=TABLE, FilterExpression="contains(file_path, :p)",
                       ExpressionAttributeValues={":p": {"S": key}})["Items"]:
        ddb.delete_item(TableName=TABLE, Key={"backup_id": it["backup_id"]})


@pytest.fixture(scope="module")
def lab(drill_lab):
    return drill_lab


@pytest.mark.parametrize("layer", ["snapshot.postgresql_dump", "snapshot.postgresql", "snapshot.redis"])
def test_one_flipped_byte_is_an_integrity_violation(lab, layer):
    endpoint = lab.topology()["s3"]["endpoint_url"]
    r = drill(lab, "backup", "create", "--layer", layer, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    key = info["key"]
    tampered = key.replace("/", "/tampered-", 1) if "/" in key else "tampered-" + key
    try:
        ok = drill(lab, "backup", "verify", key, "--json")
        assert ok.returncode == 0, ok.stdout + ok.stderr  # the original verifies
        s3 = client("s3", endpoint)
        obj = s3.get_object(Bucket=BUCKET, Key=key)
        data = bytearray(obj["Body"].read())
        data[len(data) * 2 // 3] ^= 0x04  # one bit of one byte
        s3.put_object(Bucket=BUCKET, Key=tampered, Body=bytes(data), Metadata=obj["Metadata"],
                      ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/kerp-backups")
        ddb = client("dynamodb", endpoint)
        ddb.put_item(TableName=TABLE, Item={"backup_id": {"S": f"test:{tampered}"},
                                           "file_path": {"S": f"s3://{BUCKET}/{tampered}"},
                                           "sha256": {"S": info["sha256"]}, "size_bytes": {"N": str(len(data))},
                                           "created_at": {"S": "2026-01-01T00:00:00+00:00"}})
        r = drill(lab, "backup", "verify", tampered, "--json")
        assert r.returncode == 4, r.stdout + r.stderr
        res = json.loads(r.stdout)
        failed = {c["check"] for c in res["checks"] if not c["ok"]}
        assert {"object_sha256", "metadata_record"} <= failed, res
        assert res["sha256"] != info["sha256"]
    finally:
        remove(endpoint, key)
        remove(endpoint, tampered)
