"""The plan's backup layers as rules: which backups a layer's retention lets go, and whether the recent backups
the plan promises exist (the pre_test `backups_recent` item). Pure: the callers list S3 and DynamoDB."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Held", "RecentVerdict", "expired", "recent_backups"]


@dataclass(frozen=True)
class Held:
    """One backup as the rules see it: its key, when it was taken, and whether its object exists."""

    key: str
    created_at: datetime
    exists: bool = True


def expired(items: list[Held], retention_s: float, now: datetime, keep_newest: int = 1) -> list[str]:
    """Keys older than the retention, never one inside it and never the `keep_newest` newest ones (a layer whose
    schedule stopped keeps its last backups rather than none)."""
    newest_first = sorted(items, key=lambda h: h.created_at, reverse=True)
    limit = now - timedelta(seconds=retention_s)
    return [h.key for h in newest_first[keep_newest:] if h.created_at < limit]


@dataclass(frozen=True)
class RecentVerdict:
    ok: bool
    observed: str
    newest: Held | None = None


def recent_backups(records: list[Held], count: int, max_age_s: float, now: datetime) -> RecentVerdict:
    """The `count` most recently recorded backups all exist and the newest is at most `max_age_s` old.

    Records are what the metadata table says was taken; a recorded backup whose object is gone within the
    newest `count` fails the rule (deleted, expired too early, or never uploaded). Fewer records than
    `count` pass when all exist: the layer has no longer history yet.
    """
    if not records:
        return RecentVerdict(False, "no backup recorded")
    newest_first = sorted(records, key=lambda h: h.created_at, reverse=True)[:count]
    newest = newest_first[0]
    age = (now - newest.created_at).total_seconds()
    missing = [h.key for h in newest_first if not h.exists]
    parts = [f"{len(newest_first)} most recent of {len(records)} recorded backup(s) checked (the plan keeps {count}), "
             f"newest {newest.key} {age:.0f} s old (limit {max_age_s:.0f} s)"]
    if missing:
        parts.append(f"missing in S3: {', '.join(missing)}")
    if age > max_age_s:
        parts.append("newest backup too old")
    return RecentVerdict(not missing and age <= max_age_s, "; ".join(parts), newest)
