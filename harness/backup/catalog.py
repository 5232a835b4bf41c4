"""The plan's backup layers on the lab: take one (`drill backup create --layer`), list them all with layer, age,
size and verification, apply their retention."""

from __future__ import annotations

from typing import Any

from harness.backup import dump, replicate, retention
from harness.config import load_plan
from harness.errors import UsageError
from harness.lab import aws, walarchive
from harness.workload import find_primary_dsn

__all__ = ["listing", "prune_all", "take"]


def _plan(plan: Any | None) -> Any:
    return plan if plan is not None else load_plan()


def take(lab: Any, topo: dict[str, Any], ref: str, *, endpoint_url: str, bucket: str = aws.BUCKET,
         plan: Any | None = None) -> dict[str, Any]:
    """Take one backup of layer `ref` ("LAYER.COMPONENT"), then apply that layer's retention; the backup as a dict
    plus {"retention": prune result}."""
    the_plan = _plan(plan)
    _, comp = the_plan.backup_component(ref)
    if comp.kind == "pg_dump":
        info = dump.create(find_primary_dsn(topo), pg_runtime=lab.pg_runtime(), endpoint_url=endpoint_url,
                           bucket=bucket, prefix=comp.prefix, layer=ref).to_dict()
    elif comp.kind == "pg_basebackup":
        dsn = find_primary_dsn(topo)
        node = next(n for n in lab.pg_nodes().values() if f":{n.port}/" in dsn)
        b = walarchive.base_backup(node, endpoint_url, bucket)
        info = {"key": b.key, "layer": ref, "size": b.size, "sha256": b.sha256, **b.to_dict()}
    elif comp.kind == "redis_rdb":
        from harness.backup import redis_snapshot

        info = redis_snapshot.create(topo, endpoint_url=endpoint_url, bucket=bucket, prefix=comp.prefix,
                                     layer=ref).to_dict()
    else:
        how = "is taken continuously by the lab, not on demand" if comp.kind == "wal" else "is not taken by drill"
        takeable = [r for r in the_plan.backup_refs() if the_plan.backup_component(r)[1].kind != "wal"]
        raise UsageError(f"layer {ref!r} {how} (on demand: {', '.join(takeable)})")
    info["dr_copy"] = replicate.copy_to_dr(endpoint_url, info["key"], info["sha256"], bucket=bucket)
    info["retention"] = retention.prune(the_plan, ref, endpoint_url=endpoint_url, bucket=bucket)
    return info


def listing(ref: str | None, *, endpoint_url: str, bucket: str = aws.BUCKET, plan: Any | None = None) -> list[Any]:
    """BackupInfo of layer `ref` (None: every layer but the WAL archive), newest first."""
    the_plan = _plan(plan)
    refs = [ref] if ref else [r for r in the_plan.backup_refs() if the_plan.backup_component(r)[1].kind != "wal"]
    out = []
    for r in refs:
        _, comp = the_plan.backup_component(r)
        out += dump.list_backups(endpoint_url=endpoint_url, bucket=bucket, prefix=comp.prefix, layer=r,
                                 with_records=True)
    return sorted(out, key=lambda b: b.created_at or b.last_modified, reverse=True)


def prune_all(ref: str | None, *, endpoint_url: str, bucket: str = aws.BUCKET, dry_run: bool = False,
              plan: Any | None = None) -> list[dict[str, Any]]:
    """Apply the retention of layer `ref` (None: every layer the harness takes), WAL last."""
    the_plan = _plan(plan)
    refs = [ref] if ref else sorted(the_plan.backup_refs(), key=lambda r: the_plan.backup_component(r)[1].kind == "wal")
    for r in refs:
        the_plan.backup_component(r)  # an unknown layer is refused before anything is deleted
    return [retention.prune(the_plan, r, endpoint_url=endpoint_url, bucket=bucket, dry_run=dry_run) for r in refs]
