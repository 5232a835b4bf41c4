"""Detached server processes of the lab: spawn with a log file, check, stop by process group, sweep leftovers.

A pid alone may name another process once the recorded one is gone (pids are reused), so the lab records
each process's start time (`started_at`) next to its pid and every check or signal verifies it first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, Mapping

import psutil


def spawn(cmd: list[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None,
          nice: int = 0) -> int:
    """Start `cmd` detached (own session, so it outlives the CLI); stdout+stderr to `log`. Returns the pid.

    `nice` lowers the priority of components off the start-up critical path.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
                             cwd=str(cwd) if cwd else None, start_new_session=True, close_fds=True,
                             preexec_fn=(lambda: os.nice(nice)) if nice else None)
    return p.pid


#: two start times closer than this are the same process (psutil derives them from boot time + clock ticks)
START_TOLERANCE_S = 0.5

#: programs the lab runs (executable or argv[0] basename); `sweep` never touches anything else
LAB_PROGRAMS = ("valkey-server", "postgres", "pg_ctl", "moto_server")


def started_at(pid: int | None) -> float | None:
    """Start time (epoch seconds, psutil `create_time`) of `pid`, None when it does not exist."""
    if not pid:
        return None
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_start(a: float | None, b: float | None) -> bool:
    """True when two recorded start times name the same process (None on either side: cannot tell, so True)."""
    return a is None or b is None or abs(a - b) <= START_TOLERANCE_S


def _process(pid: int | None, started: float | None = None) -> psutil.Process | None:
    """The live (not zombie) process `pid`, when it is the one that started at `started` (if given)."""
    if not pid:
        return None
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        if not same_start(p.create_time(), started):
            return None  # the pid was reused: the recorded process is gone
        return p
    except psutil.Error:
        return None


def alive(pid: int | None, started: float | None = None) -> bool:
    """True while `pid` exists and is not a zombie; with `started`, only if it is still that same process."""
    return _process(pid, started) is not None


def _terminate(ps: list, timeout: float, signalled: bool = False) -> None:
    """SIGTERM (unless already `signalled`), wait `timeout`, SIGKILL what is left (psutil checks identity)."""
    if not signalled:
        for p in ps:
            try:
                p.terminate()
            except psutil.Error:
                pass
    left = _wait_gone(ps, timeout)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    _wait_gone(left, 2)


def _wait_gone(ps: list, timeout: float) -> list:
    """Wait until the processes are gone; a zombie counts as gone (its parent may never reap it). Returns the rest."""
    deadline = time.monotonic() + timeout
    left = list(ps)
    while left:
        for p in left:
            reap(p.pid)
        left = [p for p in left if _running(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return left


def _running(p: psutil.Process) -> bool:
    """True while the very process `p` (same start time) exists and is not a zombie."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (its own process only when the group may not be signalled);
    gone already is fine."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap(pid: int) -> None:
    """Collect a child's exit status if it is ours (avoids zombies inside long-lived test processes)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def stop(pid: int | None, timeout: float = 5.0, started: float | None = None) -> None:
    """SIGTERM the process group of `pid`, then SIGKILL what is left after `timeout`.

    With `started` (its recorded start time) a pid now naming another process counts as already gone. The
    group is signalled only when `pid` leads it (the lab starts each server in its own session), else
    only the process and its children.
    """
    leader = _process(pid, started)
    if leader is None:
        return
    try:
        procs = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        procs = [leader]
    try:
        own_group = os.getpgid(leader.pid) == leader.pid and leader.is_running()  # is_running: same start time
    except OSError:
        own_group = False
    signalled = False
    if own_group:
        try:
            os.killpg(leader.pid, signal.SIGTERM)
            signalled = True
        except (ProcessLookupError, PermissionError):
            pass
    _terminate(procs, timeout, signalled=signalled)
    reap(pid)


def is_lab_program(p: psutil.Process, argv: list[str] | None = None) -> bool:
    """True when `p` runs one of the lab's programs: python*, or a name in LAB_PROGRAMS (exe or argv[0])."""
    names = set()
    try:
        names.add(os.path.basename(p.exe()))
    except (psutil.Error, OSError):
        pass
    if argv is None:
        try:
            argv = p.cmdline()
        except psutil.Error:
            argv = []
    if argv:
        names.add(os.path.basename(argv[0]))
    return any(n.startswith("python") or n in LAB_PROGRAMS for n in names if n)


def sweep(markers: Iterable[str], timeout: float = 3.0) -> list[int]:
    """Kill the lab's own programs (see `is_lab_program`) whose command line mentions one of `markers` (the
    lab's paths); anything else, e.g. a `tail -f` on a lab log or an editor, is left alone. Returns pids."""
    marks = [m for m in markers if m]
    spared = {os.getpid()}
    try:
        spared |= {a.pid for a in psutil.Process().parents()}  # never the command doing the sweep
    except psutil.Error:
        pass
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            argv = p.info["cmdline"] or []
        except psutil.Error:
            continue
        cmd = " ".join(argv)
        if p.info["pid"] in spared or not any(m in cmd for m in marks):
            continue
        if is_lab_program(p, argv):
            found.append(p)
    _terminate(found, timeout)
    return [p.pid for p in found]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports (held open together while picking, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(pred, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
