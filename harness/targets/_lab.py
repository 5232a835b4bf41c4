"""Resolve the lab a call targets from its configuration, and build its clients (psycopg, redis, httpx) once per call."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Mapping

from harness.errors import HarnessError, LabError, UsageError
from harness.lab.manager import INREGION_NODE, Lab
from harness.lab.paths import STATE_ENV
from harness.lab.postgres import PgNode

REGIONS = ("primary", "dr")
#: the primary region's second PostgreSQL node (in its second availability zone): the in-region standby
INREGION = INREGION_NODE
CONNECT_TIMEOUT_S = 2
HTTP_TIMEOUT_S = 5.0


def check_region(region: str) -> str:
    if region not in REGIONS:
        raise UsageError(f"unknown region {region!r} (known: {', '.join(REGIONS)})")
    return region


def region_of_node(name: str) -> str:
    """The region a PostgreSQL node runs in: the in-region standby belongs to the primary region."""
    return "primary" if name == INREGION else check_region(name)


def other(region: str) -> str:
    """The other region of the pair."""
    return "dr" if check_region(region) == "primary" else "primary"


def state_dir(configuration: Mapping[str, Any] | None = None) -> str | None:
    """configuration["drill_state_dir"], else $DRILL_STATE_DIR, else None (the default state dir)."""
    cfg = configuration or {}
    return cfg.get("drill_state_dir") or os.environ.get(STATE_ENV) or None


@dataclass(frozen=True)
class LabTarget:
    """One resolved lab: its manager, ports and URLs; builds clients on demand."""

    lab: Lab
    ports: Mapping[str, int]

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['router']}"

    @property
    def supervisor_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['supervisor']}"

    @property
    def toxiproxy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['toxiproxy']}"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['moto']}"

    @property
    def popbill_proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy_popbill']}"

    @cached_property
    def nodes(self) -> dict[str, PgNode]:
        return self.lab.pg_nodes()

    def node(self, region: str) -> PgNode:
        return self.nodes[check_region(region)]

    def has_inregion(self) -> bool:
        """The lab runs an in-region standby (labs started before it existed do not)."""
        return INREGION in self.nodes

    def pg_node(self, name: str, *, timeout: float = CONNECT_TIMEOUT_S, autocommit: bool = True) -> Any:
        """A psycopg connection to PostgreSQL node `name` (a region, or the in-region standby)."""
        if name not in self.nodes:
            raise UsageError(f"unknown PostgreSQL node {name!r} (known: {', '.join(self.nodes)})")
        return pg_connect(self.nodes[name].dsn, timeout=timeout, autocommit=autocommit)

    def pg_dsn(self, region: str) -> str:
        return self.node(region).dsn

    def redis_port(self, region: str) -> int:
        return self.ports[f"redis_{check_region(region)}"]

    def pg_stream_port(self, upstream: str, standby: str) -> int:
        """Where a standby streams from: the fault proxy for primary -> dr, else the upstream directly."""
        if (upstream, standby) == ("primary", "dr"):
            return self.ports["proxy_pg_replication"]
        return self.ports[f"postgres_{check_region(upstream)}"]

    def redis_link_port(self, upstream: str, replica: str) -> int:
        """Where a Valkey replica links to: the fault proxy for primary -> dr, else the upstream directly."""
        if (upstream, replica) == ("primary", "dr"):
            return self.ports["proxy_redis_replication"]
        return self.redis_port(upstream)

    # -- clients ---------------------------------------------------------------------
    def pg(self, region: str, *, timeout: float = CONNECT_TIMEOUT_S, autocommit: bool = True) -> Any:
        """A psycopg connection to PostgreSQL `region` (direct, not through the fault proxy)."""
        return pg_connect(self.pg_dsn(region), timeout=timeout, autocommit=autocommit)

    def redis(self, region: str, *, timeout: float = CONNECT_TIMEOUT_S) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # no client-side retries: a refused connection must answer "down" at once, not after backoff
        return redis.Redis(host="127.0.0.1", port=self.redis_port(region), socket_timeout=timeout,
                           socket_connect_timeout=timeout, decode_responses=True, retry=Retry(NoBackoff(), 0))

    def http(self, timeout: float = HTTP_TIMEOUT_S) -> Any:
        import httpx

        return httpx.Client(timeout=timeout, trust_env=False)


def pg_connect(dsn: str, *, timeout: float = CONNECT_TIMEOUT_S, autocommit: bool = True) -> Any:
    import psycopg

    return psycopg.connect(dsn, connect_timeout=max(1, int(timeout)), autocommit=autocommit)


def resolve(configuration: Mapping[str, Any] | None = None) -> LabTarget:
    """The lab named by configuration["drill_state_dir"] / $DRILL_STATE_DIR / the default state dir."""
    cfg = configuration or {}
    env = cfg.get("drill_environment", "lab")
    if env != "lab":
        raise UsageError(f"environment {env!r} has no adapter here yet; these targets drive the embedded lab only")
    lab = Lab(state_dir=state_dir(cfg))
    return LabTarget(lab, lab.ports())


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `pred` until it returns a truthy value (exceptions count as not yet); LabError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except HarnessError:
            raise
        except Exception as e:  # the system is in motion: a refused connection is "not yet"
            last = e
        if time.monotonic() >= deadline:
            why = f" (last error: {str(last).splitlines()[0] if str(last) else type(last).__name__})" if last else ""
            raise LabError(f"{what} not reached within {timeout:.0f} s{why}") from last
        time.sleep(interval)


def quiet(fn: Callable[[], Any], default: Any = None) -> Any:
    """fn(), or `default` when it raises (for probes of things that may be down)."""
    try:
        return fn()
    except Exception:
        return default

