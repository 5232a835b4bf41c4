"""Which PostgreSQL node the data faults and backups act on: the one that is primary, whichever it is."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from harness.errors import HarnessError, UsageError
from harness.targets import _lab
from harness.targets.postgres import data_faults


class FakeConn:
    def __init__(self, role: str) -> None:
        self.role = role

    def execute(self, sql: str, *args):
        assert "pg_is_in_recovery" in sql
        return SimpleNamespace(fetchone=lambda: (self.role == "standby",))


def lab_with(roles: dict[str, str]):
    @contextmanager
    def pg_node(name: str, timeout: float = 2):
        if roles[name] == "down":
            raise OSError("connection refused")
        yield FakeConn(roles[name])

    return SimpleNamespace(nodes=dict.fromkeys(roles), pg_node=pg_node)


@pytest.mark.parametrize("roles, node, region", [
    ({"primary": "primary", "primary_c": "standby", "dr": "standby"}, "primary", "primary"),
    # after the Multi-AZ failover: the in-region standby serves, and it is in the primary region
    ({"primary": "down", "primary_c": "primary", "dr": "standby"}, "primary_c", "primary"),
    ({"primary": "down", "primary_c": "down", "dr": "primary"}, "dr", "dr"),
    ({"primary": "down", "dr": "primary"}, "dr", "dr"),  # a lab without an in-region standby
])
def test_the_live_primary_is_found_on_every_node(roles, node, region) -> None:
    t = lab_with(roles)
    assert data_faults.live_primary_node(t, timeout_s=0) == node
    assert data_faults.live_primary_region(t, timeout_s=0) == region


def test_no_primary_names_the_nodes_it_asked() -> None:
    t = lab_with({"primary": "down", "primary_c": "standby", "dr": "standby"})
    with pytest.raises(HarnessError, match="primary, primary_c, dr"):
        data_faults.live_primary_node(t, timeout_s=0)


def test_a_node_maps_to_its_region() -> None:
    assert _lab.region_of_node(_lab.INREGION) == "primary"
    assert _lab.region_of_node("dr") == "dr"
    with pytest.raises(UsageError, match="'eu'"):
        _lab.region_of_node("eu")


def test_two_primaries_are_refused_naming_both() -> None:
    t = lab_with({"primary": "primary", "primary_c": "primary", "dr": "standby"})
    with pytest.raises(HarnessError, match="2 PostgreSQL nodes are primaries \\(primary, primary_c\\)"):
        data_faults.live_primary_node(t, timeout_s=0)
