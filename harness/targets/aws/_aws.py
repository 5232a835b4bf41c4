"""The AWS side of one activity: the run's environment, its resource ids per plan region, boto3 clients."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from harness import clients
from harness.config.environment import Environment, load_environment, resolve_references
from harness.errors import HarnessError, UsageError
from harness.safety import context as run_context

REGIONS = ("primary", "dr")


def check_region(region: str) -> str:
    if region not in REGIONS:
        raise UsageError(f"region {region!r}: must be one of {', '.join(REGIONS)}")
    return region


def other(region: str) -> str:
    return "dr" if check_region(region) == "primary" else "primary"


def environment_of(configuration: Mapping[str, Any] | None) -> Environment:
    """The run's environment (run context), else the file the configuration names, else lab-cloud."""
    s = run_context.of(configuration)
    env = getattr(s, "environment", None) if s is not None else None
    if env is not None:
        return env
    cfg = configuration or {}
    return load_environment(cfg.get("drill_environment_file") or cfg.get("drill_environment_name") or "lab-cloud")


def _lab_topology(configuration: Mapping[str, Any] | None) -> dict[str, Any]:
    from harness.lab.manager import Lab
    from harness.targets._lab import state_dir

    return Lab(state_dir=state_dir(configuration)).topology()


@dataclass
class AwsTarget:
    """One environment's AWS resources: ids per plan region, clients built once each (dry run: recorded)."""

    environment: Environment
    data: Mapping[str, Any]
    topology: Mapping[str, Any] | None
    configuration: Mapping[str, Any] | None
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def dry_run(self) -> bool:
        return clients.recorder_of_run(self.configuration) is not None or bool(
            (self.configuration or {}).get("drill_dry_run"))

    def aws_region(self, region: str) -> str:
        return str(self.region(region)["aws_region"])

    def region(self, region: str) -> Mapping[str, Any]:
        regions = self.data.get("regions") or {}
        if check_region(region) not in regions:
            raise UsageError(f"environment {self.environment.name!r} has no region {region!r}")
        return regions[region]

    def rid(self, region: str, key: str) -> str:
        """A resource id of `region` (e.g. rds_instance_id); UsageError naming the key when the file lacks it."""
        v = self.region(region).get(key)
        if not v:
            raise UsageError(f"environment {self.environment.name!r}: regions.{region}.{key} is not set")
        return str(v)

    def aws(self, dotted: str, default: Any = None) -> Any:
        cur: Any = self.data.get("aws") or {}
        for part in dotted.split("."):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        return default if cur is None else cur

    def client(self, service: str, region: str = "primary", aws_region: str | None = None) -> Any:
        """A boto3 client of plan region `region` (or of `aws_region` itself) from harness.clients."""
        from botocore.config import Config

        key = (service, aws_region or region)
        if key not in self._clients:
            session = clients.boto3_session(self.environment, region=region, topology=self.topology,
                                            configuration=self.configuration)
            self._clients[key] = session.client(
                service, region_name=aws_region or session.region_name, endpoint_url=self.aws("endpoint_url"),
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=15))
        return self._clients[key]


def resolve(configuration: Mapping[str, Any] | None = None) -> AwsTarget:
    """The AWS target of the run `configuration` belongs to (references filled; ${lab:} from the running lab)."""
    env = environment_of(configuration)
    if env.data.get("aws") is None:
        raise UsageError(f"environment {env.name!r} ({env.kind}) has no aws section: the aws target cannot act on it")
    topology = _lab_topology(configuration) if env.kind == "lab-cloud" else None
    data, _ = resolve_references(env, topology=topology, strict=False)
    return AwsTarget(env, data, topology, configuration)


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    """Poll `pred` until truthy; HarnessError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise HarnessError(f"{what}: not reached within {timeout_s:.0f} s")
        time.sleep(interval_s)
