"""Environment files: schema errors naming the key, lookup, references and secrets, allow-listing."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.config.environment import (allowed_environments, find_environment, load_environment,
                                        resolve_references, validate_environment_data)
from harness.errors import ConfigError, LabError, UsageError

ROOT = Path(__file__).resolve().parents[2]


def _aws() -> dict:
    return yaml.safe_load((ROOT / "environments" / "example-aws.yaml").read_text())


def test_every_shipped_environment_validates_and_is_found_by_name_from_any_directory(tmp_path, monkeypatch):
    names = sorted(p.stem for p in (ROOT / "environments").glob("*.yaml"))
    assert names == ["example-aws", "example-k8s", "lab", "lab-cloud"]
    monkeypatch.chdir(tmp_path)  # no ./environments here: the installed package harness.environments answers
    monkeypatch.delenv("DRILL_ENVIRONMENTS_DIR", raising=False)
    for n in names:
        env = load_environment(n)
        assert env.name == n
        assert filecmp.cmp(env.source, ROOT / "environments" / f"{n}.yaml", shallow=False), n


def test_a_project_environments_folder_comes_before_the_installed_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRILL_ENVIRONMENTS_DIR", raising=False)
    assert find_environment("example-aws").parts[-2:] == ("environments", "example-aws.yaml")
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "example-aws.yaml").write_text((ROOT / "environments" / "lab.yaml").read_text())
    assert find_environment("example-aws") == tmp_path / "environments" / "example-aws.yaml"
    monkeypatch.setenv("DRILL_ENVIRONMENTS_DIR", str(tmp_path / "mine"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "example-aws.yaml").write_text("")
    assert find_environment("example-aws") == tmp_path / "mine" / "example-aws.yaml"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["regions"]["dr"].pop("aws_region"), "regions.dr.aws_region: field required"),
    (lambda d: d["aws"].update(account_id="12345"), "aws.account_id: string should match pattern"),
    (lambda d: d["regions"].pop("dr"), "regions.dr: field required"),
    (lambda d: d["regions"].update(mars=d["regions"]["dr"]), "regions.mars: not a region of the plan"),
    (lambda d: d["kubernetes"]["deployments"].update(billing="x"), "kubernetes.deployments.billing: not a service"),
    (lambda d: d.update(kind="vm"), "kind: must be one of lab, lab-cloud, kubernetes, aws (got 'vm')"),
    (lambda d: d["regions"]["primary"].update(colour="red"), "regions.primary.colour: extra inputs are not permitted"),
    (lambda d: d["regions"]["primary"].update(database_dsn="postgresql://drill:hunter2@db:5432/kerp"),
     "regions.primary.database_dsn: a password must be a ${ENV_VAR} reference"),
    (lambda d: d["regions"]["primary"].update(database_dsn="host=db password=hunter2"),
     "regions.primary.database_dsn: a password must be a ${ENV_VAR} reference"),
    (lambda d: d["aws"].update(endpoint_url="${lab:aws.endpoint_url}"), "aws.endpoint_url: ${lab:aws.endpoint_url} "
                                                                         "is only for kind lab-cloud"),
])
def test_a_bad_environment_names_the_bad_key(mutate, message):
    d = _aws()
    mutate(d)
    with pytest.raises(ConfigError) as e:
        validate_environment_data(d, "environments/x.yaml")
    assert str(e.value).startswith(f"environments/x.yaml: {message}"), str(e.value)


def test_a_lab_cloud_file_cannot_name_a_real_endpoint():
    d = yaml.safe_load((ROOT / "environments" / "lab-cloud.yaml").read_text())
    d["aws"]["endpoint_url"] = "https://rds.ap-northeast-2.amazonaws.com"
    with pytest.raises(ConfigError, match=r"aws.endpoint_url: a lab-cloud endpoint must be a \$\{lab:...\} reference"):
        validate_environment_data(d, "lc.yaml")


def test_references_resolve_from_the_process_environment_and_the_lab_topology():
    env = load_environment("example-aws")
    data, secrets = resolve_references(env, environ={"KERP_DB_PASSWORD": "s3cr3t-pw", "KERP_REDIS_AUTH_TOKEN": "tok-9"})
    assert data["regions"]["primary"]["database_dsn"].startswith("postgresql://drill:s3cr3t-pw@kerp-db.cluster")
    assert secrets == {"s3cr3t-pw", "tok-9"}
    with pytest.raises(UsageError, match="regions.primary.database_dsn: environment variable KERP_DB_PASSWORD is not set"):
        resolve_references(env, environ={})
    lax, none = resolve_references(env, environ={}, strict=False)
    assert "${KERP_DB_PASSWORD}" in lax["regions"]["primary"]["database_dsn"] and none == set()

    cloud = load_environment("lab-cloud")
    topo = {"router": {"url": "http://127.0.0.1:4100"},
            "regions": {r: {"postgres": {"dsn": f"postgresql://127.0.0.1:{p}/kerp"}, "redis": {"url": f"redis://x:{p}"}}
                        for r, p in (("primary", 1), ("dr", 2))},
            "kubernetes": {"kubeconfig": "/tmp/kc", "contexts": {"primary": "primary", "dr": "dr"}, "namespace": "kerp",
                           "deployment": "kerp-app"},
            "aws": {"endpoint_url": "http://127.0.0.1:4200", "regions": {"primary": "ap-northeast-2", "dr": "ap-northeast-1"},
                    "route53": {"health_checks": {"primary": "hc-seoul", "dr": "hc-tokyo"}}}}
    data, _ = resolve_references(cloud, topology=topo)
    assert data["regions"]["dr"]["route53_health_check_id"] == "hc-tokyo"
    assert data["global_endpoint"] == "http://127.0.0.1:4100"
    assert data["regions"]["dr"]["kubernetes_context"] == "dr" and data["aws"]["endpoint_url"] == "http://127.0.0.1:4200"
    assert set(data["kubernetes"]["deployments"].values()) == {"kerp-app"}  # the lab's one Deployment serves all
    del topo["kubernetes"]
    with pytest.raises(LabError, match="the running lab's topology has no kubernetes.contexts.primary"):
        resolve_references(cloud, topology=topo)


def test_a_non_lab_environment_is_allowed_only_by_its_file_and_the_operator_together():
    aws = load_environment("example-aws")
    assert aws.configuration()["drill_environment"] == "example-aws"
    assert aws.allowed_by(allowed_environments((), environ={})) == frozenset()
    assert aws.allowed_by(allowed_environments(("example-aws",), environ={})) == {"example-aws"}
    assert aws.allowed_by(allowed_environments((), environ={"DRILL_ALLOWED_ENVIRONMENTS": "x, example-aws"})) \
        == {"example-aws"}
    d = _aws()
    d["allow_listing"]["faults"] = False
    closed = validate_environment_data(d, "closed.yaml")
    assert closed.allowed_by({"example-aws"}) == frozenset()  # the operator alone is not enough
    # the embedded kinds are the lab to the guard: lab pre-approvals count there, nowhere else
    assert load_environment("lab-cloud").configuration()["drill_environment"] == "lab"


def test_drill_validate_exits_2_naming_the_bad_key(tmp_path):
    d = _aws()
    del d["regions"]["dr"]["aws_region"]
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "x.yaml").write_text(yaml.safe_dump(d))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "validate", "environments/x.yaml",
                        str(ROOT / "environments" / "example-k8s.yaml")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stdout.splitlines()[0] == "invalid environments/x.yaml: regions.dr.aws_region: field required"
    assert r.stdout.splitlines()[1].startswith("ok  ")


def test_commands_of_the_embedded_lab_refuse_a_real_environment(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "detect", "--env", "example-k8s"], cwd=tmp_path,
                       capture_output=True, text=True, env={"PATH": "", "DRILL_STATE_DIR": str(tmp_path / "lab")})
    assert r.returncode == 2
    assert r.stderr.strip() == ("drill: error: --env 'example-k8s' is of kind kubernetes: `drill detect` drives the "
                                "embedded lab only (environments of kind lab or lab-cloud)")


def test_a_dry_run_report_lists_the_calls_and_redacts_the_environment_secrets(tmp_path, monkeypatch):
    """The run context holds the recorder: a client from the factory records into it when given the run's
    configuration (drill_run_id), without being handed the recorder."""
    from harness import clients
    from harness.config import load_plan
    from harness.drill import finalize, runner
    from harness.drill import session as drill_session
    from harness.safety import context as run_context

    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    env = load_environment("example-aws")
    _, secrets = resolve_references(env, environ={"KERP_DB_PASSWORD": "pw-Zq81x", "KERP_REDIS_AUTH_TOKEN": "tok-Zq82y"})
    plan = load_plan()
    s = drill_session.begin("ci-smoke", "ci-smoke", report_dir=tmp_path, plan=plan, config={"drill_dry_run": True})
    try:
        runner._begin_environment(s, env, secrets, dry_run=True)
        clients.preflight_aws(env, s.recorder)
        cfg = run_context.configuration_for(s)
        clients.boto3_session(env, region="dr", configuration=cfg).client("rds").promote_read_replica(
            DBInstanceIdentifier="kerp-db-tokyo-replica")
        s.note("connecting to postgresql://drill:pw-Zq81x@kerp-db (tok-Zq82y)")
        report = finalize.write(s, plan, refused=False)
    finally:
        drill_session.end()
    assert report["environment"]["name"] == "example-aws" and report["environment"]["kind"] == "aws"
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert [(c["service"], c["operation"], c["region"]) for c in on_disk["dry_run_calls"]] == [
        ("sts", "GetCallerIdentity", "ap-northeast-2"), ("rds", "PromoteReadReplica", "ap-northeast-1")]
    md = (tmp_path / "report.md").read_text()
    assert "## API calls of the dry run (none was sent)" in md and "PromoteReadReplica" in md
    assert "| Environment | example-aws (aws) |" in md
    html = (tmp_path / "report.html").read_text()
    assert 'id="dry-run-calls"' in html and "example-aws (aws)" in html
    for f in ("report.json", "report.md", "report.html", "timeline.jsonl"):
        text = (tmp_path / f).read_text()
        assert "pw-Zq81x" not in text and "tok-Zq82y" not in text, f
    assert "connecting to postgresql://drill:" in (tmp_path / "timeline.jsonl").read_text()


def test_drill_run_takes_the_allow_list_from_the_operator_never_from_a_file(monkeypatch):
    from harness.drill.runner import _apply_environment

    monkeypatch.delenv("DRILL_ALLOWED_ENVIRONMENTS", raising=False)
    lab, aws = load_environment("lab"), load_environment("example-aws")
    # an experiment that names its own environment and allows it: the file's allow-list is replaced
    exp = {"configuration": {"drill_environment": "staging", "drill_allowed_environments": ["staging"]}}
    _apply_environment(exp, lab, ())
    assert exp["configuration"]["drill_environment"] == "staging"
    assert exp["configuration"]["drill_allowed_environments"] == []
    exp = {"configuration": {"drill_environment": "staging"}}
    _apply_environment(exp, lab, ("staging",))
    assert exp["configuration"]["drill_allowed_environments"] == ["staging"]
    # an environment file: its consent and the operator's name together
    exp = {"configuration": {"drill_allowed_environments": ["example-aws"], "drill_lab_approvals": ["dr_region_switch"]}}
    _apply_environment(exp, aws, ())
    cfg = exp["configuration"]
    assert cfg["drill_environment"] == "example-aws" and cfg["drill_allowed_environments"] == []
    assert cfg["drill_max_regions"] == 1 and cfg["drill_environment_kind"] == "aws"
    monkeypatch.setenv("DRILL_ALLOWED_ENVIRONMENTS", "example-aws")
    _apply_environment(exp, aws, ())
    assert cfg["drill_allowed_environments"] == ["example-aws"]
    # and the lab's pre-approvals do not count there (harness.safety.guard)
    from harness.safety import guard

    assert guard.lab_approvals(cfg) == frozenset()
    assert guard.lab_approvals({**cfg, **load_environment("lab-cloud").configuration()}) == {"dr_region_switch"}
