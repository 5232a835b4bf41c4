"""Detached server processes of the lab: spawn with a log file, check, stop by process group, sweep leftovers."""

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


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(ps: list, timeout: float) -> list:
    """Wait until the processes are gone; a zombie counts as gone (its parent may never reap it). Returns the rest."""
    deadline = time.monotonic() + timeout
    left = list(ps)
    while left:
        for p in left:
            reap(p.pid)
        left = [p for p in left if alive(p.pid)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return left


def reap(pid: int) -> None:
    """Collect a child's exit status if it is ours (avoids zombies inside long-lived test processes)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def stop(pid: int | None, timeout: float = 5.0) -> None:
    """SIGTERM the process group of `pid`, then SIGKILL what is left after `timeout`."""
    if not pid or not alive(pid):
        return
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        procs = []
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    left = _wait_gone(procs, timeout)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    _wait_gone(left, 2)
    reap(pid)


def sweep(markers: Iterable[str], timeout: float = 3.0) -> list[int]:
    """Kill every process whose command line mentions one of `markers` (the lab's own paths). Returns pids."""
    marks = [m for m in markers if m]
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if p.info["pid"] != me and any(m in cmd for m in marks):
            found.append(p)
    for p in found:
        try:
            p.terminate()
        except psutil.Error:
            pass
    left = _wait_gone(found, timeout)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    _wait_gone(left, 2)
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
