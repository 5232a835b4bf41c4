"""Architecture tests: the pure core imports only the standard library, the layers hold, no cycle between subpackages."""

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "harness" / "core"
LINT = shutil.which("lint-imports")
#: Besides the standard library, the core may import itself and the stdlib-only error hierarchy.
CORE_MAY_IMPORT = ("harness.core", "harness.errors")


def project_importlinter() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def core_contract() -> dict:
    contracts = [c for c in project_importlinter()["contracts"] if c.get("source_modules") == ["harness.core"]]
    assert contracts, "pyproject.toml has no import-linter contract for harness.core"
    return contracts[0]


def _toml_value(v) -> str:
    return json.dumps(v)  # lists of strings, strings and booleans are valid TOML in JSON spelling


def write_config(path: Path, contract: dict) -> None:
    lines = ["[tool.importlinter]", 'root_packages = ["harness"]', "include_external_packages = true", "",
             "[[tool.importlinter.contracts]]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in contract.items()]
    path.write_text("\n".join(lines) + "\n")


def run_lint(config: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [LINT] + (["--config", str(config)] if config else []) + ["--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _exists(mod: str, root: Path) -> bool:
    p = root.joinpath(*mod.split("."))
    return (p / "__init__.py").exists() or p.with_suffix(".py").exists()


def effective_contract(root: Path) -> dict:
    """The project's core contract, with harness.config added (it imports yaml and pydantic) and
    internal packages that do not exist yet left out (import-linter refuses unknown internal modules)."""
    c = dict(core_contract())
    forbidden = list(dict.fromkeys([*c["forbidden_modules"], "harness.config"]))
    c["forbidden_modules"] = [m for m in forbidden if not m.startswith("harness.") or _exists(m, root)]
    return c


pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter (lint-imports) is not installed")


def test_core_contract_holds(tmp_path):
    cfg = tmp_path / "importlinter.toml"
    write_config(cfg, effective_contract(ROOT))
    res = run_lint(cfg, ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


def test_contract_catches_a_violation(tmp_path):
    """The same contract on a copy of the core with one bad import must break (the test is not vacuous)."""
    pkg = tmp_path / "harness"
    shutil.copytree(CORE, pkg / "core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "harness" / "__init__.py", pkg / "__init__.py")
    shutil.copy(ROOT / "harness" / "errors.py", pkg / "errors.py")
    (pkg / "core" / "sneaky.py").write_text('"""Bad."""\nimport yaml\n')
    cfg = tmp_path / "importlinter.toml"
    write_config(cfg, effective_contract(tmp_path))
    res = run_lint(cfg, tmp_path)
    assert res.returncode != 0 and "harness.core.sneaky -> yaml" in res.stdout, res.stdout + res.stderr


def test_project_config_as_is():
    """`lint-imports` with pyproject.toml unchanged (skips, saying why, while the config cannot run yet)."""
    cfg = project_importlinter()
    external = [m for m in core_contract()["forbidden_modules"] if not m.startswith("harness")]
    if external and not cfg.get("include_external_packages"):
        pytest.skip("pyproject [tool.importlinter] needs include_external_packages = true for its external forbidden modules")
    missing = [m for m in core_contract()["forbidden_modules"] if m.startswith("harness.") and not _exists(m, ROOT)]
    if missing:
        pytest.skip(f"forbidden internal packages not created yet: {', '.join(missing)}")
    res = run_lint(None, ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


#: the layer order the project promises (docs/ARCHITECTURE.md), highest first
LAYERS = ["cli", "drill", "failover", "targets | backup", "clients", "safety", "workload | checks | report", "lab",
          "config | http1 | dryrun", "core"]


def layers_contract() -> dict:
    contracts = [c for c in project_importlinter()["contracts"] if c.get("type") == "layers"]
    assert len(contracts) == 1, "pyproject.toml needs one import-linter layers contract"
    return contracts[0]


def test_layers_contract_is_the_documented_order_and_holds(tmp_path):
    c = layers_contract()
    assert c["containers"] == ["harness"] and c["layers"] == LAYERS
    cfg = tmp_path / "importlinter.toml"
    write_config(cfg, c)
    res = run_lint(cfg, ROOT)
    assert res.returncode == 0 and "1 kept, 0 broken" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("module, line, broken", [
    # the lab's server processes never import the drill (not even through another package)
    ("harness/lab/sneaky.py", "from harness.drill import session\n", "harness.lab.sneaky -> harness.drill.session"),
    # a target reaches the run through the safety layer, never through the drill's session
    ("harness/targets/sneaky.py", "import harness.drill.session\n", "harness.targets.sneaky -> harness.drill.session"),
    # the safety layer is below every target
    ("harness/safety/sneaky.py", "from harness.targets import _lab\n", "harness.safety.sneaky -> harness.targets._lab"),
])
def test_layers_contract_catches_an_upward_import(tmp_path, module, line, broken):
    """The same contract on a copy of the package with one upward import must break (not vacuous)."""
    shutil.copytree(ROOT / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / module).write_text('"""Bad."""\n' + line)
    cfg = tmp_path / "importlinter.toml"
    write_config(cfg, layers_contract())
    res = run_lint(cfg, tmp_path)
    assert res.returncode != 0 and broken in res.stdout, res.stdout + res.stderr


def subpackage_cycles(graph) -> list[list[str]]:
    """Cycles between harness's direct children (subpackages and top-level modules), every import counted
    (those inside functions too): the strongly connected components with more than one member."""
    def top(m: str) -> str:
        return ".".join(m.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for m in graph.modules:
        for imported in graph.find_modules_directly_imported_by(m):
            a, b = top(m), top(imported)
            if a != b and a != "harness" and b != "harness":
                edges.setdefault(a, set()).add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_cycle_between_harness_subpackages():
    import grimp

    graph = grimp.build_graph("harness", cache_dir=None)
    assert subpackage_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    import grimp

    graph = grimp.ImportGraph()
    for m in ("harness", "harness.drill", "harness.drill.guard", "harness.targets", "harness.targets.actions",
              "harness.core", "harness.core.plan"):
        graph.add_module(m)
    graph.add_import(importer="harness.targets.actions", imported="harness.drill.guard")  # inside a function
    graph.add_import(importer="harness.drill.guard", imported="harness.core.plan")
    assert subpackage_cycles(graph) == []
    graph.add_import(importer="harness.drill.guard", imported="harness.targets.actions")
    assert subpackage_cycles(graph) == [["harness.drill", "harness.targets"]]


def test_core_imports_only_stdlib_and_itself():
    bad = []
    for f in sorted(CORE.glob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        doc = ast.get_docstring(tree)
        assert doc and "\n" not in doc.strip(), f"{f.name}: needs a one-line module docstring"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    continue  # relative: inside the core
                names = [node.module or ""]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__":
                    continue
                if any(n == m or n.startswith(m + ".") for m in CORE_MAY_IMPORT):
                    continue
                bad.append(f"{f.name}: import {n}")
    assert not bad, bad
