"""Dry runs against real environments send nothing; an AWS environment refuses a wrong account or endpoint
before any other call (against a moto server behind a request-counting proxy)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from harness import clients
from harness.config.environment import load_environment_file
from harness.dryrun import DryRunRecorder
from harness.errors import SafetyRefusal

ROOT = Path(__file__).resolve().parents[2]
MOTO_ACCOUNT = "123456789012"  # moto's default account id

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Counter:
    """A loopback listener counting the connections it accepts (a dry run must open none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            c.close()

    def close(self) -> None:
        self._stop = True
        self._t.join(2)
        self.sock.close()


@pytest.fixture
def counter():
    c = Counter()
    yield c
    c.close()


@pytest.fixture(scope="module")
def moto_proxy(tmp_path_factory):
    """A moto server (as the lab runs it) behind a proxy that logs every request it forwards."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    log: list[dict] = []

    class Forward(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            log.append({"method": self.command, "path": self.path, "body": body.decode(errors="replace")})
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(self.command, self.path, body, {k: v for k, v in self.headers.items()})
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        def log_message(self, *a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", log
    server.shutdown()
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def aws_env(monkeypatch):
    """Moto accepts any credentials; nothing from the developer's own AWS setup may leak in."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def _env_file(tmp_path: Path, **aws) -> Path:
    d = yaml.safe_load((ROOT / "environments" / "example-aws.yaml").read_text())
    d["name"] = "aws-under-test"
    d["aws"].update(aws)
    p = tmp_path / "aws-under-test.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


# -- dry run ---------------------------------------------------------------------------------------
def test_a_dry_run_against_example_aws_lists_every_call_and_sends_none(counter, aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # no credentials at all: nothing is signed either
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    env = load_environment_file(ROOT / "environments" / "example-aws.yaml")
    rec = DryRunRecorder()
    seoul = clients.boto3_session(env, rec, region="primary")
    tokyo = clients.boto3_session(env, rec, region="dr")
    rds = tokyo.client("rds", endpoint_url=counter.url)
    out = rds.describe_db_instances(DBInstanceIdentifier="kerp-db-tokyo-replica")
    assert out["DBInstances"] == [] and out["ResponseMetadata"]["RequestId"] == "dry-run"
    rds.promote_read_replica(DBInstanceIdentifier="kerp-db-tokyo-replica", BackupRetentionPeriod=7)
    seoul.client("route53", endpoint_url=counter.url).change_resource_record_sets(
        HostedZoneId="Z0123456789ABCDEFGHIJ",
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": "erp.k-erp.example.com.", "Type": "CNAME", "SetIdentifier": "primary", "Failover": "PRIMARY",
            "TTL": 30, "ResourceRecords": [{"Value": "tokyo.erp.k-erp.example.com"}]}}]})
    seoul.client("elasticache").test_failover(ReplicationGroupId="kerp-cache-seoul", NodeGroupId="0001")
    seoul.client("s3").get_bucket_replication(Bucket="kerp-backups-prod")
    calls = rec.calls
    assert [(c["service"], c["operation"], c["resource"], c["region"]) for c in calls] == [
        ("rds", "DescribeDBInstances", "kerp-db-tokyo-replica", "ap-northeast-1"),
        ("rds", "PromoteReadReplica", "kerp-db-tokyo-replica", "ap-northeast-1"),
        ("route53", "ChangeResourceRecordSets", "Z0123456789ABCDEFGHIJ", "ap-northeast-2"),
        ("elasticache", "TestFailover", "kerp-cache-seoul", "ap-northeast-2"),
        ("s3", "GetBucketReplication", "kerp-backups-prod", "ap-northeast-2"),
    ]
    assert calls[1]["params"] == {"DBInstanceIdentifier": "kerp-db-tokyo-replica", "BackupRetentionPeriod": 7}
    assert calls[2]["params"]["ChangeBatch"]["Changes"][0]["ResourceRecordSet"]["Failover"] == "PRIMARY"
    time.sleep(0.3)
    assert counter.connections == 0


def test_a_dry_run_against_a_real_cluster_lists_every_call_and_sends_none(counter, tmp_path):
    from kubernetes import client as k8s

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kerp-seoul",
        "clusters": [{"name": c, "cluster": {"server": counter.url}} for c in ("seoul", "tokyo")],
        "users": [{"name": "drill", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": n, "context": {"cluster": c, "user": "drill"}}
                     for n, c in (("kerp-seoul", "seoul"), ("kerp-tokyo", "tokyo"))]}))
    d = yaml.safe_load((ROOT / "environments" / "example-k8s.yaml").read_text())
    d["kubernetes"]["kubeconfig"] = str(kubeconfig)
    (tmp_path / "k8s.yaml").write_text(yaml.safe_dump(d))
    env = load_environment_file(tmp_path / "k8s.yaml")
    rec = DryRunRecorder()
    core = k8s.CoreV1Api(clients.kubernetes_api(env, rec, region="primary"))
    pods = core.list_namespaced_pod("kerp-system", label_selector="app=kerp-voucher-service")
    assert pods.items == []
    core.delete_namespaced_pod("kerp-voucher-service-7d9f-abcde", "kerp-system")
    core.patch_node("ip-10-0-1-23", {"spec": {"unschedulable": True}})
    apps = k8s.AppsV1Api(clients.kubernetes_api(env, rec, region="dr"))
    apps.patch_namespaced_deployment_scale("kerp-voucher-service", "kerp-system", {"spec": {"replicas": 3}})
    got = [(c["operation"], c["resource"], c["params"]["query"], c["params"]["body"]) for c in rec.calls]
    assert got == [
        ("GET", "pods in namespace kerp-system", {"labelSelector": "app=kerp-voucher-service"}, None),
        ("DELETE", "pods/kerp-voucher-service-7d9f-abcde in namespace kerp-system", {}, None),
        ("PATCH", "nodes/ip-10-0-1-23", {}, {"spec": {"unschedulable": True}}),
        ("PATCH", "deployments/kerp-voucher-service/scale in namespace kerp-system", {}, {"spec": {"replicas": 3}}),
    ]
    assert {c["host"] for c in rec.calls} == {counter.url}
    time.sleep(0.3)
    assert counter.connections == 0


def test_inside_a_dry_run_every_client_of_the_process_is_intercepted(counter, aws_env, tmp_path):
    """Clients third-party activities build themselves (chaosaws: boto3.client; chaosk8s: its own ApiClient)."""
    import boto3
    from botocore.config import Config
    from kubernetes import client as k8s
    from kubernetes import config as kconfig

    from harness.dryrun import intercept_process

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": counter.url}}], "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    rec = DryRunRecorder()
    with intercept_process(rec):
        boto3.client("rds", region_name="ap-northeast-1", endpoint_url=counter.url).reboot_db_instance(
            DBInstanceIdentifier="kerp-db-seoul", ForceFailover=True)
        api = k8s.CoreV1Api(kconfig.new_client_from_config(config_file=str(kubeconfig)))
        api.create_namespaced_pod_eviction("web-1", "kerp-system", {"metadata": {"name": "web-1"}})
    assert [(c["service"], c["operation"], c["resource"]) for c in rec.calls] == [
        ("rds", "RebootDBInstance", "kerp-db-seoul"),
        ("kubernetes", "POST", "pods/web-1/eviction in namespace kerp-system")]
    assert rec.calls[0]["params"] == {"DBInstanceIdentifier": "kerp-db-seoul", "ForceFailover": True}
    time.sleep(0.3)
    assert counter.connections == 0
    # outside it, the same client reaches the wire again (the listener counts the connection)
    with pytest.raises(Exception):
        boto3.client("rds", region_name="ap-northeast-1", endpoint_url=counter.url,
                     config=Config(retries={"max_attempts": 1}, read_timeout=1, connect_timeout=1)
                     ).describe_db_instances()
    assert counter.connections >= 1


# -- real-AWS safety -------------------------------------------------------------------------------
def test_the_right_account_and_endpoint_pass_with_one_identity_call(moto_proxy, aws_env, tmp_path):
    url, log = moto_proxy
    env = load_environment_file(_env_file(tmp_path, account_id=MOTO_ACCOUNT, endpoint_url=url))
    n = len(log)
    assert clients.preflight_aws(env) == MOTO_ACCOUNT
    assert len(log) == n + 1 and "Action=GetCallerIdentity" in log[-1]["body"]


def test_a_wrong_account_is_refused_after_the_identity_call_only(moto_proxy, aws_env, tmp_path):
    url, log = moto_proxy
    env = load_environment_file(_env_file(tmp_path, endpoint_url=url))  # names 111122223333
    n = len(log)
    with pytest.raises(SafetyRefusal, match=f"^not injecting: the AWS caller identity is account {MOTO_ACCOUNT}, "
                                            f"environment 'aws-under-test' names account 111122223333$"):
        clients.preflight_aws(env)
    assert [x["body"] for x in log[n:]] == ["Action=GetCallerIdentity&Version=2011-06-15"]


@pytest.mark.parametrize("var", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_RDS"])
def test_an_endpoint_variable_the_file_does_not_name_is_refused_before_any_call(moto_proxy, aws_env, tmp_path,
                                                                              monkeypatch, var):
    url, log = moto_proxy
    monkeypatch.setenv(var, url)  # chaosaws and botocore would silently send there
    real = load_environment_file(_env_file(tmp_path, account_id=MOTO_ACCOUNT))  # no endpoint_url: real AWS
    n = len(log)
    with pytest.raises(SafetyRefusal, match=f"^not injecting: {var}={url} is set but environment 'aws-under-test' "
                                            f"names the real AWS endpoints"):
        clients.preflight_aws(real)
    other = load_environment_file(_env_file(tmp_path, account_id=MOTO_ACCOUNT, endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(SafetyRefusal, match=f"^not injecting: {var}={url} is not the aws.endpoint_url of environment "
                                            f"'aws-under-test' \\(http://127.0.0.1:9\\)$"):
        clients.preflight_aws(other)
    assert log[n:] == []


def _drill(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DRILL_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_CONFIG_FILE="/nonexistent",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent", DRILL_STATE_DIR=str(tmp_path / "no-lab"),
               KERP_DB_PASSWORD="pw-for-the-test", KERP_REDIS_AUTH_TOKEN="token-for-the-test")
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_drill_run_refuses_a_wrong_account_or_missing_gates_before_any_other_call(moto_proxy, tmp_path):
    url, log = moto_proxy
    f = _env_file(tmp_path, endpoint_url=url)
    n = len(log)
    # the profile's lab pre-approval does not count outside the lab: refused on the gate, no call at all
    r = _drill("ci-smoke", "--env", str(f), "--allow-env", "aws-under-test", "--report-dir", str(tmp_path / "a"),
               tmp_path=tmp_path)
    assert r.returncode == 5, r.stderr[-2000:]
    assert "not injecting" in r.stderr and "dr_region_switch" in r.stderr
    assert log[n:] == []
    # not allow-listed by the operator: refused, no call
    r = _drill("ci-smoke", "--env", str(f), "--approve", "dr_region_switch", "--report-dir", str(tmp_path / "b"),
               tmp_path=tmp_path)
    assert r.returncode == 5 and "is not on the allow-list" in " ".join(r.stderr.split()), r.stderr[-2000:]
    assert log[n:] == []
    # allowed and approved, but the caller is moto's account: one identity call, then refused
    r = _drill("ci-smoke", "--env", str(f), "--allow-env", "aws-under-test", "--approve", "dr_region_switch",
               "--report-dir", str(tmp_path / "c"), tmp_path=tmp_path)
    assert r.returncode == 5, r.stderr[-2000:]
    assert f"not injecting: the AWS caller identity is account {MOTO_ACCOUNT}" in " ".join(r.stderr.split())
    assert [x["body"] for x in log[n:]] == ["Action=GetCallerIdentity&Version=2011-06-15"]
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["environment"]["name"] == "aws-under-test" and report["environment"]["kind"] == "aws"
    assert report["exit_code"] == 5
    assert "Environment | aws-under-test (aws)" in (tmp_path / "c" / "report.md").read_text()
