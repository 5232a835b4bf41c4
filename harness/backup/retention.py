"""Retention of the plan's backup layers applied to the bucket: expired backups (every version) are deleted, the
ones inside the retention and the newest one never; the WAL archive keeps everything the oldest kept base
backup needs. Also the pre_test evidence that the plan's recent backups exist."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from harness.backup import dump
from harness.backup.layers import Held, RecentVerdict, expired, recent_backups
from harness.lab import aws, walarchive

__all__ = ["prune", "recent_verdict"]


def _delete_every_version(s3: Any, bucket: str, key: str) -> None:
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        if v["Key"] == key:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])


def _held(endpoint_url: str, bucket: str, prefix: str) -> list[Held]:
    return [Held(b.key, datetime.fromtimestamp(b.created_at or b.last_modified, tz=timezone.utc))
            for b in dump.list_backups(endpoint_url=endpoint_url, bucket=bucket, prefix=prefix, with_records=True)]


def _object_created(s3: Any, bucket: str, key: str, fallback: datetime) -> datetime:
    meta = s3.head_object(Bucket=bucket, Key=key).get("Metadata") or {}
    for name in ("created-at", "finished-at"):
        if meta.get(name):
            return datetime.fromisoformat(meta[name])
    return fallback


def _mark_expired(endpoint_url: str, bucket: str, key: str) -> None:
    """The metadata records of a backup retention deleted say so (the pre_test rule does not miss it)."""
    ddb = aws.client("dynamodb", endpoint_url)
    for rec in dump._metadata_records(endpoint_url, aws.METADATA_TABLE, bucket, key):
        ddb.update_item(TableName=aws.METADATA_TABLE, Key={"backup_id": rec["backup_id"]},
                        UpdateExpression="SET #s = :s", ExpressionAttributeNames={"#s": "status"},
                        ExpressionAttributeValues={":s": {"S": "expired"}})


def prune(plan: Any, ref: str, *, endpoint_url: str, bucket: str = aws.BUCKET, now: datetime | None = None,
          dry_run: bool = False) -> dict[str, Any]:
    """Apply layer `ref`'s retention ("LAYER.COMPONENT" of the plan); {"layer", "retention_s", "deleted", "kept"}."""
    _, comp = plan.backup_component(ref)
    now = now or datetime.now(timezone.utc)
    s3 = aws.client("s3", endpoint_url)
    if comp.kind == "wal":  # WAL older than the oldest kept base backup's start segment restores nothing
        bases = walarchive.base_backups(s3, bucket)
        if not bases:
            return {"layer": ref, "retention_s": comp.retention_s, "deleted": [], "kept": None}
        base_ref = next((r for r in plan.backup_refs() if plan.backup_component(r)[1].kind == "pg_basebackup"), None)
        base_comp = plan.backup_component(base_ref)[1] if base_ref else comp
        gone = set(expired([Held(b.key, b.finished_at) for b in bases], base_comp.retention_s or float("inf"), now))
        oldest = walarchive.segment_position(min((b for b in bases if b.key not in gone),
                                                 key=lambda b: b.finished_at).start_wal)
        keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=comp.prefix)
                for o in p.get("Contents", [])]
        doomed = []
        for k in keys:
            name = k[len(comp.prefix):].split(".")[0]
            if walarchive.WAL_NAME.match(name) and walarchive.segment_position(name) < oldest:
                doomed.append(k)
    else:
        items = _held(endpoint_url, bucket, comp.prefix)
        if comp.kind == "pg_basebackup":
            items = [Held(h.key, _object_created(s3, bucket, h.key, h.created_at)) for h in items]
        keys = [h.key for h in items]
        doomed = expired(items, comp.retention_s or float("inf"), now)
    if not dry_run:
        for k in doomed:
            _delete_every_version(s3, bucket, k)
            _mark_expired(endpoint_url, bucket, k)
    return {"layer": ref, "retention_s": comp.retention_s, "deleted": doomed, "kept": len(keys) - len(doomed),
            "dry_run": dry_run}


def recent_verdict(plan: Any, item_id: str, *, endpoint_url: str, bucket: str = aws.BUCKET,
                   metadata_table: str = aws.METADATA_TABLE, now: datetime | None = None) -> RecentVerdict:
    """The plan's backups_recent rule: the item's `count` newest recorded backups of its layer exist in S3 and
    the newest is within the layer's frequency plus the item's threshold."""
    item = plan.checklist_item(item_id)
    ref = item.layer or dump.DEFAULT_LAYER
    _, comp = plan.backup_component(ref)
    now = now or datetime.now(timezone.utc)
    s3 = aws.client("s3", endpoint_url)
    present = {o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=comp.prefix)
               for o in p.get("Contents", [])}
    records = []
    for path, rec in dump._records_by_path(endpoint_url, metadata_table).items():
        if not path.startswith(f"s3://{bucket}/{comp.prefix}") or rec.get("status", {}).get("S") == "expired":
            continue  # a backup the retention deleted on purpose is not missing
        created = rec.get("created_at", {}).get("S")
        if created:
            key = path[len(f"s3://{bucket}/"):]
            records.append(Held(key, datetime.fromisoformat(created), key in present))
    max_age = (comp.frequency_s or 0) + (item.threshold_s or 0)
    v = recent_backups(records, item.count or 1, max_age, now)
    return RecentVerdict(v.ok, f"{ref} (s3://{bucket}/{comp.prefix}): {v.observed}", v.newest)
