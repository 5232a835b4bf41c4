"""The plan's backup layers as rules: retention (expired deleted, kept ones never, the newest always kept) and the
pre_test rule that the plan's recent backups exist."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from harness.backup.layers import Held, expired, recent_backups
from harness.config import load_plan
from harness.core.plan import PlanError

NOW = datetime(2026, 12, 6, 21, 0, tzinfo=timezone.utc)
DAY = 86400.0


def held(key: str, days: float, exists: bool = True) -> Held:
    return Held(key, NOW - timedelta(days=days), exists)


def test_expired_are_only_those_older_than_the_retention():
    items = [held("a", 1), held("b", 29.9), held("c", 30.1), held("d", 400)]
    assert sorted(expired(items, 30 * DAY, NOW)) == ["c", "d"]


def test_the_newest_is_kept_even_when_expired():
    assert expired([held("old", 40), held("older", 50)], 30 * DAY, NOW) == ["older"]
    assert expired([held("only", 400)], 30 * DAY, NOW) == []


def test_recent_rule_passes_with_the_count_present_and_a_fresh_newest():
    recs = [held(f"k{i}", i) for i in range(7)]
    v = recent_backups(recs, 5, DAY + 3600, NOW)
    assert v.ok and v.newest.key == "k0" and "5 most recent of 7" in v.observed


def test_recent_rule_fails_when_one_of_the_newest_is_missing():
    recs = [held("k0", 0), held("k1", 1), held("k2", 2, exists=False), held("k3", 3), held("k4", 4), held("k5", 5, False)]
    v = recent_backups(recs, 5, DAY + 3600, NOW)
    assert not v.ok and "missing in S3: k2" in v.observed and "k5" not in v.observed


def test_recent_rule_fails_when_the_newest_is_older_than_the_schedule():
    v = recent_backups([held("k", 1.5)], 5, DAY + 3600, NOW)
    assert not v.ok and "newest backup too old" in v.observed


def test_recent_rule_with_a_short_history_and_with_none():
    assert recent_backups([held("k", 0.1)], 5, DAY + 3600, NOW).ok
    assert not recent_backups([], 5, DAY + 3600, NOW).ok


def test_the_plan_names_its_layers_and_the_pre_test_rule():
    plan = load_plan()
    assert set(plan.backup_refs()) == {"snapshot.postgresql", "snapshot.postgresql_wal", "snapshot.postgresql_dump",
                                       "snapshot.redis", "archive.database"}
    _, dump = plan.backup_component("snapshot.postgresql_dump")
    assert (dump.kind, dump.prefix, dump.frequency_s, dump.retention_s) == ("pg_dump", "postgresql/daily/", DAY,
                                                                            30 * DAY)
    _, redis = plan.backup_component("snapshot.redis")
    assert (redis.kind, redis.frequency_s, redis.retention_s) == ("redis_rdb", 6 * 3600, 3 * DAY)
    item = plan.checklist_item("backups_recent")
    assert (item.layer, item.count, item.threshold_s) == ("snapshot.postgresql_dump", 5, 3600)
    with pytest.raises(PlanError, match="unknown backup layer 'snapshot.nope'"):
        plan.backup_component("snapshot.nope")
