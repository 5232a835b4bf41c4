"""The lab's AWS control plane: plain boto3 calls on moto (endpoint from the topology) act on the real lab, and back.

One lab for the module; the tests run in file order: the non-destructive ones first, each restoring what it
changed (the Route 53 switch and back), then the promote of the Tokyo replica and the ElastiCache failover,
which leave the DR region serving writes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import boto3
import httpx
import psycopg
import pytest
import redis
from botocore.config import Config

from harness.lab.manager import Lab
from tests.timing import poll
from tests.labs import fresh_lab

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with fresh_lab("drill-awscp-") as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def topo(lab: Lab) -> dict[str, Any]:
    return lab.status()


@pytest.fixture(scope="module")
def aws(topo: dict[str, Any]):
    """boto3 clients by (service, region role), built as AWS code builds them, pointed at the lab's endpoint."""
    a = topo["aws"]

    def client(service: str, role: str = "primary"):
        return boto3.client(service, endpoint_url=a["endpoint_url"], region_name=a["regions"][role],
                            aws_access_key_id="drill-lab", aws_secret_access_key="drill-lab",
                            config=Config(retries={"max_attempts": 2}))

    return client


def _instance(aws, role: str, ident: str) -> dict[str, Any]:
    return aws("rds", role).describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]


def _status_is(aws, role: str, ident: str, status: str):
    def check():
        d = _instance(aws, role, ident)
        return d if d["DBInstanceStatus"] == status else None
    return check


def _in_recovery(dsn: str) -> bool:
    with psycopg.connect(dsn, connect_timeout=2) as c:
        return c.execute("SELECT pg_is_in_recovery()").fetchone()[0]


def test_resources_stand_for_the_lab(topo, aws):
    a = topo["aws"]
    assert a["regions"] == {"primary": "ap-northeast-2", "dr": "ap-northeast-1"}
    seoul, tokyo = a["rds"]["instances"]["primary"], a["rds"]["instances"]["dr"]
    p, r = _instance(aws, "primary", seoul), _instance(aws, "dr", tokyo)
    assert (p["Endpoint"]["Address"], p["Endpoint"]["Port"]) == ("127.0.0.1", topo["regions"]["primary"]["postgres"]["port"])
    assert (r["Endpoint"]["Address"], r["Endpoint"]["Port"]) == ("127.0.0.1", topo["regions"]["dr"]["postgres"]["port"])
    assert r["ReadReplicaSourceDBInstanceIdentifier"] == p["DBInstanceArn"]
    # the replica's state is the real standby's: streaming
    poll(lambda: (_instance(aws, "dr", tokyo).get("StatusInfos") or [{}])[0].get("Status") == "replicating", 5,
         "StatusInfos of the replica shows replicating")
    r53 = aws("route53")
    sets = [s for s in r53.list_resource_record_sets(HostedZoneId=a["route53"]["hosted_zone_id"])["ResourceRecordSets"]
            if s["Name"] == a["route53"]["record_name"]]
    assert {s["Failover"]: s["HealthCheckId"] for s in sets} == {
        "PRIMARY": a["route53"]["health_checks"]["primary"], "SECONDARY": a["route53"]["health_checks"]["dr"]}
    ans = r53.test_dns_answer(HostedZoneId=a["route53"]["hosted_zone_id"], RecordName=a["route53"]["record_name"],
                              RecordType="CNAME")
    assert ans["RecordData"] == [a["route53"]["endpoints"]["primary"]]
    group = aws("elasticache").describe_replication_groups(
        ReplicationGroupId=a["elasticache"]["replication_group_id"])["ReplicationGroups"][0]
    assert sorted(group["MemberClusters"]) == sorted(a["elasticache"]["members"].values())
    s3_dr = aws("s3", "dr")
    assert s3_dr.get_bucket_versioning(Bucket=a["buckets"]["dr"])["Status"] == "Enabled"
    assert s3_dr.get_bucket_location(Bucket=a["buckets"]["dr"])["LocationConstraint"] == "ap-northeast-1"


def test_replica_lag_is_a_cloudwatch_metric(topo, aws):
    tokyo = topo["aws"]["rds"]["instances"]["dr"]
    cw = aws("cloudwatch", "dr")

    def datapoints() -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc)
        return cw.get_metric_statistics(
            Namespace="AWS/RDS", MetricName="ReplicaLag", Dimensions=[{"Name": "DBInstanceIdentifier", "Value": tokyo}],
            StartTime=now - timedelta(minutes=10), EndTime=now + timedelta(minutes=1), Period=60,
            Statistics=["Maximum", "SampleCount"])["Datapoints"]

    points = poll(datapoints, 5, "ReplicaLag datapoints of the replica")
    assert sum(p["SampleCount"] for p in points) >= 1
    assert all(0 <= p["Maximum"] < 60 for p in points)  # streaming and caught up on an idle lab


def test_disabled_kms_key_refuses_to_encrypt(aws):
    kms = aws("kms")
    key = kms.create_key(Description="drill awscp test")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"ledger")["CiphertextBlob"]
    kms.disable_key(KeyId=key)
    for call in (lambda: kms.encrypt(KeyId=key, Plaintext=b"x"), lambda: kms.decrypt(CiphertextBlob=blob),
                 lambda: kms.generate_data_key(KeyId=key, KeySpec="AES_256")):
        with pytest.raises(kms.exceptions.DisabledException):
            call()
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"ledger"


def test_killed_primary_shows_as_failed(lab, topo, aws):
    seoul = topo["aws"]["rds"]["instances"]["primary"]
    tokyo = topo["aws"]["rds"]["instances"]["dr"]
    node = lab.pg_nodes()["primary"]
    node.kill()
    try:
        poll(_status_is(aws, "primary", seoul, "failed"), 5, "RDS status of the killed primary becomes failed")
        poll(lambda: (_instance(aws, "dr", tokyo).get("StatusInfos") or [{}])[0].get("Status") == "error", 5,
             "the replica's read replication shows error")
    finally:
        node.start()
    poll(_status_is(aws, "primary", seoul, "available"), 5, "RDS status of the restarted primary is available")
    poll(lambda: (_instance(aws, "dr", tokyo).get("StatusInfos") or [{}])[0].get("Status") == "replicating", 15,
         "the replica streams again")


def test_observer_never_holds_off_a_smart_shutdown(lab, topo, aws):
    """The control plane watches the standby on a connection; `pg_ctl stop -m smart` still completes."""
    tokyo = topo["aws"]["rds"]["instances"]["dr"]
    node = lab.pg_nodes()["dr"]
    poll(lambda: (_instance(aws, "dr", tokyo).get("StatusInfos") or [{}])[0].get("Status") == "replicating", 5,
         "the replica is watched and streaming")
    try:
        r = node.rt.run("pg_ctl", ["-D", str(node.data_dir), "-m", "smart", "-w", "-t", "10", "stop"],
                        timeout=20, check=False)
        assert r.returncode == 0, f"smart shutdown held off: {r.stdout} {r.stderr}"
        poll(_status_is(aws, "dr", tokyo, "failed"), 5, "the stopped standby shows as failed")
    finally:
        if not node.is_running():
            node.start()
    poll(lambda: (_instance(aws, "dr", tokyo).get("StatusInfos") or [{}])[0].get("Status") == "replicating", 15,
         "the standby streams again")


def test_stop_and_start_through_the_rds_api(lab, topo, aws):
    seoul = topo["aws"]["rds"]["instances"]["primary"]
    dsn = topo["regions"]["primary"]["postgres"]["dsn"]
    with psycopg.connect(dsn) as c:
        before = c.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    rds = aws("rds", "primary")
    assert rds.stop_db_instance(DBInstanceIdentifier=seoul)["DBInstance"]["DBInstanceStatus"] == "stopping"
    poll(_status_is(aws, "primary", seoul, "stopped"), 10, "instance stopped")
    assert not lab.pg_nodes()["primary"].is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=1).close()
    assert rds.start_db_instance(DBInstanceIdentifier=seoul)["DBInstance"]["DBInstanceStatus"] == "starting"
    poll(_status_is(aws, "primary", seoul, "available"), 10, "instance available again")
    with psycopg.connect(dsn) as c:  # data kept
        assert c.execute("SELECT count(*) FROM pg_class").fetchone()[0] == before
        assert c.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False


def test_reboot_with_failover_is_refused_for_a_single_az_instance(topo, aws):
    rds = aws("rds", "primary")
    with pytest.raises(rds.exceptions.ClientError) as e:
        rds.reboot_db_instance(DBInstanceIdentifier=topo["aws"]["rds"]["instances"]["primary"], ForceFailover=True)
    assert e.value.response["Error"]["Code"] == "InvalidParameterCombination"


def test_route53_failover_change_moves_the_router(topo, aws):
    a = topo["aws"]["route53"]
    router = topo["router"]["url"]
    r53 = aws("route53")

    def active() -> str:
        return httpx.get(router + "/_router/state", timeout=2).json()["active_region"]

    def dr_check_status() -> str:
        obs = r53.get_health_check_status(HealthCheckId=a["health_checks"]["dr"])["HealthCheckObservations"]
        return obs[0]["StatusReport"]["Status"]

    # the DR region runs no app (pilot light): its health check fails, as the router sees it
    poll(lambda: dr_check_status().startswith("Failure"), 5, "the DR health check reports Failure")
    assert active() == "primary"

    def upsert(region: str, role: str, checked: bool = True) -> dict[str, Any]:
        rrset = {"Name": a["record_name"], "Type": "CNAME", "SetIdentifier": a["set_identifiers"][region],
                 "Failover": role, "TTL": 30, "ResourceRecords": [{"Value": a["endpoints"][region]}]}
        if checked:
            rrset["HealthCheckId"] = a["health_checks"][region]
        return {"Action": "UPSERT", "ResourceRecordSet": rrset}

    # force Tokyo: its record becomes PRIMARY without a health check (Route 53 then always answers it)
    r53.change_resource_record_sets(HostedZoneId=a["hosted_zone_id"], ChangeBatch={"Changes": [
        upsert("dr", "PRIMARY", checked=False), upsert("primary", "SECONDARY")]})
    try:
        poll(lambda: active() == "dr", 5, "the router's active region follows the failover record to dr")
        assert r53.test_dns_answer(HostedZoneId=a["hosted_zone_id"], RecordName=a["record_name"],
                                   RecordType="CNAME")["RecordData"] == [a["endpoints"]["dr"]]
    finally:  # the records as they were send it home
        r53.change_resource_record_sets(HostedZoneId=a["hosted_zone_id"], ChangeBatch={"Changes": [
            upsert("primary", "PRIMARY"), upsert("dr", "SECONDARY")]})
    poll(lambda: active() == "primary", 5, "the router's active region is primary again")
    httpx.delete(router + "/_router/override", timeout=2).raise_for_status()  # lab restore: automatic routing


def test_promote_read_replica_makes_the_standby_writable(topo, aws):
    tokyo = topo["aws"]["rds"]["instances"]["dr"]
    seoul = topo["aws"]["rds"]["instances"]["primary"]
    dsn = topo["regions"]["dr"]["postgres"]["dsn"]
    assert _in_recovery(dsn)
    out = aws("rds", "dr").promote_read_replica(DBInstanceIdentifier=tokyo)["DBInstance"]
    assert out["DBInstanceStatus"] == "modifying"
    poll(lambda: not _in_recovery(dsn), 5, "the lab standby leaves recovery (pg_is_in_recovery() false)")
    with psycopg.connect(dsn) as c:
        c.execute("CREATE TABLE awscp_promoted (x int)")
        c.execute("INSERT INTO awscp_promoted VALUES (1)")
    d = poll(_status_is(aws, "dr", tokyo, "available"), 5, "the promoted instance is available")
    assert "ReadReplicaSourceDBInstanceIdentifier" not in d
    assert _instance(aws, "primary", seoul)["ReadReplicaDBInstanceIdentifiers"] == []


def test_elasticache_test_failover_promotes_the_valkey_replica(topo, aws):
    ec = topo["aws"]["elasticache"]
    ports = {r: topo["regions"][r]["redis"]["port"] for r in ("primary", "dr")}
    assert redis.Redis(port=ports["dr"]).info("replication")["role"] == "slave"
    aws("elasticache").test_failover(ReplicationGroupId=ec["replication_group_id"], NodeGroupId="0001")
    poll(lambda: redis.Redis(port=ports["dr"]).info("replication")["role"] == "master", 5,
         "the Valkey replica becomes the master")
    poll(lambda: redis.Redis(port=ports["primary"]).info("replication").get("master_port") == ports["dr"], 10,
         "the old master replicates from the new one")
    members = aws("elasticache").describe_replication_groups(
        ReplicationGroupId=ec["replication_group_id"])["ReplicationGroups"][0]["NodeGroups"][0]["NodeGroupMembers"]
    assert {m["CacheClusterId"]: m["CurrentRole"] for m in members} == {
        ec["members"]["dr"]: "primary", ec["members"]["primary"]: "replica"}
