"""Environments: what a drill acts on and how to reach it (YAML under environments/), validated and resolved."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import ConfigError, LabError, UsageError

__all__ = ["DEFAULT_ENVIRONMENT", "EMBEDDED_KINDS", "KINDS", "Environment", "allowed_environments",
           "environment_paths", "find_environment", "load_environment", "load_environment_file",
           "looks_like_environment", "resolve_references", "validate_environment_data"]

DEFAULT_ENVIRONMENT = "lab"
#: kinds that are the embedded lab (nothing real can be reached): the guard treats them as the lab
EMBEDDED_KINDS = ("lab", "lab-cloud")
KINDS = ("lab", "lab-cloud", "kubernetes", "aws")
#: the top-level environments/ folder as installed (setup.py ships it as the package harness.environments; an
#: editable install maps it back onto the checkout's folder)
PACKAGED = "harness.environments"

_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
#: `${ENV_VAR}` (a secret or a per-site value, from the process environment) or `${lab:dotted.path}` (the
#: running lab's topology, `drill lab status --json`)
REF = re.compile(r"\$\{(?:(lab):)?([A-Za-z0-9_.\-]+)\}")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL_PASSWORD = re.compile(r"://[^/@:\s]*:([^@/\s]+)@")
_KV_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*(\S+)")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_literal_secret(v: str | None) -> str | None:
    """A password inside a DSN or URL must be a `${ENV_VAR}` reference, never written in the file."""
    if v is None:
        return v
    for rx in (_URL_PASSWORD, _KV_PASSWORD):
        m = rx.search(v)
        if m and not REF.fullmatch(m.group(1)):
            raise ValueError("a password must be a ${ENV_VAR} reference, not written in the file")
    return v


class RegionM(_M):
    """One region of the plan (primary, dr) in this environment."""

    aws_region: str | None = None
    kubernetes_context: str | None = None
    #: named endpoints of the region: app, health, kubernetes_api, ...
    endpoints: dict[str, str] = {}
    database_dsn: str | None = None
    redis_url: str | None = None
    # AWS resource ids of the region
    rds_instance_id: str | None = None
    elasticache_replication_group_id: str | None = None
    s3_bucket: str | None = None
    eks_cluster: str | None = None
    route53_health_check_id: str | None = None

    @field_validator("database_dsn", "redis_url")
    @classmethod
    def _secret_by_reference(cls, v: str | None) -> str | None:
        return _no_literal_secret(v)


class AwsRegionM(RegionM):
    aws_region: str


class KubernetesRegionM(RegionM):
    kubernetes_context: str


class KubernetesM(_M):
    #: path of the kubeconfig (None: $KUBECONFIG or ~/.kube/config)
    kubeconfig: str | None = None
    namespace: str = Field(min_length=1)
    #: catalog service -> its Deployment
    deployments: dict[str, str] = {}


class Route53M(_M):
    #: None: the hosted zone is found by the record name (the lab's moto makes up its zone ids)
    hosted_zone_id: str | None = None
    record_name: str
    record_type: str = "CNAME"


class AwsM(_M):
    account_id: str = Field(pattern=r"^[0-9]{12}$")
    #: None: the real AWS endpoints; then AWS_ENDPOINT_URL(_*) must be unset
    endpoint_url: str | None = None
    route53: Route53M | None = None
    kms_key_alias: str | None = Field(default=None, pattern=r"^alias/.+")
    dynamodb_table: str | None = None


class AllowListingM(_M):
    """The file's side of the allow-list: faults must be allowed here AND by the operator (--allow-env)."""

    faults: bool = False
    max_regions: int | None = Field(default=None, ge=0)
    max_components: int | None = Field(default=None, ge=0)


class _EnvM(_M):
    name: str = Field(pattern=_NAME)
    kind: Literal["lab", "lab-cloud", "kubernetes", "aws"]
    description: str = ""
    global_endpoint: str | None = None
    regions: dict[str, RegionM] = {}
    kubernetes: KubernetesM | None = None
    aws: AwsM | None = None
    allow_listing: AllowListingM = AllowListingM()


class LabEnvM(_EnvM):
    """Today's embedded lab through its own adapters: every endpoint comes from the running lab."""

    kind: Literal["lab"]
    global_endpoint: None = None


class LabCloudEnvM(_EnvM):
    """The embedded lab through its Kubernetes and AWS APIs; endpoints only as `${lab:...}` references."""

    kind: Literal["lab-cloud"]
    kubernetes: KubernetesM
    aws: AwsM


class KubernetesEnvM(_EnvM):
    kind: Literal["kubernetes"]
    regions: dict[str, KubernetesRegionM]
    kubernetes: KubernetesM


class AwsEnvM(_EnvM):
    kind: Literal["aws"]
    regions: dict[str, AwsRegionM]
    aws: AwsM


MODELS: dict[str, type[_EnvM]] = {"lab": LabEnvM, "lab-cloud": LabCloudEnvM, "kubernetes": KubernetesEnvM,
                                  "aws": AwsEnvM}


@dataclass(frozen=True)
class Environment:
    """A validated environment (references unresolved: `resolve_references` fills them at run time)."""

    name: str
    kind: str
    source: str
    data: Mapping[str, Any]

    @property
    def embedded(self) -> bool:
        """The embedded lab (lab, lab-cloud): nothing real is reachable through it."""
        return self.kind in EMBEDDED_KINDS

    @property
    def guard_name(self) -> str:
        """The environment as the fault guard sees it: "lab" for the embedded kinds, else the name."""
        return DEFAULT_ENVIRONMENT if self.embedded else self.name

    def get(self, dotted: str, default: Any = None) -> Any:
        return _lookup(self.data, dotted, default)

    def to_report(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind}

    def allowed_by(self, operator: set[str] | frozenset[str]) -> frozenset[str]:
        """The guard's allow-list for this run: this environment only when BOTH its file allows faults
        (allow_listing.faults) AND the operator named it (--allow-env, $DRILL_ALLOWED_ENVIRONMENTS)."""
        consent = bool((self.data.get("allow_listing") or {}).get("faults"))
        return frozenset({self.name}) if consent and self.name in operator and not self.embedded else frozenset()

    def configuration(self) -> dict[str, Any]:
        """Configuration keys a run carries for the guard and the targets (no secrets: references unresolved)."""
        out: dict[str, Any] = {"drill_environment": self.guard_name, "drill_environment_name": self.name,
                               "drill_environment_kind": self.kind, "drill_environment_file": self.source}
        allow = self.data.get("allow_listing") or {}
        for k in ("max_regions", "max_components"):
            if allow.get(k) is not None:
                out[f"drill_{k}"] = allow[k]
        return out


# -- lookup ------------------------------------------------------------------------------------------
def _project_dirs() -> list[Path]:
    """The user-facing environments/ folders: $DRILL_ENVIRONMENTS_DIR, then ./environments."""
    dirs = []
    if os.environ.get("DRILL_ENVIRONMENTS_DIR"):
        dirs.append(Path(os.environ["DRILL_ENVIRONMENTS_DIR"]))
    dirs.append(Path.cwd() / "environments")
    return list(dict.fromkeys(dirs))


def _packaged() -> Any:
    try:
        return resources.files(PACKAGED)
    except ModuleNotFoundError:  # an install without the shipped folder
        return None


def environment_paths() -> dict[str, str]:
    """{name: file} of every environment found by name, packaged copies first, project folders overriding."""
    out: dict[str, str] = {}
    packaged = _packaged()
    if packaged is not None and packaged.is_dir():
        for f in sorted(packaged.iterdir(), key=lambda x: x.name):
            if f.name.endswith((".yaml", ".yml")):
                out[f.name.rsplit(".", 1)[0]] = str(f)
    for d in reversed(_project_dirs()):
        if d.is_dir():
            for f in sorted(d.glob("*.y*ml")):
                out[f.stem] = str(f)
    return out


def find_environment(name_or_file: str) -> Path:
    """The one place an `--env` value becomes a file: an existing path (or one ending .yaml/.yml), else NAME in
    $DRILL_ENVIRONMENTS_DIR, ./environments/, then the installed ones (package harness.environments: the
    checkout's environments/ folder)."""
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_file:
        if not p.is_file():
            raise UsageError(f"--env {name_or_file!r}: no such environment file")
        return p
    if not re.match(_NAME, name_or_file):
        raise UsageError(f"--env {name_or_file!r} is neither an environment name nor a .yaml file")
    for d in _project_dirs():
        for suffix in (".yaml", ".yml"):
            if (d / f"{name_or_file}{suffix}").is_file():
                return d / f"{name_or_file}{suffix}"
    packaged = _packaged()
    if packaged is not None and packaged.joinpath(f"{name_or_file}.yaml").is_file():
        return Path(str(packaged.joinpath(f"{name_or_file}.yaml")))
    known = ", ".join(sorted(environment_paths())) or "none"
    raise UsageError(f"--env {name_or_file!r}: no such environment (known: {known})")


# -- validation --------------------------------------------------------------------------------------
def _error_line(e: ValidationError, source: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    shown = err.get("input")
    value = "" if isinstance(shown, (dict, list)) or err["type"] in ("missing", "extra_forbidden") else f" (got {shown!r})"
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{value}{more}"


def _refs(v: Any, where: str = "") -> list[tuple[str, str | None, str]]:
    """Every reference in the data: (where, "lab" or None, name)."""
    out = []
    if isinstance(v, Mapping):
        for k, x in v.items():
            out += _refs(x, f"{where}{k}.")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _refs(x, f"{where}{i}.")
    elif isinstance(v, str):
        out += [(where.rstrip("."), m.group(1), m.group(2)) for m in REF.finditer(v)]
    return out


def _literal_endpoints(data: Mapping[str, Any]) -> list[str]:
    """Keys of a lab-cloud file holding a URL, DSN or path that is not a `${lab:...}` reference."""
    bad = []

    def walk(v: Any, where: str) -> None:
        if isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, f"{where}{k}.")
        elif isinstance(v, str) and ("://" in v or "/" in v and not v.startswith("alias/")):
            if not REF.fullmatch(v) or REF.fullmatch(v).group(1) != "lab":
                bad.append(where.rstrip("."))

    walk({k: v for k, v in data.items() if k not in ("name", "kind", "description")}, "")
    return bad


def validate_environment_data(data: Any, source: str, catalog: tuple[str, ...] | None = None,
                              regions: tuple[str, ...] | None = None) -> Environment:
    """Validate parsed YAML as an environment; ConfigError "SOURCE: the.bad.key: why" (exit 2)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: an environment must be a mapping, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in MODELS:
        raise ConfigError(f"{source}: kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    try:
        model = MODELS[kind].model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(_error_line(e, source)) from e
    plain = model.model_dump(exclude_none=True)
    if catalog is None or regions is None:
        from harness.config import load_plan

        plan = load_plan()
        catalog = catalog or tuple(s.name for s in plan.services)
        regions = regions or tuple(r.name for r in plan.regions)
    for r in plain.get("regions", {}):
        if r not in regions:
            raise ConfigError(f"{source}: regions.{r}: not a region of the plan ({', '.join(regions)})")
    if kind in ("aws", "kubernetes", "lab-cloud"):
        for r in regions:
            if r not in plain.get("regions", {}):
                raise ConfigError(f"{source}: regions.{r}: field required")
    deployments = (plain.get("kubernetes") or {}).get("deployments", {})
    for svc in deployments:
        if svc not in catalog:
            raise ConfigError(f"{source}: kubernetes.deployments.{svc}: not a service of the catalog "
                              f"({', '.join(catalog)})")
    if kind in ("kubernetes", "lab-cloud"):
        for svc in catalog:
            if svc not in deployments:
                raise ConfigError(f"{source}: kubernetes.deployments.{svc}: field required")
    for where, scope, name in _refs(plain):
        if scope is None and not _ENV_VAR.match(name):
            raise ConfigError(f"{source}: {where}: ${{{name}}} is not an environment variable name")
        if scope == "lab" and kind != "lab-cloud":
            raise ConfigError(f"{source}: {where}: ${{lab:{name}}} is only for kind lab-cloud")
    if kind == "lab-cloud":
        bad = _literal_endpoints(plain)
        if bad:
            raise ConfigError(f"{source}: {bad[0]}: a lab-cloud endpoint must be a ${{lab:...}} reference to the "
                              f"running lab's topology")
    if kind != "aws" and kind != "lab-cloud" and plain.get("aws"):
        raise ConfigError(f"{source}: aws: only for kind aws or lab-cloud")
    if kind in EMBEDDED_KINDS and plain.get("allow_listing", {}).get("faults"):
        raise ConfigError(f"{source}: allow_listing.faults: the embedded lab is always allowed; leave it out")
    return Environment(model.name, kind, source, plain)


def looks_like_environment(data: Any) -> bool:
    return isinstance(data, Mapping) and "kind" in data and "name" in data and "services" not in data


def load_environment_file(path: str | Path) -> Environment:
    from harness.config import read_yaml

    p = Path(path)
    env = validate_environment_data(read_yaml(p), str(p))
    return Environment(env.name, env.kind, str(p), env.data)


def load_environment(name_or_file: str | None = None) -> Environment:
    """`--env NAME|FILE` (default lab) as a validated Environment."""
    return load_environment_file(find_environment(name_or_file or DEFAULT_ENVIRONMENT))


# -- run time ----------------------------------------------------------------------------------------
def _lookup(data: Any, dotted: str, default: Any = None) -> Any:
    cur = data
    for part in dotted.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
    return cur


_MISSING = object()


def resolve_references(env: Environment, *, environ: Mapping[str, str] | None = None,
                       topology: Mapping[str, Any] | None = None, strict: bool = True) -> tuple[dict, set[str]]:
    """(the environment's data with every reference filled, the secret values it resolved).

    `${VAR}` comes from `environ` (default os.environ) and its value is a secret (redacted by value
    everywhere); `${lab:path}` comes from the running lab's `topology`. A missing one is a UsageError (exit 2)
    when `strict`, else it stays as written (a dry run needs no secret).
    """
    environ = os.environ if environ is None else environ
    secrets: set[str] = set()

    def one(m: re.Match, where: str) -> str:
        scope, name = m.group(1), m.group(2)
        if scope == "lab":
            if topology is None:
                if strict:
                    raise LabError(f"{env.source}: {where}: ${{lab:{name}}} needs the running lab's topology")
                return m.group(0)
            v = _lookup(topology, name, _MISSING)
            if v is _MISSING or isinstance(v, (Mapping, list)):
                if strict:
                    raise LabError(f"{env.source}: {where}: the running lab's topology has no {name} "
                                   f"(does this lab serve it?)")
                return m.group(0)
            return str(v)
        if name not in environ:
            if strict:
                raise UsageError(f"{env.source}: {where}: environment variable {name} is not set")
            return m.group(0)
        if environ[name]:
            secrets.add(environ[name])
        return environ[name]

    def walk(v: Any, where: str) -> Any:
        if isinstance(v, Mapping):
            return {k: walk(x, f"{where}{k}.") for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, f"{where}{i}.") for i, x in enumerate(v)]
        if isinstance(v, str):
            return REF.sub(lambda m: one(m, where.rstrip(".")), v)
        return v

    return walk(dict(env.data), ""), secrets


def allowed_environments(cli: tuple[str, ...] | list[str] = (), environ: Mapping[str, str] | None = None) -> set[str]:
    """The operator's allow-list: --allow-env NAME (repeatable) and $DRILL_ALLOWED_ENVIRONMENTS (comma separated).
    Never read from an environment or experiment file: a file cannot allow itself."""
    environ = os.environ if environ is None else environ
    names = {x.strip() for x in environ.get("DRILL_ALLOWED_ENVIRONMENTS", "").split(",") if x.strip()}
    return names | {x.strip() for x in cli if x.strip()}
