"""Pure parts of the data disasters: the lab's bucket-policy evaluation, tenant fingerprint differences, the
recovery settings of a point-in-time recovery with and without a target time."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from harness.backup import pitr
from harness.backup.repair import TenantFingerprint
from harness.lab.awscp import _s3_action, denied_actions


def _policy(effect="Deny", principal="*", action="s3:*") -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "x", "Effect": effect, "Principal": principal, "Action": action,
         "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]}]})


@pytest.mark.parametrize("policy, denied", [
    (None, set()),
    ("", set()),
    ("not json", set()),
    (_policy(), {"s3:*"}),
    (_policy(principal={"AWS": "*"}, action=["s3:GetObject", "s3:ListBucket"]), {"s3:GetObject", "s3:ListBucket"}),
    (_policy(effect="Allow"), set()),
    (_policy(principal={"AWS": "arn:aws:iam::123456789012:user/x"}), set()),  # one principal: not everyone
])
def test_denied_actions_only_deny_statements_for_everyone(policy, denied):
    assert denied_actions(policy) == denied


def test_s3_actions_of_requests():
    assert _s3_action("GET", key=True) == "s3:GetObject"
    assert _s3_action("PUT", key=True) == "s3:PutObject"
    assert _s3_action("GET", key=False) == "s3:ListBucket"


def test_tenant_fingerprint_differences_name_the_tables():
    a = TenantFingerprint(3, {"companies": {"rows": 1, "sha256": "a" * 64}, "vouchers": {"rows": 2, "sha256": "b" * 64}})
    same = TenantFingerprint(3, json.loads(json.dumps(a.tables)))
    assert a.differences(same) == []
    b = TenantFingerprint(3, {**a.tables, "vouchers": {"rows": 2, "sha256": "c" * 64}})
    (diff,) = a.differences(b)
    assert diff.startswith("vouchers: 2 rows bbbbbbbbbbbb vs 2 rows cccccccccccc")


class _Rt:
    def chown(self, path: Path) -> None:
        pass


class _Node:
    def __init__(self, d: Path) -> None:
        self.data_dir, self.rt = d, _Rt()

    def write_config(self, primary_conninfo=None) -> None:
        (self.data_dir / "postgresql.auto.conf").write_text("port = 1\n")


@pytest.mark.parametrize("target", [None, datetime(2026, 12, 6, 20, 41, 7, tzinfo=timezone.utc)])
def test_recovery_settings_with_and_without_a_target(tmp_path, target):
    (tmp_path / "standby.signal").touch()
    pitr._recovery_config(_Node(tmp_path), tmp_path / "wal", target)
    conf = (tmp_path / "postgresql.auto.conf").read_text()
    assert f"restore_command = 'cp {tmp_path}/wal/%f \"%p\"'" in conf
    assert (tmp_path / "recovery.signal").exists() and not (tmp_path / "standby.signal").exists()
    assert "recovery_target_timeline = 'latest'" in conf
    if target is None:  # to the end of the archive: no target, recovery ends and promotes by itself
        assert "recovery_target_time =" not in conf and "recovery_target_action" not in conf
    else:
        assert "recovery_target_time = '2026-12-06T20:41:07+00:00'" in conf
        assert "recovery_target_action = 'promote'" in conf


def test_recovery_can_keep_to_the_base_backups_timeline(tmp_path):
    pitr._recovery_config(_Node(tmp_path), tmp_path / "wal", None, "current")
    assert "recovery_target_timeline = 'current'" in (tmp_path / "postgresql.auto.conf").read_text()
