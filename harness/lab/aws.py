"""AWS resources of the lab inside moto: backups (bucket, KMS key, metadata table) and the control plane (RDS, Route 53, ElastiCache, DR bucket)."""

from __future__ import annotations

import time

import boto3
from botocore.config import Config

LAB_REGION = "ap-northeast-2"
BUCKET = "kerp-backups"
KMS_ALIAS = "alias/kerp-backups"
METADATA_TABLE = "kerp-backup-metadata"
LAB_CREDENTIALS = {"aws_access_key_id": "drill-lab", "aws_secret_access_key": "drill-lab"}


def client(service: str, endpoint_url: str):
    return boto3.client(service, endpoint_url=endpoint_url, region_name=LAB_REGION,
                        config=Config(retries={"max_attempts": 3}, connect_timeout=2, read_timeout=10),
                        **LAB_CREDENTIALS)


def provision(endpoint_url: str) -> dict[str, str]:
    """Create (idempotently) what the backup drills need; returns their identifiers."""
    s3 = client("s3", endpoint_url)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": LAB_REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    kms = client("kms", endpoint_url)
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases().get("Aliases", [])}
    key_id = aliases.get(KMS_ALIAS)
    if not key_id:
        key_id = kms.create_key(Description="K-ERP backup encryption (drill lab)")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=key_id)
    ddb = client("dynamodb", endpoint_url)
    if METADATA_TABLE not in ddb.list_tables().get("TableNames", []):
        ddb.create_table(TableName=METADATA_TABLE,
                         KeySchema=[{"AttributeName": "backup_id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "backup_id", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
    return {"bucket": BUCKET, "kms_key_id": key_id, "metadata_table": METADATA_TABLE}


# -- the control plane: the lab's PostgreSQL pair, global endpoint, Valkey pair and DR bucket as AWS resources --
DR_REGION = "ap-northeast-1"
REGIONS = {"primary": LAB_REGION, "dr": DR_REGION}
RDS_INSTANCES = {"primary": "kerp-db-primary", "dr": "kerp-db-replica"}
HOSTED_ZONE = "kerp.lab."
RECORD_NAME = "erp.kerp.lab."
#: the value of each region's failover record: the name of that region's application endpoint
REGION_ENDPOINTS = {"primary": "erp.ap-northeast-2.kerp.lab", "dr": "erp.ap-northeast-1.kerp.lab"}
REPLICATION_GROUP = "kerp-cache"
DR_BUCKET = "kerp-backups-dr"
#: the DR region's backup key (same alias, that region's own key)
DR_KMS_ALIAS = "alias/kerp-backups"
CONTROLPLANE_FILE = "aws-controlplane.json"
IDS_FILE = "aws-ids.json"


def regional_client(service: str, endpoint_url: str, region: str):
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region,
                        config=Config(retries={"max_attempts": 3}, connect_timeout=2, read_timeout=10),
                        **LAB_CREDENTIALS)


def provision_control_plane(endpoint_url: str, ports: dict[str, int]) -> dict:
    """Create the lab's RDS pair, Route 53 zone / failover records / health checks, ElastiCache group and
    DR bucket in moto, with boto3 calls as on AWS; returns the ids and the lab mapping of each resource."""
    rds = regional_client("rds", endpoint_url, LAB_REGION)
    rds_dr = regional_client("rds", endpoint_url, DR_REGION)
    seoul, tokyo = RDS_INSTANCES["primary"], RDS_INSTANCES["dr"]
    primary = rds.create_db_instance(
        DBInstanceIdentifier=seoul, Engine="postgres", EngineVersion="18.1", DBInstanceClass="db.r6g.large",
        AllocatedStorage=100, MasterUsername="postgres", MasterUserPassword="drill-lab-only",
        DBName="kerp", Port=ports["postgres_primary"], MultiAZ=False, BackupRetentionPeriod=7,
        Tags=[{"Key": "drill:lab-node", "Value": "primary"}])["DBInstance"]
    rds_dr.create_db_instance_read_replica(
        DBInstanceIdentifier=tokyo, SourceDBInstanceIdentifier=primary["DBInstanceArn"], SourceRegion=LAB_REGION,
        DBInstanceClass="db.r6g.large", Port=ports["postgres_dr"],
        Tags=[{"Key": "drill:lab-node", "Value": "dr"}])
    # Route 53: the global endpoint as a PRIMARY/SECONDARY failover pair, one health check per region
    r53 = regional_client("route53", endpoint_url, LAB_REGION)
    zone_id = r53.create_hosted_zone(Name=HOSTED_ZONE, CallerReference=f"drill-lab-{time.time_ns()}"
                                     )["HostedZone"]["Id"].split("/")[-1]
    health_checks = {}
    for region in ("primary", "dr"):
        hc = r53.create_health_check(CallerReference=f"drill-lab-{region}-{time.time_ns()}", HealthCheckConfig={
            "Type": "HTTP", "IPAddress": "127.0.0.1", "Port": ports[f"app_{region}_0"], "ResourcePath": "/health",
            "RequestInterval": 10, "FailureThreshold": 3})["HealthCheck"]
        health_checks[region] = hc["Id"]
    r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": RECORD_NAME, "Type": "CNAME", "SetIdentifier": REGIONS[region], "Failover": role, "TTL": 30,
            "HealthCheckId": health_checks[region], "ResourceRecords": [{"Value": REGION_ENDPOINTS[region]}]}}
        for region, role in (("primary", "PRIMARY"), ("dr", "SECONDARY"))]})
    # ElastiCache: the Valkey pair as one replication group (member 001 = primary region, 002 = DR region)
    ec = regional_client("elasticache", endpoint_url, LAB_REGION)
    group = ec.create_replication_group(
        ReplicationGroupId=REPLICATION_GROUP, ReplicationGroupDescription="K-ERP session cache (drill lab)",
        Engine="valkey", CacheNodeType="cache.r7g.large", ReplicasPerNodeGroup=1, AutomaticFailoverEnabled=True,
        Port=ports["redis_primary"])["ReplicationGroup"]
    members = sorted(group["MemberClusters"])
    # the DR-region backup bucket, versioned like the primary one, and that region's backup key
    ensure_dr_backups(endpoint_url)
    return {
        "endpoint_url": endpoint_url,
        "regions": dict(REGIONS),
        "rds": {"instances": {"primary": seoul, "dr": tokyo}, "primary_arn": primary["DBInstanceArn"]},
        "route53": {"hosted_zone_id": zone_id, "zone_name": HOSTED_ZONE, "record_name": RECORD_NAME,
                    "record_type": "CNAME", "health_checks": health_checks,
                    "set_identifiers": dict(REGIONS), "endpoints": dict(REGION_ENDPOINTS)},
        "elasticache": {"region": LAB_REGION, "replication_group_id": REPLICATION_GROUP,
                        "members": {"primary": members[0], "dr": members[1]}},
        "buckets": {"primary": BUCKET, "dr": DR_BUCKET},
    }


def controller_mapping(cp: dict, ports: dict[str, int]) -> dict:
    """What the control-plane process reconciles: each resource id -> the lab process it stands for."""
    return {
        "rds": {ident: {"region": REGIONS[node], "node": node, "port": ports[f"postgres_{node}"]}
                for node, ident in cp["rds"]["instances"].items()},
        "route53": {"zone_id": cp["route53"]["hosted_zone_id"], "record_name": cp["route53"]["record_name"],
                    "record_type": cp["route53"]["record_type"],
                    "health_checks": {hc: region for region, hc in cp["route53"]["health_checks"].items()},
                    "values": {v: region for region, v in cp["route53"]["endpoints"].items()}},
        "elasticache": {"replication_group_id": cp["elasticache"]["replication_group_id"],
                        "members": {m: region for region, m in cp["elasticache"]["members"].items()}},
    }


def ensure_dr_backups(endpoint_url: str) -> None:
    """The DR-region bucket (versioned) and that region's KMS key, created when absent (idempotent)."""
    s3 = regional_client("s3", endpoint_url, DR_REGION)
    if DR_BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=DR_BUCKET, CreateBucketConfiguration={"LocationConstraint": DR_REGION})
        s3.put_bucket_versioning(Bucket=DR_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    kms = regional_client("kms", endpoint_url, DR_REGION)
    if DR_KMS_ALIAS not in {a["AliasName"] for a in kms.list_aliases().get("Aliases", [])}:
        key_id = kms.create_key(Description="K-ERP backup encryption, DR region (drill lab)")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=DR_KMS_ALIAS, TargetKeyId=key_id)
