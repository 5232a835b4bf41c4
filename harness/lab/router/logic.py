"""Pure decision logic of the region router: target health state machine and failover routing choice."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from harness.errors import ConfigError, UsageError

PRIMARY = "PRIMARY"
SECONDARY = "SECONDARY"
ROLES = (PRIMARY, SECONDARY)

MODE_AUTO = "auto"
MODE_MANUAL = "manual"


class UnknownRegion(UsageError):
    """A request named a region the router does not know."""


class Status(enum.Enum):
    """Health of one target as the checker sees it (Route 53 semantics)."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


def iso(epoch: float) -> str:
    """Return the ISO 8601 UTC form of an epoch time in seconds."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class HealthCheckConfig:
    """How targets are checked: path, interval, failure threshold, timeout."""

    path: str = "/health"
    interval_s: float = 1.0
    failure_threshold: int = 3
    timeout_s: float = 0.5

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "interval_s": self.interval_s,
            "failure_threshold": self.failure_threshold,
            "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True)
class RegionConfig:
    """One region of the failover record set: its role and its targets."""

    name: str
    role: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class RouterConfig:
    """The whole router configuration (router.json)."""

    regions: tuple[RegionConfig, ...]
    health_check: HealthCheckConfig = field(default_factory=HealthCheckConfig)
    ttl_s: float = 0.0

    @property
    def primary(self) -> str:
        return next(r.name for r in self.regions if r.role == PRIMARY)

    @classmethod
    def from_json(cls, data: Any) -> RouterConfig:
        """Validate and build the configuration from parsed JSON; raise ConfigError naming the bad value."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"router config must be a JSON object, got {type(data).__name__}")
        raw_regions = data.get("regions")
        if not isinstance(raw_regions, Mapping) or not raw_regions:
            raise ConfigError("router config: 'regions' must be a non-empty object")
        regions = []
        for name, spec in raw_regions.items():
            if not isinstance(spec, Mapping):
                raise ConfigError(f"router config: region {name!r} must be an object")
            role = str(spec.get("role", "")).upper()
            if role not in ROLES:
                raise ConfigError(f"router config: region {name!r} has role {spec.get('role')!r}, expected PRIMARY or SECONDARY")
            regions.append(RegionConfig(name=str(name), role=role, targets=validate_targets(spec.get("targets", []), where=f"region {name!r}")))
        roles = [r.role for r in regions]
        if roles.count(PRIMARY) != 1:
            raise ConfigError(f"router config: exactly one PRIMARY region expected, got {roles.count(PRIMARY)}")
        if roles.count(SECONDARY) > 1:
            raise ConfigError(f"router config: at most one SECONDARY region expected, got {roles.count(SECONDARY)}")
        hc = data.get("health_check", {}) or {}
        if not isinstance(hc, Mapping):
            raise ConfigError("router config: 'health_check' must be an object")
        try:
            health = HealthCheckConfig(
                path=str(hc.get("path", "/health")),
                interval_s=float(hc.get("interval_s", 1.0)),
                failure_threshold=int(hc.get("failure_threshold", 3)),
                timeout_s=float(hc.get("timeout_s", 0.5)),
            )
            ttl_s = float(data.get("ttl_s", 0) or 0)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"router config: bad number in health_check or ttl_s: {e}") from e
        if not health.path.startswith("/"):
            raise ConfigError(f"router config: health_check.path {health.path!r} must start with '/'")
        if health.interval_s <= 0 or health.timeout_s <= 0:
            raise ConfigError(f"router config: interval_s {health.interval_s} and timeout_s {health.timeout_s} must be > 0")
        if health.failure_threshold < 1:
            raise ConfigError(f"router config: failure_threshold {health.failure_threshold} must be >= 1")
        if ttl_s < 0:
            raise ConfigError(f"router config: ttl_s {ttl_s} must be >= 0")
        return cls(regions=tuple(regions), health_check=health, ttl_s=ttl_s)


def validate_targets(targets: Any, *, where: str) -> tuple[str, ...]:
    """Return target URLs without trailing slash; raise ConfigError on anything but http(s)://host:port URLs."""
    if not isinstance(targets, Sequence) or isinstance(targets, (str, bytes)):
        raise ConfigError(f"{where}: 'targets' must be a list of URLs, got {targets!r}")
    out: list[str] = []
    for t in targets:
        if not isinstance(t, str):
            raise ConfigError(f"{where}: target {t!r} is not a string")
        parts = urlsplit(t)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: target {t!r} is not an http(s) URL")
        if parts.path not in ("", "/") or parts.query:
            raise ConfigError(f"{where}: target {t!r} must not carry a path or query")
        url = t.rstrip("/")
        if url in out:
            raise ConfigError(f"{where}: target {t!r} listed twice")
        out.append(url)
    return tuple(out)


# --------------------------------------------------------------------------- health


@dataclass
class TargetHealth:
    """Health state machine of one target: unknown until the first result, then Route 53 thresholds.

    Unknown becomes healthy on the first success and unhealthy after `threshold`
    consecutive failures. A healthy target becomes unhealthy after `threshold`
    consecutive failures; an unhealthy one healthy after `threshold` consecutive successes.
    """

    url: str
    status: Status = Status.UNKNOWN
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_error: str | None = None
    last_checked: float | None = None

    @property
    def healthy(self) -> bool:
        return self.status is Status.HEALTHY

    def observe(self, ok: bool, threshold: int, *, now: float | None = None, error: str | None = None) -> bool:
        """Record one check result; return True when the status changed."""
        self.last_checked = now
        before = self.status
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            self.last_error = None
            if self.status is Status.UNKNOWN or (
                self.status is Status.UNHEALTHY and self.consecutive_successes >= threshold
            ):
                self.status = Status.HEALTHY
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            self.last_error = error
            if self.status is not Status.UNHEALTHY and self.consecutive_failures >= threshold:
                self.status = Status.UNHEALTHY
        return self.status is not before

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "healthy": self.healthy,
            "status": self.status.value,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes,
            "last_error": self.last_error,
            "last_checked": iso(self.last_checked) if self.last_checked is not None else None,
        }


@dataclass
class RegionState:
    """One region's role and the health of its targets, with its round-robin cursor."""

    name: str
    role: str
    targets: list[TargetHealth]
    cursor: int = 0

    @property
    def healthy(self) -> bool:
        """A region is healthy when at least one of its targets is (Route 53 'evaluate target health')."""
        return any(t.healthy for t in self.targets)

    def healthy_count(self) -> int:
        return sum(1 for t in self.targets if t.healthy)

    def candidates(self) -> list[str]:
        """Healthy target URLs in round-robin order starting at the next one; advances the cursor."""
        healthy = [t.url for t in self.targets if t.healthy]
        if not healthy:
            return []
        start = self.cursor % len(healthy)
        self.cursor = start + 1
        return healthy[start:] + healthy[:start]

    def describe(self) -> str:
        return f"{self.name} {self.healthy_count()}/{len(self.targets)} targets healthy"

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "healthy": self.healthy, "targets": [t.to_json() for t in self.targets]}


@dataclass(frozen=True)
class Flip:
    """One change of the active region, recorded when decided."""

    at: float
    from_region: str
    to_region: str
    reason: str
    mode: str
    effective_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "at_epoch": self.at,
            "from": self.from_region,
            "to": self.to_region,
            "reason": self.reason,
            "mode": self.mode,
            "effective_at": iso(self.effective_at),
            "effective_at_epoch": self.effective_at,
        }


def choose_region(regions: Iterable[RegionState]) -> tuple[str, str]:
    """Route 53 failover choice: PRIMARY if healthy, else SECONDARY if healthy, else PRIMARY; returns (region, why)."""
    by_role = {r.role: r for r in regions}
    primary = by_role[PRIMARY]
    secondary = by_role.get(SECONDARY)
    if primary.healthy:
        return primary.name, f"primary healthy ({primary.describe()})"
    if secondary is not None and secondary.healthy:
        return secondary.name, f"primary unhealthy ({primary.describe()}), secondary healthy ({secondary.describe()})"
    if secondary is None:
        return primary.name, f"primary unhealthy ({primary.describe()}), no secondary region"
    return primary.name, f"all regions unhealthy ({primary.describe()}, {secondary.describe()}): answer PRIMARY"


class RoutingTable:
    """The router's state without I/O: health of every target, active region, mode, flips, TTL delay.

    Time is always passed in (`now`, epoch seconds), so the class is deterministic.
    After a flip with `ttl_s` > 0, traffic keeps going to the previous region until
    the flip's `effective_at` (clients still hold the old DNS answer).
    """

    def __init__(self, config: RouterConfig, now: float) -> None:
        self.health_check = config.health_check
        self.ttl_s = config.ttl_s
        self.regions: dict[str, RegionState] = {
            r.name: RegionState(r.name, r.role, [TargetHealth(u) for u in r.targets]) for r in config.regions
        }
        self.primary = config.primary
        self.mode = MODE_AUTO
        self.active = self.primary
        self.flips: list[Flip] = []
        self._traffic = self.primary
        self._pending: tuple[str, float] | None = None
        self.started_at = now

    # ----------------------------------------------------------------- queries

    def region(self, name: str) -> RegionState:
        try:
            return self.regions[name]
        except KeyError:
            raise UnknownRegion(f"unknown region {name!r}; known: {', '.join(sorted(self.regions))}") from None

    def traffic_region(self, now: float) -> str:
        """The region clients are sent to now (lags `active` by the TTL after a flip)."""
        if self._pending is not None and now >= self._pending[1]:
            self._traffic = self._pending[0]
            self._pending = None
        return self._traffic

    def route(self, now: float) -> tuple[str, list[str]]:
        """Region for a request now and its healthy targets in round-robin order (empty: answer 503)."""
        name = self.traffic_region(now)
        return name, self.regions[name].candidates()

    def snapshot(self, now: float) -> dict[str, Any]:
        traffic = self.traffic_region(now)
        return {
            "active_region": self.active,
            "mode": self.mode,
            "routing_region": traffic,
            "pending": (
                {"region": self._pending[0], "effective_at": iso(self._pending[1]), "effective_at_epoch": self._pending[1]}
                if self._pending
                else None
            ),
            "regions": {name: r.to_json() for name, r in self.regions.items()},
            "flips": [f.to_json() for f in self.flips],
            "health_check": self.health_check.to_json(),
            "ttl_s": self.ttl_s,
        }

    # ----------------------------------------------------------------- changes

    def observe(self, region: str, url: str, ok: bool, now: float, error: str | None = None) -> Flip | None:
        """Apply one health check result; return the flip it caused, if any."""
        reg = self.regions.get(region)
        if reg is None:
            return None
        target = next((t for t in reg.targets if t.url == url), None)
        if target is None:  # target replaced while its check was in flight
            return None
        if target.observe(ok, self.health_check.failure_threshold, now=now, error=error):
            return self.evaluate(now)
        return None

    def observe_many(self, results: Iterable[tuple[str, str, bool, str | None]], now: float) -> Flip | None:
        """Apply a round of results (region, url, ok, error) at once, then decide once (used for the first round)."""
        threshold = self.health_check.failure_threshold
        for region, url, ok, error in results:
            reg = self.regions.get(region)
            target = next((t for t in reg.targets if t.url == url), None) if reg else None
            if target is not None:
                target.observe(ok, threshold, now=now, error=error)
        return self.evaluate(now)

    def evaluate(self, now: float, reason_prefix: str = "") -> Flip | None:
        """In auto mode, re-run the failover choice and flip when it differs from the active region."""
        if self.mode != MODE_AUTO:
            return None
        choice, why = choose_region(self.regions.values())
        if choice == self.active:
            return None
        if choice == self.primary and self.regions[choice].healthy:
            why = "failback: " + why
        return self._flip(choice, reason_prefix + why, now)

    def set_manual(self, region: str, now: float) -> Flip | None:
        """Pin the active region by hand (mode manual); health no longer moves it."""
        self.region(region)
        self.mode = MODE_MANUAL
        if region == self.active:
            return None
        return self._flip(region, f"manual flip to {region}", now)

    def clear_override(self, now: float) -> Flip | None:
        """Back to automatic failover routing; flips at once when health says so."""
        self.mode = MODE_AUTO
        return self.evaluate(now, reason_prefix="override cleared: ")

    def set_targets(self, region: str, urls: Sequence[str], now: float, probed: Mapping[str, TargetHealth] | None = None) -> Flip | None:
        """Replace a region's targets; kept URLs keep their health, new ones start unknown (or as probed)."""
        reg = self.region(region)
        clean = validate_targets(urls, where=f"targets of region {region!r}")
        old = {t.url: t for t in reg.targets}
        probed = probed or {}
        reg.targets = [old.get(u) or probed.get(u) or TargetHealth(u) for u in clean]
        reg.cursor = 0
        return self.evaluate(now, reason_prefix=f"targets of {region} replaced: ")

    def _flip(self, to: str, reason: str, now: float) -> Flip:
        current_traffic = self.traffic_region(now)
        effective = now + self.ttl_s
        flip = Flip(at=now, from_region=self.active, to_region=to, reason=reason, mode=self.mode, effective_at=effective)
        self.flips.append(flip)
        self.active = to
        if self.ttl_s > 0 and to != current_traffic:
            self._pending = (to, effective)
        else:
            self._traffic = to
            self._pending = None
        return flip
