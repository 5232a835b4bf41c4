"""The runbook's data and traffic planes through AWS APIs: RDS and ElastiCache (data), Route 53 failover records
(traffic). Under lab-cloud these are calls to the lab's AWS control plane, which acts on the real processes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

from harness.errors import HarnessError
from harness.safety import context as run_context
from harness.targets.aws import _aws, actions, probes
from harness.targets.postgres import ops as pg_ops

__all__ = ["AwsData", "Route53Traffic", "aws_data", "aws_target", "route53_traffic"]

WAIT_S = 120.0


def _event(configuration: Mapping[str, Any] | None, via: str, call: str, **data: Any) -> None:
    """One API call of a plane on the run's timeline (kind failover, event api_call)."""
    s = run_context.of(configuration)
    if s is not None:
        s.timeline.append("failover", "api_call", {"via": via, "call": call, **data})


def _writable(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as c:
            return pg_ops.writable(c)
    except psycopg.Error:
        return False


@dataclass(frozen=True)
class AwsData:
    """RDS (a primary instance and its cross-region read replica) and one ElastiCache replication group."""

    t: _aws.AwsTarget
    configuration: Mapping[str, Any] | None = None
    via: str = "aws rds and elasticache"

    def kill(self, region: str) -> list[dict[str, Any]]:
        """A region's data layer lost, as the RDS API can show it: its instance stopped, not waited for (a region
        is lost at once; the lab reconciles the stop to `pg_ctl stop -m fast` of the real server). ElastiCache has
        no call that takes a node down: the cache stays until the runbook fails it over."""
        t0 = time.time()
        res = actions.stop_instance(self.t, region, wait=False, timeout_s=WAIT_S)
        _event(self.configuration, self.via, "rds:StopDBInstance", resource=res["id"], region=region)
        return [{"step": "rds stop_db_instance", "id": res["id"], "status": res["status"], "via": self.via,
                 "at_s": round(time.time() - t0, 3)}]

    def promote_database(self, region: str) -> dict[str, Any]:
        """promote_read_replica of `region`'s instance, waited for until `available` and its database writable."""
        t0 = time.monotonic()
        res = actions.promote_replica(self.t, region, wait=True, timeout_s=WAIT_S)
        if not res["already_primary"]:
            _event(self.configuration, self.via, "rds:PromoteReadReplica", resource=res["id"], region=region)
        dsn = self.t.region(region).get("database_dsn")
        if dsn and not self.t.dry_run:
            _aws.wait_until(lambda: _writable(str(dsn)), WAIT_S, f"database of {region} writable after the promote")
        return {"seconds": round(time.monotonic() - t0, 3), "already_primary": res["already_primary"],
                "id": res["id"], "via": self.via}

    def promote_cache(self, region: str) -> dict[str, Any]:
        res = actions.cache_failover(self.t, region, wait=True, timeout_s=WAIT_S)
        if not res["already_master"]:
            _event(self.configuration, self.via, "elasticache:TestFailover", resource=res["id"], region=region)
        return {"already_master": res["already_master"], "id": res["id"]}

    def fence_database(self, region: str, serving: str) -> dict[str, Any]:
        """The old primary instance is stopped when it still runs (stop_db_instance); else left as it is."""
        status = None if self.t.dry_run else actions._status(self.t, region)
        if status in ("stopped", "stopping", "failed"):
            return {"rds": f"{status}: left as it is"}
        res = actions.stop_instance(self.t, region, wait=True, timeout_s=WAIT_S)
        _event(self.configuration, self.via, "rds:StopDBInstance", resource=res["id"], region=region)
        return {"rds": f"was {status or 'unknown'}: stopped (stop_db_instance)"}

    def restore(self, home: str) -> dict[str, Any]:
        """After the lab's failback: the API shows the starting shape again. The stopped instance started (the
        server already runs: the control plane marks it available), the cache's `home` member primary, and the
        other region's instance a read replica of `home`'s again (the control plane re-links it)."""
        t, away = self.t, _aws.other(home)
        out = {"rds_start": actions.start_instance(t, home, wait=True, timeout_s=WAIT_S)["changed"]}
        if out["rds_start"]:
            _event(self.configuration, self.via, "rds:StartDBInstance", resource=t.rid(home, "rds_instance_id"))
        away_ok = actions._status(t, away)
        if away_ok in ("stopped",):
            actions.start_instance(t, away, wait=True, timeout_s=WAIT_S)
        out["cache"] = self.promote_cache(home)
        _aws.wait_until(lambda: probes._instance(t, away).get("ReadReplicaSourceDBInstanceIdentifier"), WAIT_S,
                        f"RDS instance {t.rid(away, 'rds_instance_id')} a read replica again")
        out["replica_of"] = probes._instance(t, away).get("ReadReplicaSourceDBInstanceIdentifier")
        return out


@dataclass(frozen=True)
class Route53Traffic:
    """The global record's PRIMARY/SECONDARY failover pair with one health check per region."""

    t: _aws.AwsTarget
    http: Any
    configuration: Mapping[str, Any] | None = None
    via: str = "route53 failover records"

    def _serving(self, region: str) -> bool:
        from harness.targets.app import ops as app_ops

        url = str(self.t.data.get("global_endpoint") or "").rstrip("/")
        h = app_ops.global_health(self.http, url)
        return bool(h["ok"]) and h.get("region") == region

    def switch(self, region: str, timeout_s: float) -> dict[str, Any]:
        """The failover pair UPSERTed with `region`'s record PRIMARY, then wait until the global endpoint
        answers from `region`."""
        res = actions.switch_records(self.t, region, pin=False)
        if res["changed"]:
            _event(self.configuration, self.via, "route53:ChangeResourceRecordSets", resource=res["primary_record"],
                   region=region, failover="PRIMARY")
        if self.t.dry_run:
            return {"at_epoch": time.time(), "mode": "route53", "reason": "dry run: not waited for"}
        try:
            _aws.wait_until(lambda: self._serving(region), max(float(timeout_s), 5.0),
                            f"global endpoint serving from {region}", interval_s=0.1)
        except HarnessError as e:
            raise HarnessError(f"Route 53 switched to {region} but {e}") from e
        return {"at_epoch": time.time(), "mode": "route53",
                "reason": "failover record pair UPSERTed" if res["changed"] else "record pair already there"}

    def pin(self, region: str) -> str:
        res = actions.switch_records(self.t, region, pin=True)
        if res["changed"]:
            _event(self.configuration, self.via, "route53:ChangeResourceRecordSets", resource=res["primary_record"],
                   region=region, failover="PRIMARY", health_check=None)
        return f"pinned to {region} (its failover record PRIMARY without a health check)"

    def restore(self, home: str) -> dict[str, Any]:
        """The pair as built (home PRIMARY, each record with its health check, none inverted)."""
        res = actions.switch_records(self.t, home, pin=False)
        res["uninverted"] = [r for r in _aws.REGIONS if actions.set_inverted(self.t, r, False)["changed"]]
        if res["changed"] or res["uninverted"]:
            _event(self.configuration, self.via, "route53:ChangeResourceRecordSets", resource=res["primary_record"],
                   region=home, failover="PRIMARY")
        return res


def aws_data(t: Any, http: Any, configuration: Mapping[str, Any] | None,
             aws: _aws.AwsTarget | None = None) -> AwsData:
    """The data plane through RDS and ElastiCache of the run's environment (`t`, the lab target, is not used;
    `aws`: an AwsTarget whose clients the planes share)."""
    return AwsData(aws or _aws.resolve(configuration), configuration)


def route53_traffic(t: Any, http: Any, configuration: Mapping[str, Any] | None,
                    aws: _aws.AwsTarget | None = None) -> Route53Traffic:
    """The traffic plane through Route 53 of the run's environment."""
    return Route53Traffic(aws or _aws.resolve(configuration), http, configuration)


def aws_target(configuration: Mapping[str, Any] | None) -> _aws.AwsTarget:
    """One AwsTarget (clients built once) for the planes of one runbook step."""
    return _aws.resolve(configuration)
