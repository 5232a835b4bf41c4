"""S3 faults with their rollbacks: a region's backup bucket made unavailable by a bucket policy that denies every
principal every action (objects are never deleted: the bucket is versioned, and lifting the policy brings it back
as it was)."""

from __future__ import annotations

import json
from typing import Any

from harness.safety import guard
from harness.targets.s3.probes import _client

__all__ = ["BLOCK_SID", "block_bucket", "bucket_blocked", "unblock_bucket"]

#: the statement id that marks the block as the drill's (a policy without it is never lifted by the rollback)
BLOCK_SID = "DrillRegionLostDenyAll"


def _policy(s3: Any, bucket: str) -> str | None:
    try:
        return s3.get_bucket_policy(Bucket=bucket)["Policy"]
    except Exception as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchBucketPolicy", "404"):
            return None
        raise


def _deny_all(bucket: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": BLOCK_SID, "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]})


def bucket_blocked(bucket: str = "", configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """Probe: the drill's deny-all policy is on `bucket` (default: the backups bucket)."""
    s3, default = _client(configuration, secrets)
    return BLOCK_SID in (_policy(s3, bucket or default) or "")


def block_bucket(bucket: str = "", region: str = "primary", configuration: dict | None = None,
                 secrets: dict | None = None) -> dict[str, Any]:
    """Make `bucket` (default: the primary region's backups bucket) unavailable: a bucket policy denying every
    principal every S3 action. Its previous policy is kept in the fault ledger. Rollback: unblock_bucket."""
    s3, default = _client(configuration, secrets)
    bucket = bucket or default
    previous = _policy(s3, bucket)
    if previous and BLOCK_SID in previous:
        previous = None  # already blocked by an earlier run that never rolled back: its rollback lifts it
    inj = guard.inject("block_bucket", f"s3:{bucket}", revert=(unblock_bucket, {"bucket": bucket,
                                                                               "previous_policy": previous}),
                       regions=(region,), components=("s3",), configuration=configuration,
                       details={"bucket": bucket, "had_policy": previous is not None})
    if not inj.proceed:
        return inj.to_dict()
    s3.put_bucket_policy(Bucket=bucket, Policy=_deny_all(bucket))
    return {"bucket": bucket, "blocked": True, "fault_id": inj.entry.id}


def unblock_bucket(bucket: str = "", previous_policy: str | None = None, configuration: dict | None = None,
                   secrets: dict | None = None) -> dict[str, Any]:
    """Lift the drill's deny-all policy from `bucket` (idempotent): its previous policy back, or none."""
    s3, default = _client(configuration, secrets)
    bucket = bucket or default
    current = _policy(s3, bucket)
    how = "not blocked"
    if current and BLOCK_SID in current:
        if previous_policy:
            s3.put_bucket_policy(Bucket=bucket, Policy=previous_policy)
            how = "previous policy restored"
        else:
            s3.delete_bucket_policy(Bucket=bucket)
            how = "policy removed"
    return {"bucket": bucket, "how": how, "reverted": guard.mark_reverted("block_bucket", f"s3:{bucket}",
                                                                          configuration)}
