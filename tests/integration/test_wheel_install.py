"""Installed as users install tools (a built wheel, not editable), drill runs every profile and a user's own feature
file from a directory that is not the checkout."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

# a dozen drill processes in a row: on two loaded cores (two labs at once) well beyond the default 900 s
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
REPORT_FILES = ("report.json", "report.md", "report.html", "junit.xml")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    what = " ".join(Path(c).name for c in cmd[:4]).replace("\n", " ")[:70]
    print(f"{time.monotonic() - t0:6.1f} s  exit {r.returncode}  {what}")
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the wheel built from this checkout; its dependencies come from the running
    interpreter's site-packages (no download). Yields (venv bin dir, environment, a cwd outside the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy: a stale build/ of the checkout must not leak into the wheel, and nothing is left behind
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "reports", ".drill", ".lab",
        "node_modules"))
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)],
                 cwd=tmp, env=dict(os.environ), timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list((tmp / "dist").glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["dr_drill_harness"], wheels

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp, env=dict(os.environ), timeout=60).stdout.strip())
    # the running interpreter's site-packages (a venv's are not the system's): the dependencies, appended after
    # the new venv's own; .pth files there are not processed, so an editable install of drill is not either
    (purelib / "zz_drill_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "DRILL_STATE_DIR",
                                                              "DRILL_REPORTS_DIR", "DRILL_HISTORY", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    inst = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
                cwd=tmp, env=env, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    work = tmp / "somewhere"
    work.mkdir()
    yield venv / "bin", env, work


def test_the_wheel_is_what_runs(installed):
    bindir, env, work = installed
    r = _run([str(bindir / "python"), "-c",
              "import sys, harness, harness.steps, harness.experiments, harness.features\n"
              "print(harness.__file__); print(harness.steps.__file__)\n"
              "print(harness.experiments.__file__); print(harness.features.__file__)\n"
              "print(*sys.path, sep='\\n', file=sys.stderr)"],
             cwd=work, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    venv = bindir.parent.resolve()
    for f in r.stdout.split():
        assert Path(f).resolve().is_relative_to(venv), f"{f} is not the installed wheel (venv {venv})"
    assert not any(Path(p).resolve() == ROOT for p in r.stderr.split() if p), "the checkout is on sys.path"
    assert shutil.which("drill", path=str(bindir)) == str(bindir / "drill")


def test_the_environments_ship_in_the_wheel(installed):
    bindir, env, work = installed
    r = _run([str(bindir / "python"), "-c",
              "from harness.config.environment import environment_paths, load_environment\n"
              "print(*sorted(environment_paths()))\n"
              "print(load_environment('example-aws').source)"], cwd=work, env=env, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    names, source = r.stdout.splitlines()
    assert names.split() == ["example-aws", "example-k8s", "lab", "lab-cloud"]
    assert Path(source).resolve().is_relative_to(bindir.parent.resolve()), source
    v = _run([str(bindir / "drill"), "detect", "--env", "example-aws"], cwd=work, env=env, timeout=60)
    assert v.returncode == 2 and "is of kind aws" in v.stderr, v.stderr


def _reports_ok(rdir: Path, kind: str) -> dict:
    for name in REPORT_FILES:
        assert (rdir / name).is_file(), f"{rdir / name} missing"
    report = json.loads((rdir / "report.json").read_text())
    assert report["exit_code"] == 0 and report["status"] == "passed", report.get("error")
    assert report["kind"] == kind
    return report


def test_every_profile_and_a_users_feature_run_from_any_directory(installed, drill_lab, tmp_path):
    """On the worker's session lab (a lab of its own would start cold: the lab itself is proven by test_lab.py);
    the installed drill finds it by DRILL_STATE_DIR as a user's does, and leaves it on the primary region."""
    bindir, env, work = installed
    drill = str(bindir / "drill")
    env = dict(env, DRILL_STATE_DIR=str(drill_lab.state))
    # ci-smoke for real, default report dir under the cwd
    r = _run([drill, "run", "ci-smoke"], cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    (rdir,) = [d for d in (work / "reports").iterdir() if d.is_dir()]
    report = _reports_ok(rdir, "ci-smoke")
    assert (work / "reports" / "history.sqlite").is_file()  # the run history, beside the run dirs
    assert not report.get("dry_run") and report["writes"]["acknowledged"] > 0
    assert (rdir / "journal.json").is_file()
    # the other profiles resolve their experiment from the package; --dry-run keeps them short
    for profile, extra in (("monthly-chaos", ["--scenario", "pod-loss"]),
                           ("semiannual-simulation", ["--scenario", "region-failover"]),
                           ("annual-full-dr", ["--approve", "dr_region_switch", "--scenario", "region-failover"]),
                           ("tabletop", [])):
        out = tmp_path / profile
        r = _run([drill, "run", profile, "--dry-run", "--report-dir", str(out), *extra], cwd=work, env=env,
                 timeout=600)
        assert r.returncode == 0, f"{profile}: {r.stderr[-4000:]}"
        _reports_ok(out, profile)
    # a user's own feature file, under another name, outside any checkout: bound to the packaged steps
    mine = work / "drills" / "my_region_loss.feature"
    mine.parent.mkdir()
    shutil.copy(ROOT / "features" / "region_failover.feature", mine)
    v = _run([drill, "validate", "drills/my_region_loss.feature"], cwd=work, env=env, timeout=120)
    assert v.returncode == 0 and v.stdout.startswith("ok  "), v.stdout + v.stderr
    out = tmp_path / "feature"
    r = _run([drill, "run", "drills/my_region_loss.feature", "--report-dir", str(out)], cwd=work, env=env,
             timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    report = _reports_ok(out, "region-failover")
    assert report["target"] == str(mine.resolve())
    assert (out / "pytest-junit.xml").is_file()
    topo = drill_lab.status()
    assert topo["healthy"] and topo["router"]["active_region"] == "primary", topo["router"]
