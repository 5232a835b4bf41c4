"""Read-only AWS probes: RDS instance / cluster status and replica lag, Route 53 failover records, health checks
and answer, ElastiCache replication group, S3 backup replication, KMS key state. Region arguments are plan
regions ("primary", "dr"): each activity says which AWS region it reads, whatever the experiment's aws_region."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from harness.targets.aws import _aws

__all__ = ["cache_primary_region", "elasticache_replication_group", "kms_key_state", "rds_cluster_status",
           "rds_instance", "rds_instance_status", "rds_replica_lag", "route53_answer_region",
           "route53_failover_records", "route53_health_check_status", "s3_backup_replication"]


def _instance(t: _aws.AwsTarget, region: str) -> dict[str, Any]:
    ident = t.rid(region, "rds_instance_id")
    dbs = t.client("rds", region).describe_db_instances(DBInstanceIdentifier=ident).get("DBInstances") or []
    return dbs[0] if dbs else {}


def rds_instance(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """The RDS instance of `region`: {"id", "status", "replica_of", "replicas", "replication", "endpoint"}."""
    return _instance_view(_aws.resolve(configuration), region)


def _instance_view(t: _aws.AwsTarget, region: str) -> dict[str, Any]:
    d = _instance(t, region)
    infos = d.get("StatusInfos") or []
    return {"id": t.rid(region, "rds_instance_id"), "region": t.aws_region(region),
            "status": d.get("DBInstanceStatus"), "replica_of": d.get("ReadReplicaSourceDBInstanceIdentifier"),
            "replicas": list(d.get("ReadReplicaDBInstanceIdentifiers") or []),
            "replication": next((i.get("Status") for i in infos if i.get("StatusType") == "read replication"), None),
            "endpoint": (d.get("Endpoint") or {}).get("Address")}


def rds_instance_status(region: str = "primary", configuration: dict | None = None,
                        secrets: dict | None = None) -> str | None:
    """DBInstanceStatus of `region`'s RDS instance ("available", "stopped", "failed", ...)."""
    return _instance(_aws.resolve(configuration), region).get("DBInstanceStatus")


def rds_replica_lag(region: str = "dr", window_s: int = 300, configuration: dict | None = None,
                    secrets: dict | None = None) -> dict[str, Any]:
    """Replica lag of `region`'s read replica: the latest CloudWatch AWS/RDS ReplicaLag datapoint in the last
    `window_s` seconds, with the replication state from describe_db_instances. {"lag_s" (None: no datapoint),
    "replication", "at"}."""
    t = _aws.resolve(configuration)
    ident = t.rid(region, "rds_instance_id")
    now = datetime.now(timezone.utc)
    res = t.client("cloudwatch", region).get_metric_statistics(
        Namespace="AWS/RDS", MetricName="ReplicaLag", Dimensions=[{"Name": "DBInstanceIdentifier", "Value": ident}],
        StartTime=now - timedelta(seconds=int(window_s)), EndTime=now + timedelta(seconds=60), Period=60,
        Statistics=["Maximum"])
    points = sorted(res.get("Datapoints") or [], key=lambda p: p["Timestamp"])
    view = _instance_view(t, region)
    last = points[-1] if points else None
    return {"id": ident, "lag_s": float(last["Maximum"]) if last else None,
            "at": last["Timestamp"].isoformat() if last else None, "replication": view["replication"],
            "replica_of": view["replica_of"]}


def rds_cluster_status(cluster_id: str, region: str = "primary", configuration: dict | None = None,
                       secrets: dict | None = None) -> dict[str, Any]:
    """An Aurora cluster of `region`: {"status", "writer", "readers"}."""
    t = _aws.resolve(configuration)
    c = (t.client("rds", region).describe_db_clusters(DBClusterIdentifier=cluster_id).get("DBClusters") or [{}])[0]
    members = c.get("DBClusterMembers") or []
    return {"id": cluster_id, "status": c.get("Status"),
            "writer": next((m["DBInstanceIdentifier"] for m in members if m.get("IsClusterWriter")), None),
            "readers": [m["DBInstanceIdentifier"] for m in members if not m.get("IsClusterWriter")]}


# -- Route 53 ----------------------------------------------------------------------------------------
def zone_id(t: _aws.AwsTarget) -> str:
    """The hosted zone of the failover record: aws.route53.hosted_zone_id, else found by the record's name."""
    given = t.aws("route53.hosted_zone_id")
    if given:
        return str(given)
    record = str(t.aws("route53.record_name") or "")
    r53 = t.client("route53")
    labels = record.rstrip(".").split(".")
    for i in range(len(labels) - 1):
        name = ".".join(labels[i:]) + "."
        for z in r53.list_hosted_zones_by_name(DNSName=name, MaxItems="1").get("HostedZones") or []:
            if z["Name"] == name:
                return z["Id"].split("/")[-1]
    raise _aws.UsageError(f"environment {t.environment.name!r}: no hosted zone holds {record!r} "
                          f"(set aws.route53.hosted_zone_id)")


def failover_records(t: _aws.AwsTarget) -> list[dict[str, Any]]:
    record = str(t.aws("route53.record_name") or "")
    rtype = str(t.aws("route53.record_type") or "CNAME")
    out = []
    sets = t.client("route53").list_resource_record_sets(
        HostedZoneId=zone_id(t), StartRecordName=record, StartRecordType=rtype).get("ResourceRecordSets") or []
    for rs in sets:
        if rs["Name"].rstrip(".") == record.rstrip(".") and rs["Type"] == rtype and rs.get("Failover"):
            out.append(rs)
    return out


def route53_failover_records(configuration: dict | None = None, secrets: dict | None = None) -> list[dict]:
    """The failover record pair of the global endpoint: [{"failover", "set_identifier", "values",
    "health_check_id"}]."""
    t = _aws.resolve(configuration)
    return [{"failover": rs["Failover"], "set_identifier": rs.get("SetIdentifier"),
             "values": [r["Value"] for r in rs.get("ResourceRecords") or []],
             "health_check_id": rs.get("HealthCheckId")} for rs in failover_records(t)]


def health_check_id(t: _aws.AwsTarget, region: str) -> str:
    """`region`'s health check: regions.<r>.route53_health_check_id, else the one on its failover record."""
    given = t.region(region).get("route53_health_check_id")
    if given:
        return str(given)
    role = "PRIMARY" if region == "primary" else "SECONDARY"
    for rs in failover_records(t):
        if rs["Failover"] == role and rs.get("HealthCheckId"):
            return rs["HealthCheckId"]
    raise _aws.UsageError(f"environment {t.environment.name!r}: no health check for region {region!r}")


def health_check_view(t: _aws.AwsTarget, region: str) -> dict[str, Any]:
    r53 = t.client("route53")
    hc_id = health_check_id(t, region)
    obs = r53.get_health_check_status(HealthCheckId=hc_id).get("HealthCheckObservations") or []
    cfg = r53.get_health_check(HealthCheckId=hc_id).get("HealthCheck", {}).get("HealthCheckConfig", {})
    ok = [o for o in obs if str((o.get("StatusReport") or {}).get("Status", "")).startswith("Success")]
    return {"id": hc_id, "healthy": bool(obs) and len(ok) * 2 > len(obs), "checkers": len(obs),
            "checkers_ok": len(ok), "inverted": bool(cfg.get("Inverted")), "disabled": bool(cfg.get("Disabled"))}


def route53_health_check_status(region: str = "primary", configuration: dict | None = None,
                                secrets: dict | None = None) -> dict[str, Any]:
    """`region`'s Route 53 health check as the checkers report it (healthy: more than half say Success)."""
    return health_check_view(_aws.resolve(configuration), region)


def answer_region(t: _aws.AwsTarget) -> str | None:
    """Which plan region Route 53 answers the global record with (test_dns_answer, matched to the records)."""
    record = str(t.aws("route53.record_name") or "")
    rtype = str(t.aws("route53.record_type") or "CNAME")
    ans = t.client("route53").test_dns_answer(HostedZoneId=zone_id(t), RecordName=record, RecordType=rtype)
    values = {v.rstrip(".") for v in ans.get("RecordData") or []}
    for rs in failover_records(t):
        if values & {r["Value"].rstrip(".") for r in rs.get("ResourceRecords") or []}:
            return "primary" if rs["Failover"] == "PRIMARY" else "dr"
    return None


def route53_answer_region(configuration: dict | None = None, secrets: dict | None = None) -> str | None:
    """The plan region ("primary" / "dr") Route 53 answers the global endpoint with now."""
    return answer_region(_aws.resolve(configuration))


# -- ElastiCache ---------------------------------------------------------------------------------------
def cache_group(t: _aws.AwsTarget, region: str) -> tuple[Any, str]:
    """(client, group id) of `region`'s replication group. One group spanning both regions (the same id in both)
    lives in the primary region's API."""
    gid = t.rid(region, "elasticache_replication_group_id")
    shared = gid == t.region(_aws.other(region)).get("elasticache_replication_group_id")
    return t.client("elasticache", "primary" if shared else region), gid


def group_view(t: _aws.AwsTarget, region: str) -> dict[str, Any]:
    ec, gid = cache_group(t, region)
    groups = ec.describe_replication_groups(ReplicationGroupId=gid).get("ReplicationGroups") or [{}]
    g = groups[0]
    members = {m.get("CacheClusterId"): m.get("CurrentRole") for ng in g.get("NodeGroups") or []
               for m in ng.get("NodeGroupMembers") or []}
    return {"id": gid, "status": g.get("Status"), "members": members,
            "node_groups": [ng.get("NodeGroupId") for ng in g.get("NodeGroups") or []],
            "member_clusters": sorted(g.get("MemberClusters") or []),
            "automatic_failover": g.get("AutomaticFailover")}


def elasticache_replication_group(region: str = "primary", configuration: dict | None = None,
                                  secrets: dict | None = None) -> dict[str, Any]:
    """`region`'s ElastiCache replication group: {"status", "members": {cluster id: role}, ...}."""
    return group_view(_aws.resolve(configuration), region)


def member_of(t: _aws.AwsTarget, region: str, view: dict[str, Any]) -> str | None:
    """The member cluster standing in `region`: of a group spanning both regions, the members in creation order
    are the primary's then the DR's (their availability zones where the API reports them)."""
    clusters = view["member_clusters"]
    if not clusters:
        return None
    if view["id"] != t.region(_aws.other(region)).get("elasticache_replication_group_id"):
        return next((m for m, r in view["members"].items() if r == "primary"), clusters[0])
    return clusters[0] if region == "primary" else clusters[-1]


def cache_primary_region(configuration: dict | None = None, secrets: dict | None = None) -> str | None:
    """The plan region whose cache member is the primary now (a group spanning both regions)."""
    t = _aws.resolve(configuration)
    view = group_view(t, "primary")
    for region in _aws.REGIONS:
        if view["members"].get(member_of(t, region, view)) == "primary":
            return region
    return None


# -- backups: S3 and KMS --------------------------------------------------------------------------------
def s3_backup_replication(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """The backup buckets of both regions: versioning, the primary's replication rules, the newest object of
    each and whether the DR bucket holds the primary's newest backup."""
    t = _aws.resolve(configuration)
    out: dict[str, Any] = {}
    for region in _aws.REGIONS:
        s3, bucket = t.client("s3", region), t.rid(region, "s3_bucket")
        objs = s3.list_objects_v2(Bucket=bucket).get("Contents") or []
        newest = max(objs, key=lambda o: o["LastModified"], default=None)
        out[region] = {"bucket": bucket, "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status"),
                       "objects": len(objs), "newest": newest["Key"] if newest else None,
                       "newest_etag": newest.get("ETag") if newest else None}
    s3 = t.client("s3", "primary")
    try:
        rules = s3.get_bucket_replication(Bucket=out["primary"]["bucket"]).get("ReplicationConfiguration", {})
        out["replication_rules"] = [{"id": r.get("ID"), "status": r.get("Status"),
                                     "destination": (r.get("Destination") or {}).get("Bucket")}
                                    for r in rules.get("Rules") or []]
    except s3.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ReplicationConfigurationNotFoundError":
            raise
        out["replication_rules"] = []
    p, d = out["primary"], out["dr"]
    out["dr_has_newest"] = bool(p["newest"]) and p["newest"] == d["newest"] and p["newest_etag"] == d["newest_etag"]
    return out


def kms_key_state(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """The backups' KMS key (aws.kms_key_alias) in `region`: {"key_id", "state", "enabled"}."""
    t = _aws.resolve(configuration)
    alias = str(t.aws("kms_key_alias") or "")
    if not alias:
        raise _aws.UsageError(f"environment {t.environment.name!r}: aws.kms_key_alias is not set")
    md = t.client("kms", region).describe_key(KeyId=alias).get("KeyMetadata") or {}
    return {"alias": alias, "key_id": md.get("KeyId"), "state": md.get("KeyState"), "enabled": md.get("Enabled")}
