"""`drill run ci-smoke --env example-aws --dry-run`: the region fault and the runbook go through the AWS and
Kubernetes planes, every call is recorded in report.json and none leaves the process; a wrong endpoint is refused
(exit 5) before any call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.test_environment_safety import ROOT, counter  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

#: the fault (Seoul's instance stopped), the runbook (Tokyo promoted, its cache failed over, the record pair switched
#: then pinned, Seoul fenced: its status is not read in a dry run, so the stop is planned again), in order
MUTATING = [
    ("rds", "StopDBInstance", "kerp-db-seoul", "ap-northeast-2"),
    ("rds", "PromoteReadReplica", "kerp-db-tokyo-replica", "ap-northeast-1"),
    ("elasticache", "TestFailover", "kerp-cache-tokyo", "ap-northeast-1"),
    ("route53", "ChangeResourceRecordSets", "Z0123456789ABCDEFGHIJ", "ap-northeast-2"),
    ("route53", "ChangeResourceRecordSets", "Z0123456789ABCDEFGHIJ", "ap-northeast-2"),
    ("rds", "StopDBInstance", "kerp-db-seoul", "ap-northeast-2"),
]


def _drill(*args: str, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DRILL_", "KUBECONFIG"))}
    # no AWS credentials at all: a dry run signs nothing either; no secret variables: a dry run needs none
    env.update(AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               DRILL_STATE_DIR=str(tmp_path / "no-lab"), **extra)
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _example_aws_at(tmp_path: Path, url: str) -> Path:
    """example-aws.yaml with every endpoint (the AWS API, both EKS clusters, the global endpoint) at `url`."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": c, "cluster": {"server": url}} for c in ("seoul", "tokyo")],
        "users": [{"name": "drill", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": f"arn:aws:eks:{r}:111122223333:cluster/kerp-{c}", "context": {"cluster": c, "user": "drill"}}
                     for r, c in (("ap-northeast-2", "seoul"), ("ap-northeast-1", "tokyo"))]}))
    d = yaml.safe_load((ROOT / "environments" / "example-aws.yaml").read_text())
    d["kubernetes"]["kubeconfig"] = str(kubeconfig)
    d["global_endpoint"] = url
    d["aws"]["endpoint_url"] = url
    p = tmp_path / "example-aws.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_a_dry_run_of_ci_smoke_against_example_aws_lists_every_call_and_sends_none(counter, tmp_path):  # noqa: F811
    env = _example_aws_at(tmp_path, counter.url)
    out = tmp_path / "report"
    r = _drill("ci-smoke", "--env", str(env), "--dry-run", "--approve", "dr_region_switch", "--allow-env",
               "example-aws", "--report-dir", str(out), tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    calls = [(c["api"], c.get("service"), c["operation"], c.get("resource"), c.get("region")) for c in
             report["dry_run_calls"]]
    aws = [c[1:] for c in calls if c[0] == "aws"]
    mutating = [(s, op, res, reg) for s, op, res, reg in aws if not op.startswith(("Describe", "Get", "List"))]
    assert mutating == MUTATING, mutating
    assert ("sts", "GetCallerIdentity", "", "ap-northeast-2") == aws[0]  # the preflight's, recorded first
    switch = next(c for c in report["dry_run_calls"] if c["operation"] == "ChangeResourceRecordSets")
    records = {x["ResourceRecordSet"]["SetIdentifier"]: x["ResourceRecordSet"]["Failover"]
               for x in switch["params"]["ChangeBatch"]["Changes"]}
    assert records == {"ap-northeast-1": "PRIMARY", "ap-northeast-2": "SECONDARY"}
    # the apps through the EKS clusters' API: Seoul scaled to 0 by the fault, Tokyo up by the runbook
    kube = [(c["operation"], c["resource"], c["params"].get("body")) for c in report["dry_run_calls"]
            if c["api"] == "kubernetes" and c["operation"] == "PATCH"]
    assert ("PATCH", "deployments/kerp-voucher-service/scale in namespace kerp-system",
            {"spec": {"replicas": 0}}) in kube
    assert ("PATCH", "deployments/kerp-voucher-service/scale in namespace kerp-system",
            {"spec": {"replicas": 2}}) in kube
    time.sleep(0.3)
    assert counter.connections == 0  # nothing left the process: not the AWS API, not the clusters, not the endpoint


def test_a_wrong_endpoint_is_refused_before_any_call(counter, tmp_path):  # noqa: F811
    env = _example_aws_at(tmp_path, counter.url)
    r = _drill("ci-smoke", "--env", str(env), "--approve", "dr_region_switch", "--allow-env", "example-aws",
               "--report-dir", str(tmp_path / "r"), tmp_path=tmp_path, AWS_ENDPOINT_URL="http://127.0.0.1:9",
               KERP_DB_PASSWORD="pw", KERP_REDIS_AUTH_TOKEN="tok")
    assert r.returncode == 5, r.stdout[-2000:] + r.stderr[-2000:]
    assert "not injecting: AWS_ENDPOINT_URL=http://127.0.0.1:9 is not the aws.endpoint_url" in " ".join(r.stderr.split())
    time.sleep(0.3)
    assert counter.connections == 0
