"""Pure parts of the level-1/2 catalog drills: outages from probes, the plain lab's Kubernetes side, bad fault
arguments refused before anything is touched."""

from __future__ import annotations

import pytest

from harness.config.environment import load_environment
from harness.core import outages
from harness.core.timeline import Event
from harness.errors import UsageError
from harness.targets.kubernetes import ops as k8s_ops
from harness.targets.toxiproxy import actions as toxiproxy


def probes(service: str, pattern: str, t0: float = 100.0, step: float = 0.5) -> list[Event]:
    """One probe per character: '+' ok, '-' failed, `step` seconds apart from `t0`."""
    return [Event(t0 + i * step, "probe", "probe", {"service": service, "ok": c == "+"}) for i, c in enumerate(pattern)]


def test_no_failure_is_no_outage() -> None:
    found = outages.outages(probes("a", "++++"), "a", since=0)
    assert found == [] and outages.longest_outage_s(found) == 0.0


def test_an_outage_ends_where_the_streak_of_successes_begins() -> None:
    events = probes("a", "++--+-+++++--+++") + probes("b", "----")
    found = outages.outages(events, "a", since=0, consecutive=3)
    # the first ends at the streak that starts at index 6 (a lone success at 4 does not end it), the second at 13
    assert [(o.start, o.end, o.failed_probes) for o in found] == [(101.0, 103.0, 3), (105.5, 106.5, 2)]
    assert outages.longest_outage_s(found) == 2.0


def test_an_outage_that_has_not_ended_has_no_length() -> None:
    found = outages.outages(probes("a", "++--++"), "a", since=0, consecutive=3)
    assert len(found) == 1 and found[0].end is None and outages.longest_outage_s(found) is None


def test_probes_before_since_are_ignored() -> None:
    assert outages.outages(probes("a", "--+++"), "a", since=101.0) == []
    with pytest.raises(ValueError):
        outages.outages([], "a", since=0, consecutive=0)


def test_the_plain_lab_reaches_its_kubernetes_api_as_lab_cloud_describes_it() -> None:
    env = k8s_ops.environment_of({"drill_environment_name": "lab"})
    assert env.name == "lab-cloud" and env.get("kubernetes.namespace")
    assert k8s_ops.environment_of({"drill_environment_name": "lab-cloud"}).name == "lab-cloud"
    assert load_environment("lab").get("kubernetes") is None  # what the mapping stands in for


@pytest.mark.parametrize("call", [
    lambda: toxiproxy.add_latency("popbill", latency_ms=100, duration_s=0),
    lambda: toxiproxy.add_resets("popbill", toxicity=1.5),
    lambda: toxiproxy.add_resets("popbill", duration_s=-1),
    lambda: toxiproxy.partition_link("popbill", duration_s=0),
    lambda: toxiproxy.redirect_link("popbill", to_region="dr"),
    lambda: toxiproxy.restore_upstream("pg_replication"),
])
def test_bad_fault_arguments_are_refused_before_anything_is_touched(call) -> None:
    with pytest.raises(UsageError):
        call()
