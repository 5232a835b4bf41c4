"""AWS resources of the lab inside the moto server: the backups bucket, a KMS key, the backup metadata table."""

from __future__ import annotations

import boto3
from botocore.config import Config

LAB_REGION = "ap-northeast-2"
BUCKET = "kerp-backups"
KMS_ALIAS = "alias/kerp-backups"
METADATA_TABLE = "kerp-backup-metadata"
LAB_CREDENTIALS = {"aws_access_key_id": "drill-lab", "aws_secret_access_key": "drill-lab"}


def client(service: str, endpoint_url: str, region: str = LAB_REGION):
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region,
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
