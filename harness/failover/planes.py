"""How the runbook acts on a region, one plane at a time: apps, data and traffic, through the lab's own adapters or a cloud's APIs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from harness.errors import UsageError
from harness.failover.planes_aws import aws_data, aws_target, route53_traffic
from harness.failover.planes_kubernetes import kubernetes_apps
from harness.targets import _lab
from harness.targets.app import ops as app_ops
from harness.targets.postgres import ops as pg_ops
from harness.targets.redis import ops as rd_ops
from harness.targets.redis.actions import kill as kill_valkey
from harness.targets.router import ops as router_ops

__all__ = ["AppsPlane", "DataPlane", "PLANES", "RegionPlanes", "TrafficPlane", "planes_for"]


class AppsPlane(Protocol):
    """The application tier of a region (the lab's supervisor, or Kubernetes Deployments)."""

    via: str

    def scale(self, region: str, replicas: int, wait: bool = True) -> dict[str, Any]:
        """Scale every catalog service of `region` to `replicas` (and wait until they are ready when `wait`)."""
        ...


class DataPlane(Protocol):
    """The data layer of a region (PostgreSQL and Valkey directly, or RDS and ElastiCache)."""

    via: str

    def kill(self, region: str) -> list[dict[str, Any]]:
        """Lose `region`'s data layer hard (no clean shutdown: un-shipped WAL is lost). Returns the steps."""
        ...

    def promote_database(self, region: str) -> dict[str, Any]:
        """Make `region`'s database the writable primary: {"seconds", "already_primary"}."""
        ...

    def promote_cache(self, region: str) -> dict[str, Any]:
        """Make `region`'s cache the master: {"already_master"}."""
        ...

    def fence_database(self, region: str, serving: str) -> dict[str, Any]:
        """Keep `region`'s database from taking writes once `serving` is the primary: what was done."""
        ...


class TrafficPlane(Protocol):
    """The global endpoint's routing (the lab's region router, or Route 53 failover records)."""

    via: str

    def switch(self, region: str, timeout_s: float) -> dict[str, Any]:
        """Wait for (or make) the global endpoint to route to `region`: {"at_epoch", "mode", "reason"}."""
        ...

    def pin(self, region: str) -> str:
        """Keep the global endpoint on `region` whatever the health checks say; how, in words."""
        ...


@dataclass(frozen=True)
class RegionPlanes:
    """The three planes the runbook and the region fault act through, for one environment."""

    apps: AppsPlane
    data: DataPlane
    traffic: TrafficPlane

    def describe(self) -> dict[str, str]:
        return {"apps": self.apps.via, "data": self.data.via, "traffic": self.traffic.via}

    def restore(self, home: str) -> dict[str, Any]:
        """After the lab's own failback: each plane that keeps a shape of its own (a cloud API's view of the lab)
        shows the starting shape again (planes with a `restore` method)."""
        out: dict[str, Any] = {}
        for name in ("apps", "data", "traffic"):
            fn = getattr(getattr(self, name), "restore", None)
            if fn is not None:
                out[name] = fn(home)
        return out


# -- the embedded lab through its own adapters --------------------------------------------------------
@dataclass(frozen=True)
class LabApps:
    t: _lab.LabTarget
    http: Any
    via: str = "lab supervisor"

    def scale(self, region: str, replicas: int, wait: bool = True) -> dict[str, Any]:
        app_ops.scale(self.http, self.t.supervisor_url, region, replicas)
        if wait:
            app_ops.wait_scaled(self.http, self.t.supervisor_url, region, replicas)
        return {"region": region, "replicas": replicas, "via": self.via}


@dataclass(frozen=True)
class LabData:
    t: _lab.LabTarget
    via: str = "postgresql and valkey"

    def kill(self, region: str) -> list[dict[str, Any]]:
        t0 = time.time()
        node = self.t.node(region)
        pg_pid = node.pid()
        node.kill()
        steps = [{"step": "postgresql SIGKILL", "pid": pg_pid, "at_s": round(time.time() - t0, 3)}]
        if region == "primary" and self.t.has_inregion():  # the region's second availability zone goes too
            standby = self.t.nodes[_lab.INREGION]
            sb_pid = standby.pid()
            standby.kill()
            steps.append({"step": "in-region standby SIGKILL", "pid": sb_pid, "at_s": round(time.time() - t0, 3)})
        rd_pid = kill_valkey(self.t, region)
        steps.append({"step": "valkey SIGKILL", "pid": rd_pid, "at_s": round(time.time() - t0, 3)})
        return steps

    def promote_database(self, region: str) -> dict[str, Any]:
        return pg_ops.promote(lambda: self.t.pg(region))

    def promote_cache(self, region: str) -> dict[str, Any]:
        with self.t.redis(region) as rc:
            changed = rd_ops.promote(rc)
        return {"already_master": not changed}

    def fence_database(self, region: str, serving: str) -> dict[str, Any]:
        """A writable old primary is made read-only, compared with the new primary and stopped (pg_ctl stop -m
        fast); rows of its own are marked so fail_back refuses to rewind them away. A hung (SIGSTOPped) server is
        left as it is: it cannot write, and resume_primary / fail_back will not let it serve again."""
        t = self.t
        out: dict[str, Any] = {}
        node = t.node(region)
        if pg_ops.is_paused(node):
            out["postgresql"] = "paused (hung): left stopped"
        elif pg_ops.running(node):
            def writable() -> bool:
                with t.pg(region, timeout=1) as c:
                    return pg_ops.writable(c)

            if _lab.quiet(writable, False):
                # read-only first (no write slips in), then: did it take writes the new primary lacks?
                pg_ops.fence_writes(lambda: t.pg(region), True)
                with t.pg(region) as old, t.pg(serving) as new:
                    div = pg_ops.divergence(old, new)
                own = {tbl: len(d["a_only"]) + len(d["differ"]) for tbl, d in div.items()
                       if d["a_only"] or d["differ"]}
                node.stop(mode="fast", timeout=30)
                out["postgresql"] = "was a writable primary: stopped (pg_ctl stop -m fast)"
                if own:  # fail_back must not rewind these away: it refuses while this note is there
                    out["own_rows"] = own
                    out["marker"] = str(pg_ops.mark_diverged(node, own, serving))
            else:
                out["postgresql"] = "running, not writable: left running"
        else:
            out["postgresql"] = "down"
        return out


@dataclass(frozen=True)
class LabTraffic:
    t: _lab.LabTarget
    http: Any
    via: str = "lab region router"

    def switch(self, region: str, timeout_s: float) -> dict[str, Any]:
        """Wait for the router's own failover to `region`; flip by hand (gate approved) if it has not after
        timeout."""
        url = self.t.router_url
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = router_ops.state(self.http, url)
            if st["active_region"] == region and st.get("routing_region", region) == region:
                return router_ops.last_flip_to(st, region) or {"at_epoch": time.time(), "mode": st["mode"],
                                                                "reason": "already active"}
            time.sleep(0.1)
        router_ops.set_active(self.http, url, region)
        st = router_ops.state(self.http, url)
        return router_ops.last_flip_to(st, region) or {"at_epoch": time.time(), "mode": "manual"}

    def pin(self, region: str) -> str:
        st = router_ops.state(self.http, self.t.router_url)
        if st["mode"] != "manual" or st["active_region"] != region:
            router_ops.set_active(self.http, self.t.router_url, region)
        return f"pinned to {region} (manual)"


def _lab_planes(t: _lab.LabTarget, http: Any, configuration: Mapping[str, Any] | None) -> RegionPlanes:
    return RegionPlanes(LabApps(t, http), LabData(t), LabTraffic(t, http))


def _cloud_planes(t: _lab.LabTarget | None, http: Any, configuration: Mapping[str, Any] | None) -> RegionPlanes:
    """A cloud through its APIs only: apps as Kubernetes (EKS) Deployments, data through RDS and ElastiCache,
    traffic through Route 53. Under lab-cloud the lab's AWS control plane and Kubernetes controller reconcile
    each call to the real processes; under aws there is no lab anywhere (`t` is None)."""
    aws = aws_target(configuration)
    return RegionPlanes(kubernetes_apps(t, http, configuration), aws_data(t, http, configuration, aws),
                        route53_traffic(t, http, configuration, aws))


#: environment kind -> the planes the runbook acts through (configuration drill_environment_kind; default lab)
PLANES: dict[str, Callable[[_lab.LabTarget, Any, Mapping[str, Any] | None], RegionPlanes]] = {
    "lab": _lab_planes,
    "lab-cloud": _cloud_planes,
    "aws": _cloud_planes,
}


def planes_for(t: _lab.LabTarget, http: Any, configuration: Mapping[str, Any] | None) -> RegionPlanes:
    """The planes of the configured environment kind (configuration drill_environment_kind, default "lab")."""
    kind = str((configuration or {}).get("drill_environment_kind") or "lab")
    factory = PLANES.get(kind)
    if factory is None:
        raise UsageError(f"environment kind {kind!r}: the runbook cannot act on it yet "
                         f"(kinds with region planes: {', '.join(sorted(PLANES))})")
    return factory(t, http, configuration)
