"""The region scenarios' pieces that need no lab: split-brain sampling verdicts, the hold toxic's input, the catalog
tags and configuration of the three experiments and features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import UsageError

from harness.failover.partition import RoleSampler
from harness.targets.toxiproxy import actions as toxiproxy

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {"region-loss-lagging-replica": ("level3", {"semiannual", "annual"}),
             "inter-region-partition": ("level3", {"semiannual", "annual"}),
             "long-power-outage": ("level4", {"annual"})}
LEVELS = {"level1", "level2", "level3", "level4"}
CADENCES = {"ci", "monthly", "semiannual", "annual"}


def _sampler(*samples: dict) -> RoleSampler:
    s = RoleSampler.__new__(RoleSampler)
    s.samples = [{"t": i, **x} for i, x in enumerate(samples)]
    return s


def test_two_writable_databases_in_one_sample_is_split_brain():
    s = _sampler({"primary": "writable", "dr": "standby"}, {"primary": "writable", "dr": "writable"},
                 {"primary": "read-only", "dr": "writable"})
    assert [x["t"] for x in s.both_writable()] == [1]
    assert s.summary() == {"samples": 3, "both_writable": 1,
                           "roles": {"primary": {"writable": 2, "read-only": 1}, "dr": {"standby": 1, "writable": 2}}}


def test_a_fenced_old_primary_is_not_split_brain():
    s = _sampler({"primary": "read-only", "dr": "writable"}, {"primary": "down", "dr": "writable"})
    assert s.both_writable() == [] and s.summary()["both_writable"] == 0


def test_hold_link_refuses_an_unknown_stream_before_any_fault():
    with pytest.raises(UsageError, match="sideways"):
        toxiproxy.hold_link("pg_replication", stream="sideways", configuration={"drill_state_dir": "/nonexistent"})


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_experiment_and_feature_carry_one_level_and_their_cadences(name):
    level, cadences = SCENARIOS[name]
    exp = json.loads((ROOT / "experiments" / f"{name}.json").read_text())
    tags = set(exp["tags"])
    assert tags & LEVELS == {level} and tags & CADENCES == cadences
    assert exp["configuration"]["drill_level"] == int(level[-1]) and exp["configuration"]["drill_time_scale"] == 0.01
    feature = (ROOT / "features" / f"{name.replace('-', '_')}.feature").read_text().splitlines()
    head = next(line for line in feature if line.strip().startswith("@"))
    ftags = {t.lstrip("@") for t in head.split()}
    assert ftags & LEVELS == {level} and ftags & CADENCES == cadences and "dr_drill" in ftags


def test_the_lagging_replica_scenario_declares_its_degraded_pre_condition():
    exp = json.loads((ROOT / "experiments" / "region-loss-lagging-replica.json").read_text())
    assert exp["configuration"]["drill_degraded_pre_test"] == ["replica_lag"]
    feature = (ROOT / "features" / "region_loss_lagging_replica.feature").read_text()
    assert 'the pre_test item "replica_lag" is degraded on purpose in the lab' in feature
