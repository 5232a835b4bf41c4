"""Validation of drill inputs: Chaos Toolkit experiments, Gherkin features (against the steps) and plan files."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import load_plan, read_yaml
from harness.errors import HarnessError

__all__ = ["StepDef", "ValidationResult", "find_steps_dir", "load_step_definitions", "validate_config",
           "validate_experiment", "validate_feature", "validate_path", "validate_paths"]

EXPERIMENT_SUFFIXES = (".json",)
YAML_SUFFIXES = (".yaml", ".yml")
FEATURE_SUFFIXES = (".feature",)
MAX_LISTED = 5  # problems named on one line; the rest are counted


@dataclass(frozen=True)
class ValidationResult:
    """The verdict on one file: `summary` says what it holds when valid, `problems` why it is not."""

    path: str
    kind: str  # experiment | feature | plan | plan-overrides | unknown
    problems: tuple[str, ...] = ()
    summary: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """`ok  PATH (summary)` or `invalid PATH: reason` (one line)."""
        if self.ok:
            extra = "; ".join(x for x in (self.summary, *self.notes) if x)
            return f"ok  {self.path}" + (f" ({extra})" if extra else "")
        shown = list(self.problems[:MAX_LISTED])
        more = f" (+{len(self.problems) - MAX_LISTED} more)" if len(self.problems) > MAX_LISTED else ""
        return f"invalid {self.path}: " + " ".join("; ".join(shown).split()) + more

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "ok": self.ok, "summary": self.summary,
                "problems": list(self.problems), "notes": list(self.notes)}


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# -- experiments ------------------------------------------------------------------------------------
def _activities(experiment: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(where, activity) for the hypothesis probes, the method and the rollbacks; references are skipped."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    ssh = experiment.get("steady-state-hypothesis") or {}
    sections = (("steady-state-hypothesis", ssh.get("probes") if isinstance(ssh, Mapping) else None),
                ("method", experiment.get("method")), ("rollbacks", experiment.get("rollbacks")))
    for where, items in sections:
        if not isinstance(items, list):
            continue
        for i, a in enumerate(items):
            if isinstance(a, Mapping) and "ref" not in a:
                out.append((f"{where}[{i}]", a))
    return out


def check_python_provider(module: Any, func: Any, where: str) -> str | None:
    """None when `module.func` is importable (and, for harness modules, exported in `__all__`), else why not."""
    if not isinstance(module, str) or not module:
        return f"{where}: python provider without a module"
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # ImportError, or the module failing at import time
        return f"{where}: module {module!r} cannot be imported: {type(e).__name__}: {_first_line(e)}"
    if func is None:
        return None
    if not isinstance(func, str) or not func:
        return f"{where}: python provider without a func"
    target = getattr(mod, func, None)
    if target is None or not callable(target):
        return f"{where}: module {module!r} has no function {func!r}"
    if module == "harness" or module.startswith("harness."):
        exported = getattr(mod, "__all__", None)
        if exported is None:
            return f"{where}: harness module {module!r} declares no __all__ (its activities must be exported)"
        if func not in exported:
            return f"{where}: {module}.{func} is not in {module}.__all__ (not a public activity)"
    if not (inspect.isfunction(target) or inspect.isbuiltin(target)):
        return f"{where}: {module}.{func} is not a function"
    return None


def _provider_problems(experiment: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for where, a in _activities(experiment):
        name = a.get("name", "?")
        p = a.get("provider")
        if isinstance(p, Mapping) and p.get("type") == "python":
            why = check_python_provider(p.get("module"), p.get("func"), f"{where} {name!r}")
            if why:
                problems.append(why)
    for i, c in enumerate(experiment.get("controls") or []):
        p = c.get("provider") if isinstance(c, Mapping) else None
        if isinstance(p, Mapping) and p.get("type") == "python":
            why = check_python_provider(p.get("module"), None, f"controls[{i}] {c.get('name', '?')!r}")
            if why:
                problems.append(why)
    return problems


def validate_experiment(path: str | Path) -> ValidationResult:
    """Load with chaoslib, check every python provider, then `ensure_experiment_is_valid`."""
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid
    from chaoslib.loader import load_experiment

    p = str(path)
    try:
        experiment = load_experiment(p)
    except ValueError as e:  # json.JSONDecodeError names line and column
        return ValidationResult(p, "experiment", (f"not valid JSON/YAML: {_first_line(e)}",))
    except Exception as e:  # chaoslib's InvalidSource, yaml errors
        return ValidationResult(p, "experiment", (f"cannot load: {_first_line(e)}",))
    if not isinstance(experiment, Mapping):
        return ValidationResult(p, "experiment", (f"an experiment must be a mapping, got {type(experiment).__name__}",))
    problems = _provider_problems(experiment)
    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as e:
        msg = _first_line(e)
        if not any(msg in x for x in problems) and not _same_provider_problem(msg, problems):
            problems.append(msg)
    except Exception as e:  # chaoslib failing on a malformed document
        problems.append(f"{type(e).__name__}: {_first_line(e)}")
    n = len(_activities(experiment))
    return ValidationResult(p, "experiment", tuple(problems), f"experiment: {n} activities")


def _same_provider_problem(msg: str, problems: list[str]) -> bool:
    """chaoslib reports the first bad provider again in its own words: keep ours only."""
    m = re.search(r"(?:module '([^']+)'|function called '([^']+)')", msg)
    return bool(problems) and bool(m) and any((m.group(1) or m.group(2)) in x for x in problems)


# -- features ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepDef:
    """One pytest-bdd step definition: its type (given/when/then, None for any), parser and where it is."""

    type: str | None
    pattern: str
    parser: Any
    where: str

    def matches(self, step_type: str | None, text: str) -> bool:
        if self.type is not None and step_type is not None and self.type != step_type:
            return False
        try:
            return bool(self.parser.is_matching(text))
        except Exception:
            return False


def find_steps_dir(start: str | Path) -> Path | None:
    """The nearest `steps/` package (with `__init__.py`) in `start` or its parents, else in the cwd."""
    here = Path(start).resolve()
    for d in (here if here.is_dir() else here.parent, *(here if here.is_dir() else here.parent).parents):
        if (d / "steps" / "__init__.py").is_file():
            return d / "steps"
    cwd = Path.cwd()
    if (cwd / "steps" / "__init__.py").is_file():
        return cwd / "steps"
    return None


def load_step_definitions(steps_dir: str | Path) -> list[StepDef]:
    """Import every module of the `steps` package in `steps_dir` and read pytest-bdd's registered step parsers."""
    steps_dir = Path(steps_dir).resolve()
    root, package = str(steps_dir.parent), steps_dir.name
    try:
        from pytest_bdd.steps import step_function_context_registry
    except ImportError as e:
        raise HarnessError(f"pytest-bdd is not installed (pip install -e '.[test]'): {e}") from e
    if root not in sys.path:
        sys.path.insert(0, root)
    modules = [package] + [f"{package}.{f.stem}" for f in sorted(steps_dir.glob("*.py")) if f.stem != "__init__"]
    loaded: set[str] = set()
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except Exception as e:
            raise HarnessError(f"cannot import step module {name} from {root}: {type(e).__name__}: "
                               f"{_first_line(e)}") from e
        file = getattr(mod, "__file__", None)
        if file and Path(file).resolve().parent != steps_dir:
            raise HarnessError(f"module {name} resolves to {file}, not to {steps_dir} (another `steps` package "
                               "is already imported)")
        loaded.add(name)
    out = []
    for ctx in list(step_function_context_registry.values()):
        mod = getattr(ctx.step_func, "__module__", "")
        if mod in loaded:
            out.append(StepDef(ctx.type, str(ctx.parser.name), ctx.parser, f"{mod}.{ctx.step_func.__name__}"))
    return out


_KEYWORD_TYPES = {"Context": "given", "Action": "when", "Outcome": "then"}


def _rendered(text: str, examples: list[dict[str, str]]) -> list[str]:
    """The step text once per example row (Scenario Outline), else as written."""
    if not examples or "<" not in text:
        return [text]
    out = []
    for row in examples:
        t = text
        for k, v in row.items():
            t = t.replace(f"<{k}>", v)
        out.append(t)
    return list(dict.fromkeys(out))


def _example_rows(scenario: Mapping[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for ex in scenario.get("examples") or []:
        header = [c["value"] for c in (ex.get("tableHeader") or {}).get("cells", [])]
        for body in ex.get("tableBody") or []:
            rows.append(dict(zip(header, (c["value"] for c in body.get("cells", [])))))
    return rows


def _feature_steps(feature: Mapping[str, Any]) -> Iterable[tuple[int, str, str | None, str]]:
    """(line, keyword, given/when/then, rendered text) for every step of every background and scenario."""
    def walk(children: list[Mapping[str, Any]]) -> Iterable[tuple[int, str, str | None, str]]:
        for child in children:
            if "rule" in child:
                yield from walk(child["rule"].get("children") or [])
                continue
            block = child.get("background") or child.get("scenario")
            if not block:
                continue
            rows = _example_rows(block) if "scenario" in child else []
            current: str | None = None
            for st in block.get("steps") or []:
                kt = st.get("keywordType")
                if kt in _KEYWORD_TYPES:
                    current = _KEYWORD_TYPES[kt]
                # Conjunction (And/But) and `*` keep the type of the step before
                for text in _rendered(st["text"], rows):
                    yield st["location"]["line"], st["keyword"].strip(), current, text

    return walk(list(feature.get("children") or []))


def _parse_error(e: Exception) -> list[str]:
    errors = getattr(e, "errors", None) or [e]
    out = []
    for x in errors:
        loc = getattr(x, "location", None) or {}
        msg = re.sub(r"^\(\d+:\d+\):\s*", "", _first_line(x))
        if loc.get("line"):
            where = f" at line {loc['line']}" + (f", column {loc['column']}" if loc.get("column") else "")
        else:
            where = ""
        out.append(f"Gherkin syntax error{where}: {msg}")
    return out


def validate_feature(path: str | Path, steps_dir: str | Path | None = None,
                     step_defs: list[StepDef] | None = None) -> ValidationResult:
    """Parse with gherkin (errors with their line) and match every step against the step definitions."""
    from gherkin.errors import ParserError
    from gherkin.parser import Parser

    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return ValidationResult(p, "feature", (f"cannot read: {_first_line(e)}",))
    try:
        doc = Parser().parse(text)
    except ParserError as e:
        return ValidationResult(p, "feature", tuple(_parse_error(e)))
    feature = doc.get("feature")
    if not feature:
        return ValidationResult(p, "feature", ("no Feature in the file",))
    scenarios = sum(1 for _ in _scenarios(feature))
    steps = list(_feature_steps(feature))
    summary = f"feature: {scenarios} scenario{'s' if scenarios != 1 else ''}, {len(steps)} steps"
    if step_defs is None:
        where = Path(steps_dir) if steps_dir else find_steps_dir(path)
        if where is None:
            return ValidationResult(p, "feature", (), summary, ("steps not checked: no steps/ package found",))
        try:
            step_defs = load_step_definitions(where)
        except HarnessError as e:
            return ValidationResult(p, "feature", (f"step definitions: {e}",))
    problems = []
    for line, keyword, step_type, text in steps:
        if not any(d.matches(step_type, text) for d in step_defs):
            problems.append(f"line {line}: no step definition matches {keyword} {text!r}")
    return ValidationResult(p, "feature", tuple(dict.fromkeys(problems)), summary)


def _scenarios(feature: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for child in feature.get("children") or []:
        if "rule" in child:
            yield from _scenarios(child["rule"])
        elif "scenario" in child:
            yield child["scenario"]


# -- plan files -------------------------------------------------------------------------------------
PLAN_REQUIRED_KEYS = ("name", "goals", "priorities", "services")


def validate_config(path: str | Path, data: Any = None) -> ValidationResult:
    """A full plan (has name, goals, priorities, services) via `load_plan(path)`, else plan overrides merged over
    the packaged plan via `load_plan(overrides=path)`."""
    p = str(path)
    try:
        if data is None:
            data = read_yaml(path)
    except HarnessError as e:
        return ValidationResult(p, "plan", (str(e),))
    full = isinstance(data, Mapping) and all(k in data for k in PLAN_REQUIRED_KEYS)
    kind = "plan" if full else "plan-overrides"
    if data is None:
        return ValidationResult(p, kind, ("empty file",))
    try:
        plan = load_plan(path) if full else load_plan(overrides=path)
    except HarnessError as e:
        return ValidationResult(p, kind, (str(e),))
    except Exception as e:  # a domain PlanError (cross references) or any loader failure
        return ValidationResult(p, kind, (f"{type(e).__name__}: {_first_line(e)}",))
    what = "plan" if full else "plan overrides"
    return ValidationResult(p, kind, (), f"{what}: {len(plan.services)} services, {len(plan.gates)} gates")


# -- dispatch ---------------------------------------------------------------------------------------
def _looks_like_experiment(data: Any) -> bool:
    return isinstance(data, Mapping) and ("method" in data or "steady-state-hypothesis" in data)


def validate_path(path: str | Path, steps_dir: str | Path | None = None,
                  _step_cache: dict[str, list[StepDef]] | None = None) -> ValidationResult:
    """Validate one file by its kind: .json experiment, .feature, .yaml/.yml experiment or plan file."""
    p = Path(path)
    if not p.exists():
        return ValidationResult(str(path), "unknown", ("no such file",))
    if p.is_dir():
        return ValidationResult(str(path), "unknown", ("is a directory (name the files)",))
    suffix = p.suffix.lower()
    if suffix in EXPERIMENT_SUFFIXES:
        return validate_experiment(p)
    if suffix in FEATURE_SUFFIXES:
        where = Path(steps_dir) if steps_dir else find_steps_dir(p)
        defs = None
        if where is not None and _step_cache is not None:
            key = str(where.resolve())
            if key not in _step_cache:
                try:
                    _step_cache[key] = load_step_definitions(where)
                except HarnessError as e:
                    return ValidationResult(str(path), "feature", (f"step definitions: {e}",))
            defs = _step_cache[key]
        return validate_feature(p, steps_dir=where, step_defs=defs)
    if suffix in YAML_SUFFIXES:
        from harness.config import read_yaml

        try:
            data = read_yaml(p)
        except HarnessError as e:
            return ValidationResult(str(path), "plan", (str(e),))
        if _looks_like_experiment(data):
            return validate_experiment(p)
        return validate_config(p, data)
    return ValidationResult(str(path), "unknown",
                            (f"unknown file type {suffix or '(none)'!r} (expected .json, .yaml, .yml or .feature)",))


def validate_paths(paths: Iterable[str | Path], steps_dir: str | Path | None = None) -> list[ValidationResult]:
    """Validate every path, in order; step definitions are loaded once per steps package."""
    cache: dict[str, list[StepDef]] = {}
    return [validate_path(x, steps_dir, cache) for x in paths]
