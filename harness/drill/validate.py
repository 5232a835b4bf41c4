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
from harness.core import catalog as catalog_core
from harness.drill.profiles import EXPERIMENTS, FEATURES
from harness.errors import HarnessError, UsageError
from harness.report.i18n import LANGS
from harness.report.notify import NOTIFY_PREFIX, NotifyConfig

__all__ = ["StepDef", "ValidationResult", "drill_configuration_problems", "experiment_problems",
           "experiment_shape_problems", "find_steps_dir", "load_experiment_file", "load_step_definitions",
           "catalog_problems", "validate_config", "validate_experiment", "validate_feature", "validate_path", "validate_paths"]

EXPERIMENT_SUFFIXES = (".json",)
YAML_SUFFIXES = (".yaml", ".yml")
FEATURE_SUFFIXES = (".feature",)
MAX_LISTED = 5  # problems named on one line; the rest are counted


@dataclass(frozen=True)
class ValidationResult:
    """The verdict on one file: `summary` says what it holds when valid, `problems` why it is not."""

    path: str
    kind: str  # experiment | feature | plan | plan-overrides | environment | unknown
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


def _about(e: BaseException, path: str | Path) -> str:
    """An error's message without the file's name in front (the line names the file already)."""
    msg, p = str(e), str(path)
    return msg.removeprefix(f"{p}: ").removeprefix(f"{p} ") if msg.startswith(p) else msg


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


def load_experiment_file(path: str | Path) -> Any:
    """The parsed document of an experiment file (.json, or .yaml/.yml), not yet validated; UsageError (one line
    naming the file and, for a syntax error, the line) when it cannot be read or parsed."""
    import json

    import yaml

    from harness.config import read_text

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in EXPERIMENT_SUFFIXES + YAML_SUFFIXES:
        raise UsageError(f"{p}: unknown experiment file type {suffix or '(none)'!r} (expected .json, .yaml or .yml)")
    text = read_text(p)
    if not text.strip():
        raise UsageError(f"{p}: empty file")
    try:
        if suffix in EXPERIMENT_SUFFIXES:
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{p}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UsageError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', None) or _first_line(e)}") from e
    except (ValueError, RecursionError) as e:  # e.g. a number too long to convert, nesting too deep
        raise UsageError(f"{p}: cannot parse: {type(e).__name__}: {_first_line(e)}") from e


def _type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _activity_shape(a: Any, where: str) -> list[str]:
    if not isinstance(a, Mapping):
        return [f"{where}: an activity must be an object, got {_type(a)} {a!r:.40}"]
    if "ref" in a:
        return [] if isinstance(a["ref"], str) else [f"{where}.ref: must be a string, got {_type(a['ref'])}"]
    out = []
    if a.get("type") not in ("action", "probe"):
        out.append(f"{where}.type: must be 'action' or 'probe', got {a.get('type')!r}")
    if not isinstance(a.get("name"), str) or not a.get("name"):
        out.append(f"{where}.name: must be a non-empty string, got {a.get('name')!r:.40}")
    if "pauses" in a and not isinstance(a["pauses"], Mapping):
        out.append(f"{where}.pauses: must be an object (before/after), got {_type(a['pauses'])} {a['pauses']!r:.40}")
    prov = a.get("provider")
    if not isinstance(prov, Mapping):
        out.append(f"{where}.provider: must be an object, got {_type(prov)}")
        return out
    if prov.get("type") not in ("python", "process", "http"):
        out.append(f"{where}.provider.type: must be 'python', 'process' or 'http', got {prov.get('type')!r}")
    if "arguments" in prov and not isinstance(prov["arguments"], Mapping):
        out.append(f"{where}.provider.arguments: must be an object, got {_type(prov['arguments'])}")
    if prov.get("type") == "python":
        for key in ("module", "func"):
            if not isinstance(prov.get(key), str) or not prov.get(key):
                out.append(f"{where}.provider: python provider without a {key} (got {prov.get(key)!r:.40})")
    return out


def experiment_shape_problems(doc: Any) -> list[str]:
    """What is wrong with the experiment's structure (before chaoslib looks at it: chaoslib assumes the shape)."""
    if not isinstance(doc, Mapping):
        return [f"an experiment must be an object (mapping), got {_type(doc)}"]
    out = []
    if not isinstance(doc.get("title"), str) or not doc.get("title", "").strip():
        out.append("title: missing" if "title" not in doc else f"title: must be a non-empty string, got "
                                                               f"{doc['title']!r:.40}")
    for key in ("description",):
        if key in doc and not isinstance(doc[key], str):
            out.append(f"{key}: must be a string, got {_type(doc[key])}")
    for key in ("configuration", "secrets"):
        if key in doc and doc[key] is not None and not isinstance(doc[key], Mapping):
            out.append(f"{key}: must be an object, got {_type(doc[key])}")
    ssh = doc.get("steady-state-hypothesis")
    if ssh is not None:
        if not isinstance(ssh, Mapping):
            out.append(f"steady-state-hypothesis: must be an object, got {_type(ssh)}")
        elif not isinstance(ssh.get("probes", []), list):
            out.append(f"steady-state-hypothesis.probes: must be a list, got {_type(ssh.get('probes'))}")
        else:
            for i, a in enumerate(ssh.get("probes", [])):
                out += _activity_shape(a, f"steady-state-hypothesis.probes[{i}]")
    if "method" not in doc:
        out.append("method: missing")
    for key in ("method", "rollbacks"):
        if key not in doc or (key == "rollbacks" and doc[key] is None):
            continue
        if not isinstance(doc[key], list):
            out.append(f"{key}: must be a list of activities, got {_type(doc[key])}")
            continue
        if key == "method" and not doc[key]:
            out.append("method: must hold at least one activity")
        for i, a in enumerate(doc[key]):
            out += _activity_shape(a, f"{key}[{i}]")
    if isinstance(doc.get("secrets"), Mapping):
        for scope, v in doc["secrets"].items():
            if not isinstance(v, Mapping):
                out.append(f"secrets.{scope}: must be an object (name: value), got {_type(v)}")
    for key in ("controls", "extensions"):
        if key in doc and not isinstance(doc[key], list):
            out.append(f"{key}: must be a list, got {_type(doc[key])}")
        elif key in doc:
            out += [f"{key}[{i}]: must be an object, got {_type(x)} {x!r:.40}"
                    for i, x in enumerate(doc[key]) if not isinstance(x, Mapping)]
    return out


def _number(v: Any, *, integer: bool = False) -> float | None:
    """v as a number (env values arrive as strings), None when it is not one; booleans are not numbers."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and not (integer and isinstance(v, float) and not v.is_integer()):
        return float(v)
    if isinstance(v, str):
        try:
            return float(int(v, 10) if integer else float(v))
        except ValueError:
            return None
    return None


#: The harness's own configuration keys of an experiment and the values they take.
_POSITIVE = ("drill_probe_interval_s", "drill_detect_interval_s", "drill_switch_timeout_s", "drill_verify_timeout_s")
_NAMES = ("drill_approvals", "drill_lab_approvals", "drill_allowed_environments")
_BOOLS = ("drill_dry_run", "drill_expects_fault", "drill_enforce_cooldowns")
_STRINGS = ("drill_environment", "drill_plan", "drill_state_dir", "drill_lab_environment")


def drill_configuration_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Wrongly typed values of the harness's configuration keys (drill_*), each naming the key and the value."""
    out = []

    def bad(key: str, what: str) -> None:
        out.append(f"configuration.{key}: must be {what}, got {cfg[key]!r:.40}")

    for key, v in cfg.items():
        if v is None:
            continue
        if key == "drill_writers" and ((n := _number(v, integer=True)) is None or n < 1):
            bad(key, "an integer >= 1")
        elif key == "drill_write_rate" and ((n := _number(v)) is None or n <= 0):
            bad(key, "a number > 0 (or null: as fast as possible)")
        elif key in ("drill_max_regions", "drill_max_components") and ((n := _number(v, integer=True)) is None
                                                                       or n < 0):
            bad(key, "an integer >= 0")
        elif key in _POSITIVE and ((n := _number(v)) is None or n <= 0):
            bad(key, "a number of seconds > 0")
        elif key in _NAMES and not (isinstance(v, str) or (isinstance(v, list)
                                                           and all(isinstance(x, str) for x in v))):
            bad(key, "a list of names")
        elif key in _BOOLS and not isinstance(v, (bool, str)):
            bad(key, "true or false")
        elif key in _STRINGS and not isinstance(v, str):
            bad(key, "a string")
        elif key == "drill_detector_interval_s" and ((n := _number(v)) is None or n < 0):
            bad(key, "a number of seconds >= 0 (0 turns the detector off)")
        elif key == "drill_time_scale" and ((n := _number(v)) is None or not 0 < n <= 1):
            bad(key, "a number in (0, 1]: drill seconds per plan second")
        elif key == "drill_expected_level" and not (
                (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 4) or (isinstance(v, str) and v.strip())):
            bad(key, "a disaster level 0..4 or one of the plan's disaster-level examples")
        elif key == "drill_tier" and v not in ("platinum", "gold", "silver"):
            bad(key, "platinum, gold or silver")
        elif key == "drill_lang" and v not in LANGS:
            bad(key, " or ".join(LANGS))
    try:  # the notification settings, as `drill run` reads them (the environment aside)
        NotifyConfig.from_sources({k: v for k, v in cfg.items() if k.startswith(NOTIFY_PREFIX)}, environ={})
    except UsageError as e:
        out.append(f"configuration: {e}")
    return out


def experiment_problems(experiment: Any) -> list[str]:
    """Every problem of a parsed experiment: its shape, its python providers, chaoslib's validation and the
    harness's configuration keys. Empty when it can run."""
    from chaoslib.configuration import load_configuration
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid

    problems = experiment_shape_problems(experiment)
    if problems:
        return problems
    problems = _provider_problems(experiment)
    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as e:
        msg = _first_line(e)
        if not any(msg in x for x in problems) and not _same_provider_problem(msg, problems):
            problems.append(msg)
    except Exception as e:  # chaoslib failing on a malformed document
        problems.append(f"{type(e).__name__}: {_first_line(e)}")
    try:
        cfg = dict(load_configuration(dict(experiment.get("configuration") or {})) or {})
    except (ChaosException, KeyError, ValueError, TypeError, AttributeError) as e:
        if not any(_first_line(e) in x for x in problems):  # chaoslib's validation says it already
            problems.append(f"configuration: {_first_line(e)}")
    else:
        problems += drill_configuration_problems(cfg)
    return problems


def validate_experiment(path: str | Path) -> ValidationResult:
    """Parse the file, check its shape, every python provider, chaoslib's `ensure_experiment_is_valid` and the
    harness's configuration keys."""
    p = str(path)
    try:
        experiment = load_experiment_file(p)
    except HarnessError as e:
        return ValidationResult(p, "experiment", (_about(e, p),))
    problems = experiment_problems(experiment)
    if isinstance(experiment, Mapping):
        cfg = experiment.get("configuration")
        problems += catalog_problems(Path(p), [str(t) for t in experiment.get("tags") or []],
                                     cfg if isinstance(cfg, Mapping) else {})
    n = len(_activities(experiment)) if isinstance(experiment, Mapping) else 0
    return ValidationResult(p, "experiment", tuple(problems), f"experiment: {n} activities")


def catalog_problems(path: Path, tags: list[str], configuration: Mapping[str, Any]) -> list[str]:
    """The disaster catalog's rules (harness.core.catalog, docs/CATALOG.md) for a shipped catalog file (drill's own
    experiments/ and features/) or any file carrying a catalog tag; other files (a user's own drills, whatever folder
    they keep them in) are free-form and not judged."""
    shipped = path.resolve().parent in (EXPERIMENTS.resolve(), FEATURES.resolve())
    if not shipped and not catalog_core.carries_catalog_tags(tags):
        return []
    t = catalog_core.read_tags(tags)
    return [f"catalog: {x}" for x in (*t.problems, *catalog_core.configuration_problems(t, configuration))]


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
    """The nearest `steps/` package (with `__init__.py`) in `start` or its parents, else in the cwd, else the steps
    drill ships (`harness.steps`, the ones `drill run X.feature` binds)."""
    from harness.drill.profiles import STEPS

    here = Path(start).resolve()
    for d in (here if here.is_dir() else here.parent, *(here if here.is_dir() else here.parent).parents):
        if (d / "steps" / "__init__.py").is_file():
            return d / "steps"
    cwd = Path.cwd()
    if (cwd / "steps" / "__init__.py").is_file():
        return cwd / "steps"
    return STEPS if (STEPS / "__init__.py").is_file() else None


def load_step_definitions(steps_dir: str | Path) -> list[StepDef]:
    """Import every module of the `steps` package in `steps_dir` and read pytest-bdd's registered step parsers."""
    from harness.drill.profiles import STEPS

    steps_dir = Path(steps_dir).resolve()
    root, package = str(steps_dir.parent), steps_dir.name
    try:
        from pytest_bdd.steps import step_function_context_registry
    except ImportError as e:
        raise HarnessError(f"pytest-bdd is not installed: {e}") from e
    if steps_dir == STEPS.resolve():  # the shipped steps import as harness.steps (no folder of harness on sys.path)
        package = "harness.steps"
    elif root not in sys.path:
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


_TAG = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*")
_STEP_WORDS = ("Given", "When", "Then", "And", "But", "*")


def _free_text_line(block: Mapping[str, Any], lines: list[str]) -> tuple[int, str]:
    """(line, text) of the first line of a block's description: the first non-blank, non-comment line after
    its keyword line (gherkin gives the description without its location)."""
    start = block["location"]["line"]
    for n in range(start, len(lines)):
        stripped = lines[n].strip()
        if stripped and not stripped.startswith("#"):
            return n + 1, stripped
    return start, ""


#: markers pytest and pytest-timeout register themselves
_BUILTIN_MARKERS = frozenset({"filterwarnings", "skip", "skipif", "xfail", "parametrize", "usefixtures", "tryfirst",
                              "trylast", "timeout"})


def _registered_markers(project: Path | None) -> frozenset[str] | None:
    """The pytest markers a feature run accepts (it runs with --strict-markers): the built-in ones and those of
    the project's pyproject.toml; None when there is no such file (tags are then checked for their form only)."""
    import tomllib

    f = project / "pyproject.toml" if project else None
    if f is None or not f.is_file():
        return None
    try:
        ini = tomllib.loads(f.read_text(encoding="utf-8")).get("tool", {}).get("pytest", {}).get("ini_options", {})
    except (OSError, ValueError):
        return None
    return _BUILTIN_MARKERS | {str(m).split(":", 1)[0].split("(", 1)[0].strip() for m in ini.get("markers", [])}


def _strict_problems(feature: Mapping[str, Any], lines: list[str],
                     markers: frozenset[str] | None = None) -> list[str]:
    """What gherkin accepts but a drill must not: free text inside a scenario, background or examples (gherkin
    reads it as a description, so a mistyped step vanishes), a step without text, a scenario without steps, no
    scenario at all, a tag that is not a pytest marker name (pytest-bdd turns tags into markers)."""
    out: list[str] = []

    def tags(node: Mapping[str, Any]) -> None:
        for tag in node.get("tags") or []:
            if not _TAG.fullmatch(tag["name"]):
                out.append(f"line {tag['location']['line']}: bad tag {tag['name']!r} (a tag is a pytest marker "
                           "name: letters, digits and _)")
            elif markers is not None and tag["name"][1:] not in markers:
                out.append(f"line {tag['location']['line']}: tag {tag['name']!r} is not a registered pytest marker "
                           f"({', '.join(sorted(markers))}): the feature run would fail")

    def block(node: Mapping[str, Any], kind: str) -> None:
        tags(node)
        if (node.get("description") or "").strip():
            line, text = _free_text_line(node, lines)
            if text.split(" ", 1)[0] in _STEP_WORDS:
                out.append(f"line {line}: step {text!r} has no text")
            else:
                out.append(f"line {line}: not Gherkin: {text!r:.60} (inside a {kind} a line is a step: Given, "
                           "When, Then, And, But or *)")
        for st in node.get("steps") or []:
            if not st.get("text", "").strip():
                out.append(f"line {st['location']['line']}: step {st['keyword'].strip()!r} has no text")
        if kind == "scenario" and not node.get("steps"):
            out.append(f"line {node['location']['line']}: scenario {node.get('name', '')!r} has no steps")
        for ex in node.get("examples") or []:
            block(ex, "Examples block")

    def walk(node: Mapping[str, Any]) -> None:
        tags(node)
        for child in node.get("children") or []:
            if "rule" in child:
                walk(child["rule"])
            elif "background" in child:
                block(child["background"], "background")
            elif "scenario" in child:
                block(child["scenario"], "scenario")

    walk(feature)
    if not any(True for _ in _scenarios(feature)):
        out.append(f"line {feature['location']['line']}: no Scenario in feature {feature.get('name', '')!r}")
    return out


def validate_feature(path: str | Path, steps_dir: str | Path | None = None,
                     step_defs: list[StepDef] | None = None) -> ValidationResult:
    """Parse with gherkin (errors with their line) and match every step against the step definitions."""
    from gherkin.errors import ParserError
    from gherkin.parser import Parser

    p = str(path)
    from harness.config import read_text

    try:
        text = read_text(path)
    except HarnessError as e:
        return ValidationResult(p, "feature", (_about(e, p),))
    if not text.strip():
        return ValidationResult(p, "feature", ("empty file",))
    try:
        doc = Parser().parse(text)
    except ParserError as e:
        return ValidationResult(p, "feature", tuple(_parse_error(e)))
    feature = doc.get("feature")
    if not feature:
        return ValidationResult(p, "feature", ("no Feature in the file",))
    steps_at = Path(steps_dir) if steps_dir else find_steps_dir(path)
    strict = _strict_problems(feature, text.splitlines(), _registered_markers(steps_at.parent if steps_at else None))
    strict += catalog_problems(Path(p), [t["name"] for t in feature.get("tags") or []], {})
    if strict:
        return ValidationResult(p, "feature", tuple(strict))
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
        return ValidationResult(p, "plan", (_about(e, p),))
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
def validate_environment(path: str | Path, data: Any) -> ValidationResult:
    """An environment file (environments/*.yaml): the schema of its kind, regions and services of the plan."""
    from harness.config.environment import validate_environment_data

    try:
        env = validate_environment_data(data, str(path))
    except HarnessError as e:
        return ValidationResult(str(path), "environment", (str(e).removeprefix(f"{path}: "),))
    return ValidationResult(str(path), "environment", (), f"environment {env.name} ({env.kind})")


def looks_like_environment(data: Any) -> bool:
    from harness.config.environment import looks_like_environment as looks

    return looks(data)


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
            return ValidationResult(str(path), "plan", (_about(e, path),))
        if _looks_like_experiment(data):
            return validate_experiment(p)
        if p.parent.name == "environments" or looks_like_environment(data):
            return validate_environment(p, data)
        return validate_config(p, data)
    return ValidationResult(str(path), "unknown",
                            (f"unknown file type {suffix or '(none)'!r} (expected .json, .yaml, .yml or .feature)",))


def validate_paths(paths: Iterable[str | Path], steps_dir: str | Path | None = None) -> list[ValidationResult]:
    """Validate every path, in order; step definitions are loaded once per steps package."""
    cache: dict[str, list[StepDef]] = {}
    return [validate_path(x, steps_dir, cache) for x in paths]
