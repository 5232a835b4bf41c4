"""The disaster catalog: every shipped experiment and feature, read for its scenario id, level, cadences, title,
faults and objective; pairs an experiment and a feature of the same scenario; renders docs/CATALOG.md.

The tag rules are harness.core.catalog's (docs/CATALOG.md says them in words).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.config import load_plan, read_text
from harness.core import catalog as core
from harness.core.durations import format_duration
from harness.core.escalation import DEFAULT_TIME_SCALE
from harness.drill import chaosk8s_guard
from harness.drill.profiles import EXPERIMENTS, FEATURES
from harness.drill.validate import load_experiment_file
from harness.errors import HarnessError

#: modules whose guarded actions are the response (failover, failback, the policy engine), not the disaster
RESPONSE_MODULES = ("harness.failover.runbook", "harness.failover.failback", "harness.failover.policy")
#: the configuration key naming the embedded environment a scenario runs in when `--env` is the plain lab
LAB_ENVIRONMENT_KEY = "drill_lab_environment"


@dataclass(frozen=True)
class Document:
    """One experiment or feature file as the catalog reads it."""

    path: Path
    kind: str  # "experiment" | "feature"
    id: str
    tags: core.Tags
    title: str = ""
    description: str = ""
    faults: tuple[str, ...] = ()
    expected: str = ""
    configuration: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A catalog scenario: its experiment and/or feature, level, cadences, faults and objective."""

    id: str
    level: int
    cadences: tuple[str, ...]
    title: str
    description: str
    faults: tuple[str, ...]
    expected: str
    experiment: Path | None
    feature: Path | None
    time_scale: float
    environment: str | None
    objective: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "level": self.level, "cadences": list(self.cadences), "title": self.title,
                "description": self.description, "faults": list(self.faults), "expected_behaviour": self.expected,
                "experiment": self.experiment.name if self.experiment else None,
                "feature": self.feature.name if self.feature else None, "time_scale": self.time_scale,
                "environment": self.environment, "objective": self.objective}


@dataclass(frozen=True)
class Catalog:
    scenarios: tuple[Scenario, ...]
    others: tuple[Document, ...]  # composites and the tabletop walk: not scenarios, never drawn
    problems: tuple[str, ...]  # "PATH: why", one per broken rule

    def get(self, scenario_id: str) -> Scenario | None:
        return next((s for s in self.scenarios if s.id == scenario_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {"scenarios": [s.to_dict() for s in self.scenarios],
                "others": [{"path": d.path.name, "kind": d.tags.kind, "title": d.title} for d in self.others],
                "problems": list(self.problems)}


# -- reading files ----------------------------------------------------------------------------------
def scenario_id(path: Path) -> str:
    """The scenario id of a file: its stem in kebab-case (a feature's underscores become hyphens)."""
    return path.stem.replace("_", "-")


@functools.lru_cache(maxsize=256)
def _module_tree(module: str) -> ast.Module | None:
    """The parsed source of a module (once per process), None when it has no Python source."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"))


def _function_calls_inject(module: str, func: str, _seen: set[tuple[str, str]] | None = None, depth: int = 0) -> bool:
    """True when `module.func` reaches a call of the guard's `inject` (directly or through functions of its own
    module, or of a harness module it imports by name): it is a guarded fault action."""
    seen = _seen if _seen is not None else set()
    if (module, func) in seen or depth > 4:
        return False
    seen.add((module, func))
    tree = _module_tree(module)
    if tree is None:
        return False
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    imported: dict[str, str] = {}  # local name -> module
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("harness"):
            for a in n.names:
                imported[a.asname or a.name] = f"{n.module}.{a.name}"
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.startswith("harness"):
                    imported[a.asname or a.name] = a.name
    node = defs.get(func)
    if node is None:
        return False
    for call in (c for c in ast.walk(node) if isinstance(c, ast.Call)):
        f = call.func
        if isinstance(f, ast.Attribute) and f.attr == "inject":
            return True
        if isinstance(f, ast.Name) and f.id in defs and _function_calls_inject(module, f.id, seen, depth + 1):
            return True
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in imported:
            if _function_calls_inject(imported[f.value.id], f.attr, seen, depth + 1):
                return True
    return False


def experiment_faults(experiment: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the method's guarded fault actions (what goes through the guard and the fault ledger, not the
    response: failover, failback, the policy engine)."""
    out = []
    for act in experiment.get("method") or []:
        if not isinstance(act, Mapping) or act.get("type") != "action":
            continue
        prov = act.get("provider") or {}
        module, func = str(prov.get("module") or ""), str(prov.get("func") or "")
        if prov.get("type") != "python" or not module or module in RESPONSE_MODULES:
            continue
        if f"{module}:{func}" in chaosk8s_guard.FAULTS or (module.startswith("harness.")
                                                          and _function_calls_inject(module, func)):
            out.append(str(act.get("name") or func))
    return tuple(out)


def _experiment_document(path: Path) -> Document:
    sid = scenario_id(path)
    try:
        doc = load_experiment_file(path)
    except HarnessError as e:
        return Document(path, "experiment", sid, core.read_tags(()), problems=(str(e),))
    if not isinstance(doc, Mapping):
        return Document(path, "experiment", sid, core.read_tags(()), problems=("not an experiment object",))
    tags = core.read_tags(doc.get("tags") or [])
    cfg = doc.get("configuration") if isinstance(doc.get("configuration"), Mapping) else {}
    problems = list(tags.problems) + core.configuration_problems(tags, cfg)
    ssh = doc.get("steady-state-hypothesis") or {}
    return Document(path, "experiment", sid, tags, str(doc.get("title") or ""), str(doc.get("description") or ""),
                    experiment_faults(doc), str(ssh.get("title") or "") if isinstance(ssh, Mapping) else "", cfg,
                    tuple(problems))


def feature_tags(path: Path) -> tuple[list[str], str, str, str]:
    """(Feature-level tags, Feature title, its description, its first Scenario's title) of a feature file."""
    from gherkin.parser import Parser

    doc = Parser().parse(read_text(path))
    feature = doc.get("feature") or {}
    first = next((c["scenario"]["name"] for c in feature.get("children") or [] if "scenario" in c), "")
    return ([t["name"] for t in feature.get("tags") or []], str(feature.get("name") or ""),
            " ".join(str(feature.get("description") or "").split()), first)


def _feature_document(path: Path) -> Document:
    sid = scenario_id(path)
    try:
        tags, title, description, first = feature_tags(path)
    except Exception as e:  # gherkin's parser errors, an unreadable file: the validator says more
        return Document(path, "feature", sid, core.read_tags(()), problems=(f"cannot parse: {e}".splitlines()[0],))
    t = core.read_tags(tags)
    return Document(path, "feature", sid, t, title, description, (), first, {}, t.problems)


def _time_scale(cfg: Mapping[str, Any]) -> float:
    v = cfg.get("drill_time_scale")
    try:
        return float(v) if v is not None and not isinstance(v, bool) and 0 < float(v) <= 1 else DEFAULT_TIME_SCALE
    except (TypeError, ValueError):
        return DEFAULT_TIME_SCALE


def objective_of(level: int, time_scale: float, plan) -> dict[str, Any]:
    """The scenario's objective: its level's expected downtime scaled to the drill clock, and the services' RTO/RPO
    of the plan (every catalog service is judged against its own)."""
    lvl = plan.disaster_level(level)
    return {"level": level, "level_name": lvl.name, "response": lvl.response,
            "expected_downtime_s": lvl.expected_downtime_s, "time_scale": time_scale,
            "downtime_objective_s": round(lvl.expected_downtime_s * time_scale, 3),
            "services": {s.name: {"rto_s": s.rto_s, "rpo_s": s.rpo_s} for s in plan.services}}


def scan(experiments_dir: Path | None = None, features_dir: Path | None = None, plan=None) -> Catalog:
    """Read every experiment (*.json) and feature (*.feature) of the two folders (default: the shipped ones)."""
    plan = plan or load_plan()
    edir, fdir = experiments_dir or EXPERIMENTS, features_dir or FEATURES
    docs = [_experiment_document(p) for p in sorted(Path(edir).glob("*.json"))]
    docs += [_feature_document(p) for p in sorted(Path(fdir).glob("*.feature"))]
    problems = [f"{d.path}: {p}" for d in docs for p in d.problems]
    others = tuple(d for d in docs if not d.tags.scenario)
    by_id: dict[str, dict[str, Document]] = {}
    for d in docs:
        if d.tags.scenario and not d.problems:
            by_id.setdefault(d.id, {})[d.kind] = d
    for d in others:  # a composite's feature twin (or the other way round) would be drawn alone
        twin = by_id.pop(d.id, None)
        for t in (twin or {}).values():
            problems.append(f"{t.path}: scenario {d.id!r} is also a {d.tags.kind} file ({d.path.name})")
    scenarios = []
    for sid, pair in sorted(by_id.items()):
        e, f = pair.get("experiment"), pair.get("feature")
        if e and f and (e.tags.level != f.tags.level or e.tags.cadences != f.tags.cadences):
            problems.append(f"{f.path}: tags level{f.tags.level} {' '.join(f.tags.cadences)} differ from its "
                            f"experiment's level{e.tags.level} {' '.join(e.tags.cadences)} ({e.path.name})")
            continue
        main = e or f
        assert main is not None
        scale = _time_scale(e.configuration if e else {})
        env = (e.configuration.get(LAB_ENVIRONMENT_KEY) if e else None) or None
        expected = (f or e).expected if (f or e) else ""
        lvl = main.tags.level
        assert lvl is not None
        scenarios.append(Scenario(
            id=sid, level=lvl, cadences=main.tags.cadences, title=(e.title if e else f.title),
            description=(e.description if e else f.description), faults=e.faults if e else (),
            expected=f"{plan.disaster_level(lvl).response}: {expected}" if expected else
            plan.disaster_level(lvl).response,
            experiment=e.path if e else None, feature=f.path if f else None, time_scale=scale,
            environment=str(env) if env else None, objective=objective_of(lvl, scale, plan)))
    scenarios.sort(key=lambda s: (s.level, s.id))
    return Catalog(tuple(scenarios), others, tuple(problems))


# -- the catalog page -------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def objective_text(s: Scenario) -> str:
    o = s.objective
    return (f"downtime ≤ {format_duration(o['downtime_objective_s'])} on the drill clock (level {s.level}: "
            f"< {format_duration(o['expected_downtime_s'])} × {o['time_scale']:g}); every service's RTO/RPO")


def render_markdown(catalog: Catalog, plan=None) -> str:
    """docs/CATALOG.md: the catalog table, the tag rules, the services' RTO/RPO and the profiles' draws."""
    from harness.drill.profiles import PROFILES, drawing_profiles

    plan = plan or load_plan()
    lines = ["# The disaster catalog", "",
             "<!-- generated by `drill catalog --markdown > docs/CATALOG.md`; do not edit by hand "
             "(tests/unit/test_catalog.py fails when it is out of date) -->", "",
             "Every scenario of the DR plan's disaster levels that drill can run: one Chaos Toolkit experiment "
             "(`experiments/<id>.json`) and one Gherkin drill (`features/<id_with_underscores>.feature`) per "
             "scenario, drawn by the cadence profiles through their tags. `drill catalog` prints this table "
             "(`--json` for scripts).", "",
             "| Scenario | Level | Cadences | Fault | Expected behaviour | Objective | Files |",
             "|---|---|---|---|---|---|---|"]
    for s in catalog.scenarios:
        files = ", ".join(f"`{p.parent.name}/{p.name}`" for p in (s.experiment, s.feature) if p)
        env = f" (runs in `{s.environment}`)" if s.environment else ""
        lines.append(f"| **{s.id}**: {_cell(s.title)} | {s.level} ({_cell(s.objective['level_name'])}) | "
                     f"{', '.join(s.cadences) or '-'} | {_cell(', '.join(s.faults) or '-')} | {_cell(s.expected)} | "
                     f"{_cell(objective_text(s))} | {files}{env} |")
    lines += ["", "## Not scenarios", "",
              "Files tagged `composite` (several faults of different scenarios in one run, e.g. the failover "
              "policy engine's monthly exercise) or `tabletop` (the tabletop walk, injects nothing) are run as "
              "files (`drill run experiments/<file>`) or by the tabletop profile; no cadence draws them.", ""]
    for d in catalog.others:
        lines.append(f"- `{d.path.parent.name}/{d.path.name}` ({d.tags.kind}): {_cell(d.title)}")
    lines += ["", "## Profiles", "", "| Profile | Draws | Scenarios |", "|---|---|---|"]
    for p in PROFILES.values():
        if p.name in drawing_profiles():
            drawn = core.draw(catalog.scenarios, levels=p.levels, cadence=p.cadence_tag)
            what = f"tag `{p.cadence_tag}`, level(s) {', '.join(map(str, p.levels))}"
            lines.append(f"| {p.name} | {what} | {', '.join(s.id for s in drawn) or '(none yet)'} |")
        else:
            lines.append(f"| {p.name} | every scenario, no fault | validates and lists all "
                         f"{len(catalog.scenarios)} |")
    lines += ["", "## Objectives", "",
              "A scenario's level is an objective of its report (`level_objective` in report.json): the longest "
              "single outage of any catalog service after the fault must stay within the level's expected "
              "downtime scaled by the experiment's `drill_time_scale` (default 0.01: the plan's 4 h are 144 s). "
              "The services' own RTO/RPO objectives are judged as in every drill:", "",
              "| Level | Name | Expected downtime | Response |", "|---|---|---|---|"]
    for d in plan.disaster_levels:
        lines.append(f"| {d.level} | {d.name} | < {format_duration(d.expected_downtime_s)} | {_cell(d.response)} |")
    lines += ["", "| Service | RTO | RPO |", "|---|---|---|"]
    for svc in plan.services:
        lines.append(f"| {svc.name} | {format_duration(svc.rto_s)} | {format_duration(svc.rpo_s)} |")
    lines += ["", "## Tag rules", "",
              "- A scenario's experiment `\"tags\"` and its feature's Feature-level tags carry exactly one level "
              "(`level1`..`level4`) and the cadences that draw it: `ci`, `monthly`, `semiannual`, `annual`. "
              "Experiment and feature of one scenario carry the same level and cadences.",
              "- A cadence draws only its profile's levels: " + "; ".join(
                  f"`{c}` levels {', '.join(map(str, lv))}" for c, lv in core.CADENCE_LEVELS.items()) + ".",
              "- `composite` and `tabletop` files are not scenarios: no level, no cadence tag.",
              "- A tag that looks like a level but is not one (`level-1`, `Level1`, `level5`) is an error.",
              "- The experiment's configuration may say `drill_level` (it must equal the tag) and "
              "`drill_time_scale`; `drill_lab_environment` names the embedded environment it runs in when "
              "`--env` is the plain lab (e.g. `lab-cloud` for a Kubernetes-API fault).",
              "- `drill validate` reports a broken rule as an invalid file (exit 2); so does the tabletop walk.", ""]
    if catalog.problems:
        lines += ["## Problems", ""] + [f"- {_cell(p)}" for p in catalog.problems] + [""]
    return "\n".join(lines)


def rows(catalog: Catalog) -> Iterable[tuple[str, ...]]:
    """The console table's rows: scenario, level, cadences, fault, expected behaviour, objective."""
    for s in catalog.scenarios:
        yield (s.id, str(s.level), ", ".join(s.cadences) or "-", ", ".join(s.faults) or "-", s.expected,
               objective_text(s))
