"""The detector over a run (pure core): samples, level over time, expected level of the scenario, mismatch; the
metrics exposition of a sample."""

import math

import pytest

from harness.config import load_plan
from harness.core import detector
from harness.core.plan import PlanError

ALL = ("database_primary", "database_replica", "redis_cluster", "kubernetes_nodes", "api_health", "external_apis")


@pytest.fixture(scope="module")
def plan():
    return load_plan()


def states(failed=(), unknown=()):
    return {n: (None if n in unknown else n not in failed, "seen") for n in ALL}


def test_a_sample_adds_up_the_failed_weights(plan):
    s = detector.sample(plan, 10.0, "primary", states(failed=("database_primary", "api_health")))
    assert (s.level, s.failed_weight, s.region) == (2, 17, "primary")
    d = s.to_dict()
    assert d["indicators"]["database_primary"] == {"healthy": False, "weight": 10, "value": 0.0, "detail": "seen"}
    assert d["indicators"]["external_apis"]["value"] == 1.0
    assert detector.LevelSample.from_dict(d) == s


def test_unknown_indicator_has_nan_value_and_is_not_counted(plan):
    s = detector.sample(plan, 0.0, "dr", states(unknown=("redis_cluster",)))
    assert s.level == 0 and math.isnan(s.to_dict()["indicators"]["redis_cluster"]["value"])


def test_expected_level_from_a_number_or_the_plans_examples(plan):
    assert detector.expected_level(plan, 3)[0] == 3
    assert detector.expected_level(plan, "region failure") == (3, "the plan's level 3 (major) for 'region failure'")
    assert detector.expected_level(plan, "single pod failure")[0] == 1
    assert detector.expected_level(plan, None) == (None, "")
    with pytest.raises(PlanError, match="'meteor strike' is not a disaster-level example"):
        detector.expected_level(plan, "meteor strike")
    with pytest.raises(PlanError, match="not a level of the plan"):
        detector.expected_level(plan, 7)


def test_summary_max_level_over_time_and_mismatch(plan):
    samples = [detector.sample(plan, t, "primary", states(failed=f)) for t, f in (
        (1.0, ()), (2.0, ("database_primary", "database_replica", "redis_cluster", "kubernetes_nodes", "api_health")),
        (3.0, ("database_replica",)), (4.0, ("database_replica",)))]
    doc = detector.summarize(plan, samples, 3, "declared", fault_t=1.5)
    assert (doc["max_level"], doc["expected_level"], doc["match"]) == (4, 3, False)
    assert [(x["t"], x["level"]) for x in doc["level_over_time"]] == [(1.0, 0), (2.0, 4), (3.0, 1)]
    assert doc["level_over_time"][1]["offset_s"] == 0.5
    assert "level 4 (catastrophic)" in doc["note"] and "weight 35" in doc["note"]
    assert doc["peak"]["failed_weight"] == 35 and len(doc["samples"]) == 4
    ok = detector.summarize(plan, samples[:1] + samples[2:], 1)
    assert ok["match"] is True and "note" not in ok
    empty = detector.summarize(plan, [], 3)
    assert empty["max_level"] is None and empty["match"] is None and "no sample" in empty["note"]


def test_metrics_exposition_of_a_sample(plan):
    from harness.lab.metrics import render

    s = detector.sample(plan, 5.0, "dr", states(failed=("external_apis",), unknown=("redis_cluster",)))
    lines = render(s.to_dict()).decode().splitlines()
    assert 'kerp_disaster_level{region="dr"} 0.0' in lines
    assert 'kerp_detector_failed_weight{region="dr"} 3.0' in lines
    assert 'kerp_indicator_external_apis{region="dr"} 0.0' in lines
    assert 'kerp_indicator_redis_cluster{region="dr"} NaN' in lines
    assert "# TYPE kerp_indicator_database_primary gauge" in lines
    assert render(None) == b""
