"""Mutating AWS actions, each with a named idempotent rollback: RDS stop / start / reboot / promote read replica /
Aurora cluster failover, the Route 53 failover switch (record pair or health-check inversion), ElastiCache
test_failover, a cross-region copy of the newest backup. What chaosaws has (RDS stop, reboot, cluster failover)
experiments may take from chaosaws; these are what it lacks, and what the runbook's AWS planes act through.

Region arguments are plan regions ("primary", "dr"): an activity acting in the DR region says so. In a dry run
the mutating call goes through the intercepted client (recorded, never sent) and waits are skipped.
"""

from __future__ import annotations

import time
from typing import Any

from harness.targets.aws import _aws, probes

__all__ = ["elasticache_failover", "rds_failover_db_cluster", "rds_promote_read_replica", "rds_reboot_instance",
           "rds_start_instance", "rds_stop_instance", "route53_restore_failover", "route53_set_health_check_inverted",
           "route53_switch_failover", "s3_copy_latest_backup"]

WAIT_S = 180.0


def _status(t: _aws.AwsTarget, region: str) -> str | None:
    return probes._instance(t, region).get("DBInstanceStatus")


def _wait_status(t: _aws.AwsTarget, region: str, want: str, timeout_s: float) -> str:
    ident = t.rid(region, "rds_instance_id")
    return _aws.wait_until(lambda: (_status(t, region) == want) and want, timeout_s,
                           f"RDS instance {ident} status {want}")


# -- RDS -------------------------------------------------------------------------------------------
def _change_instance(t: _aws.AwsTarget, region: str, call: str, final: str, transient: str, wait: bool,
                     timeout_s: float) -> dict[str, Any]:
    """stop_db_instance / start_db_instance on `region`'s instance unless it is already `final` or `transient`;
    waits for `final` when `wait` (never in a dry run, whose call is only recorded)."""
    ident = t.rid(region, "rds_instance_id")
    before = None if t.dry_run else _status(t, region)
    if before in (final, transient):
        return {"id": ident, "changed": False, "status": before}
    getattr(t.client("rds", region), call)(DBInstanceIdentifier=ident)
    status = _wait_status(t, region, final, timeout_s) if wait and not t.dry_run else transient
    return {"id": ident, "changed": True, "before": before, "status": status, "dry_run": t.dry_run}


def stop_instance(t: _aws.AwsTarget, region: str, wait: bool, timeout_s: float) -> dict[str, Any]:
    return _change_instance(t, region, "stop_db_instance", "stopped", "stopping", wait, timeout_s)


def rds_stop_instance(region: str = "primary", wait: bool = True, timeout_s: float = WAIT_S,
                      configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Stop `region`'s RDS instance (no-op when stopped) and wait until `stopped`. Rollback: rds_start_instance."""
    return stop_instance(_aws.resolve(configuration), _aws.check_region(region), wait, timeout_s)


def start_instance(t: _aws.AwsTarget, region: str, wait: bool, timeout_s: float) -> dict[str, Any]:
    return _change_instance(t, region, "start_db_instance", "available", "starting", wait, timeout_s)


def rds_start_instance(region: str = "primary", wait: bool = True, timeout_s: float = WAIT_S,
                       configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Start `region`'s stopped RDS instance (no-op when available) and wait until `available` (chaosaws has no
    start). The rollback of rds_stop_instance."""
    return start_instance(_aws.resolve(configuration), _aws.check_region(region), wait, timeout_s)


def rds_reboot_instance(region: str = "primary", force_failover: bool = False, wait: bool = True,
                        timeout_s: float = WAIT_S, configuration: dict | None = None,
                        secrets: dict | None = None) -> dict[str, Any]:
    """Reboot `region`'s RDS instance (with a Multi-AZ failover when `force_failover`) and wait until
    `available` again. Rollback: none needed (rds_start_instance when it stayed down)."""
    t = _aws.resolve(configuration)
    ident = t.rid(_aws.check_region(region), "rds_instance_id")
    t.client("rds", region).reboot_db_instance(DBInstanceIdentifier=ident, ForceFailover=bool(force_failover))
    if wait and not t.dry_run:
        _wait_status(t, region, "available", timeout_s)
    return {"id": ident, "force_failover": bool(force_failover), "dry_run": t.dry_run}


def promote_replica(t: _aws.AwsTarget, region: str, wait: bool, timeout_s: float) -> dict[str, Any]:
    """promote_read_replica of `region`'s instance unless it is no replica; waits until it is `available` and
    no longer names a source. {"id", "already_primary", "seconds"}."""
    ident = t.rid(region, "rds_instance_id")
    t0 = time.monotonic()
    if not t.dry_run and not probes._instance(t, region).get("ReadReplicaSourceDBInstanceIdentifier"):
        return {"id": ident, "already_primary": True, "seconds": 0.0}
    t.client("rds", region).promote_read_replica(DBInstanceIdentifier=ident)
    if wait and not t.dry_run:
        def promoted() -> bool:
            d = probes._instance(t, region)
            return d.get("DBInstanceStatus") == "available" and not d.get("ReadReplicaSourceDBInstanceIdentifier")

        _aws.wait_until(promoted, timeout_s, f"RDS read replica {ident} promoted and available")
    return {"id": ident, "already_primary": False, "seconds": round(time.monotonic() - t0, 3), "dry_run": t.dry_run}


def rds_promote_read_replica(region: str = "dr", wait: bool = True, timeout_s: float = WAIT_S,
                             configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Promote `region`'s cross-region read replica to a standalone writable instance (chaosaws has no promote) and
    wait until it is available. Rollback: none through the API (a replica is re-created or re-linked by failback)."""
    return promote_replica(_aws.resolve(configuration), _aws.check_region(region), wait, timeout_s)


def rds_failover_db_cluster(cluster_id: str, target_instance: str | None = None, region: str = "primary",
                            configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Aurora: fail cluster `cluster_id` of `region` over (to `target_instance` when given). Rollback: the same
    action towards the old writer."""
    t = _aws.resolve(configuration)
    kw: dict[str, Any] = {"DBClusterIdentifier": cluster_id}
    if target_instance:
        kw["TargetDBInstanceIdentifier"] = target_instance
    before = None if t.dry_run else probes.rds_cluster_status(cluster_id, region, configuration)["writer"]
    t.client("rds", _aws.check_region(region)).failover_db_cluster(**kw)
    return {"id": cluster_id, "writer_before": before, "target": target_instance, "dry_run": t.dry_run}


# -- Route 53 ----------------------------------------------------------------------------------------
def switch_records(t: _aws.AwsTarget, to_region: str, pin: bool = False) -> dict[str, Any]:
    """UPSERT the failover pair so that `to_region`'s record is PRIMARY (without its health check when `pin`:
    a PRIMARY with no health check is always answered) and the other's SECONDARY. No change when already so."""
    zone = probes.zone_id(t)
    records = probes.failover_records(t) if not t.dry_run else []
    by_set = {rs.get("SetIdentifier"): rs for rs in records}
    want: list[dict[str, Any]] = []
    for region in _aws.REGIONS:
        set_id = t.aws_region(region)
        cur = by_set.get(set_id, {})
        role = "PRIMARY" if region == to_region else "SECONDARY"
        rs: dict[str, Any] = {"Name": str(t.aws("route53.record_name")), "Type": str(t.aws("route53.record_type")
                                                                                      or "CNAME"),
                              "SetIdentifier": set_id, "Failover": role, "TTL": int(cur.get("TTL") or 30),
                              "ResourceRecords": cur.get("ResourceRecords")
                              or [{"Value": str((t.region(region).get("endpoints") or {}).get("app") or set_id)}]}
        if not (pin and region == to_region):
            rs["HealthCheckId"] = probes.health_check_id(t, region) if t.dry_run or records else None
        if rs.get("HealthCheckId") is None:
            rs.pop("HealthCheckId", None)
        want.append(rs)
    same = records and all(
        by_set.get(w["SetIdentifier"], {}).get("Failover") == w["Failover"]
        and by_set.get(w["SetIdentifier"], {}).get("HealthCheckId") == w.get("HealthCheckId") for w in want)
    if same:
        return {"changed": False, "primary_record": t.aws_region(to_region), "pinned": pin}
    res = t.client("route53").change_resource_record_sets(HostedZoneId=zone, ChangeBatch={
        "Comment": f"drill: failover record pair to {to_region}" + (" (pinned)" if pin else ""),
        "Changes": [{"Action": "UPSERT", "ResourceRecordSet": w} for w in want]})
    return {"changed": True, "primary_record": t.aws_region(to_region), "pinned": pin,
            "change_id": (res.get("ChangeInfo") or {}).get("Id"), "dry_run": t.dry_run}


def route53_switch_failover(to_region: str = "dr", pin: bool = False, configuration: dict | None = None,
                            secrets: dict | None = None) -> dict[str, Any]:
    """Point the global record's failover pair at `to_region` (its record PRIMARY; without its health check when
    `pin`). Rollback: route53_restore_failover."""
    return switch_records(_aws.resolve(configuration), _aws.check_region(to_region), pin)


def route53_restore_failover(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """The pair as built: the primary region's record PRIMARY, the DR's SECONDARY, each with its health check, and
    no health check left inverted. The rollback of the Route 53 actions (idempotent)."""
    t = _aws.resolve(configuration)
    out = switch_records(t, "primary", pin=False)
    out["uninverted"] = [r for r in _aws.REGIONS if set_inverted(t, r, False)["changed"]]
    return out


def set_inverted(t: _aws.AwsTarget, region: str, inverted: bool) -> dict[str, Any]:
    hc_id = probes.health_check_id(t, region)
    r53 = t.client("route53")
    if not t.dry_run:
        cur = r53.get_health_check(HealthCheckId=hc_id)["HealthCheck"]["HealthCheckConfig"].get("Inverted", False)
        if bool(cur) == bool(inverted):
            return {"id": hc_id, "inverted": bool(inverted), "changed": False}
    r53.update_health_check(HealthCheckId=hc_id, Inverted=bool(inverted))
    return {"id": hc_id, "inverted": bool(inverted), "changed": True, "dry_run": t.dry_run}


def route53_set_health_check_inverted(region: str = "primary", inverted: bool = True,
                                      configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Invert (or restore) `region`'s Route 53 health check: an inverted healthy check reports unhealthy, so the
    failover answer leaves that region. Rollback: route53_restore_failover."""
    return set_inverted(_aws.resolve(configuration), _aws.check_region(region), inverted)


# -- ElastiCache -------------------------------------------------------------------------------------
def cache_failover(t: _aws.AwsTarget, to_region: str, wait: bool, timeout_s: float) -> dict[str, Any]:
    """test_failover of the replication group so that `to_region`'s member is the primary; {"already_master"}."""
    ec, gid = probes.cache_group(t, to_region)
    if t.dry_run:
        ec.test_failover(ReplicationGroupId=gid, NodeGroupId="0001")
        return {"id": gid, "already_master": False, "dry_run": True}
    view = probes.group_view(t, to_region)
    member = probes.member_of(t, to_region, view)
    if view["members"].get(member) == "primary":
        return {"id": gid, "member": member, "already_master": True}
    ec.test_failover(ReplicationGroupId=gid, NodeGroupId=(view["node_groups"] or ["0001"])[0])
    if wait:
        def done() -> bool:
            v = probes.group_view(t, to_region)
            return v["status"] == "available" and v["members"].get(member) == "primary"

        _aws.wait_until(done, timeout_s, f"ElastiCache {gid}: member {member} primary")
    return {"id": gid, "member": member, "already_master": False}


def elasticache_failover(to_region: str = "dr", wait: bool = True, timeout_s: float = WAIT_S,
                         configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """ElastiCache test_failover: `to_region`'s member of the replication group becomes the primary (no-op when
    it is). Rollback: the same action towards the other region."""
    return cache_failover(_aws.resolve(configuration), _aws.check_region(to_region), wait, timeout_s)


# -- S3 ------------------------------------------------------------------------------------------------
def s3_copy_latest_backup(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Copy the primary backup bucket's newest object to the DR region's bucket (a cross-region copy, for a bucket
    without replication rules). Rollback: none needed (the copy is a new version in the DR bucket)."""
    t = _aws.resolve(configuration)
    src_bucket, dst_bucket = t.rid("primary", "s3_bucket"), t.rid("dr", "s3_bucket")
    objs = t.client("s3", "primary").list_objects_v2(Bucket=src_bucket).get("Contents") or []
    newest = max(objs, key=lambda o: o["LastModified"], default=None)
    if newest is None:
        return {"copied": None, "reason": f"bucket {src_bucket} holds no backup"}
    t.client("s3", "dr").copy_object(Bucket=dst_bucket, Key=newest["Key"],
                                     CopySource={"Bucket": src_bucket, "Key": newest["Key"]})
    return {"copied": newest["Key"], "from": src_bucket, "to": dst_bucket, "dry_run": t.dry_run}
