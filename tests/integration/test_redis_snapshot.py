"""Redis snapshots on the real lab: LASTSAVE changes across the BGSAVE, the RDB lands in S3 with its sha256, a NEW
Valkey restored from it holds the sessions written before the snapshot (not those after), a flipped byte is
refused with exit 4. Sessions are test keys `session:drilltest-*`, removed afterwards."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from harness.backup import redis_snapshot
from harness.lab import procs, recovered
from harness.lab.aws import client
from tests.cli import drill_on as drill

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def lab(drill_lab):
    return drill_lab


def test_snapshot_then_restore_into_a_new_valkey_counts_the_sessions(lab):
    topo = lab.topology()
    endpoint = topo["s3"]["endpoint_url"]
    live = redis.Redis.from_url(topo["regions"]["primary"]["redis"]["url"])
    tag = uuid.uuid4().hex[:8]
    before = [f"session:drilltest-{tag}-{i}" for i in range(25)]
    after = [f"session:drilltest-{tag}-late-{i}" for i in range(5)]
    for k in before:
        live.set(k, "user", ex=3600)
    name = f"r{tag}"
    snap = None
    try:
        r = drill(lab, "backup", "create", "--layer", "snapshot.redis", "--json")
        assert r.returncode == 0, r.stderr
        snap = json.loads(r.stdout)
        assert snap["key"].startswith("redis/") and snap["key"].endswith("_dump.rdb")
        assert snap["lastsave_after"] > snap["lastsave_before"]
        head = client("s3", endpoint).head_object(Bucket="kerp-backups", Key=snap["key"])
        assert head["Metadata"]["sha256"] == snap["sha256"] and head["ServerSideEncryption"] == "aws:kms"
        for k in after:
            live.set(k, "user", ex=3600)
        refused = drill(lab, "backup", "restore-redis", snap["key"], "--into", name)
        assert refused.returncode == 5 and name not in recovered.records(lab.state)
        r = drill(lab, "backup", "restore-redis", snap["key"], "--into", name, "--approve", "data_restore_from_backup",
                  "--json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["port"] != topo["regions"]["primary"]["redis"]["port"]
        restored = redis.Redis(port=res["port"])
        # the lab's own probes log in and out all the time: the test's sessions are counted exactly, the total
        # is what the restored server holds
        assert res["sessions"] == sum(1 for _ in restored.scan_iter(match="session:*", count=1000))
        assert sum(1 for _ in restored.scan_iter(match=f"session:drilltest-{tag}-*", count=1000)) == len(before)
        assert res["sessions"] >= len(before)
        assert all(restored.exists(k) for k in before) and not any(restored.exists(k) for k in after)
        port = res["port"]
        assert drill(lab, "backup", "discard", name).returncode == 0
        assert not procs.port_open(port)
    finally:
        live.delete(*before, *after)
        if name in recovered.records(lab.state):
            recovered.stop(lab.state, name, None)
        if snap:
            _remove(endpoint, snap["key"])


def test_a_flipped_byte_is_refused_before_anything_starts(lab):
    endpoint = lab.topology()["s3"]["endpoint_url"]
    snap = redis_snapshot.create(lab.topology(), endpoint_url=endpoint)
    s3 = client("s3", endpoint)
    data = bytearray(s3.get_object(Bucket="kerp-backups", Key=snap.key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    bad = snap.key.replace("_dump.rdb", "_tampered.rdb")
    s3.put_object(Bucket="kerp-backups", Key=bad, Body=bytes(data), Metadata={"sha256": snap.sha256})
    try:
        r = drill(lab, "backup", "restore-redis", bad, "--into", "tampered", "--approve", "data_restore_from_backup")
        assert r.returncode == 4, r.stderr
        assert f"its metadata says {snap.sha256}" in r.stderr and "tampered" not in recovered.records(lab.state)
    finally:
        _remove(endpoint, snap.key)
        _remove(endpoint, bad)


def _remove(endpoint: str, key: str) -> None:
    s3 = client("s3", endpoint)
    listing = s3.list_object_versions(Bucket="kerp-backups", Prefix=key)
    for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        if v["Key"] == key:
            s3.delete_object(Bucket="kerp-backups", Key=key, VersionId=v["VersionId"])
    ddb = client("dynamodb", endpoint)
    for it in ddb.scan(TableName="kerp-backup-metadata", FilterExpression="file_path = :p",
                       ExpressionAttributeValues={":p": {"S": f"s3://kerp-backups/{key}"}})["Items"]:
        ddb.delete_item(TableName="kerp-backup-metadata", Key={"backup_id": it["backup_id"]})
