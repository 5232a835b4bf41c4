"""App supervisor of the lab: keeps the desired K-ERP replicas per region alive (Kubernetes-like self-healing) with a scale API."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError, LabError
from harness.lab.kubecontroller import KubeController, KubeSpec, UnknownNodeError
from harness.lab.procs import signal_group

log = logging.getLogger("harness.lab.supervisor")

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 3.0
QUICK_EXIT_S = 10.0  # a child that dies sooner than this counts towards crash-loop backoff
POLL_S = 0.05


class SupervisorError(LabError):
    """The app supervisor could not start, stop or scale a replica."""


class UnknownRegionError(SupervisorError):
    """A request named a region the supervisor does not manage."""


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat() if epoch is not None else None


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SlotSpec:
    """One place a replica can run: its port (and host)."""

    port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class RegionSpec:
    """A region's replicas: how many at start, the slots they may use, the command and environment."""

    name: str
    replicas: int
    slots: tuple[SlotSpec, ...]
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass(frozen=True)
class SupervisorConfig:
    """supervisor.json: regions, log directory, restart delay."""

    regions: tuple[RegionSpec, ...]
    log_dir: Path
    restart_delay_s: float = 0.2
    max_restart_delay_s: float = 5.0
    kubernetes: KubeSpec | None = None  # set: each region is a Deployment in a Kubernetes API (kubecontroller.py)

    @classmethod
    def from_json(cls, data: Any, *, base_dir: Path | None = None) -> SupervisorConfig:
        """Validate and build the configuration from parsed JSON; raise ConfigError naming the bad value."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"supervisor config must be a JSON object, got {type(data).__name__}")
        raw = data.get("regions")
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError("supervisor config: 'regions' must be a non-empty object")
        regions = []
        ports: set[int] = set()
        for name, spec in raw.items():
            where = f"supervisor config: region {name!r}"
            if not isinstance(spec, Mapping):
                raise ConfigError(f"{where} must be an object")
            slots_raw = spec.get("slots")
            if not isinstance(slots_raw, Sequence) or isinstance(slots_raw, str):
                raise ConfigError(f"{where}: 'slots' must be a list of {{\"port\": N}}")
            slots = []
            for s in slots_raw:
                port = s.get("port") if isinstance(s, Mapping) else None
                if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                    raise ConfigError(f"{where}: slot {s!r} needs an integer 'port'")
                if port in ports:
                    raise ConfigError(f"{where}: port {port} used by two slots")
                ports.add(port)
                slots.append(SlotSpec(port=port, host=str(s.get("host", "127.0.0.1"))))
            replicas = spec.get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= len(slots):
                raise ConfigError(f"{where}: replicas {replicas!r} must be an integer in 0..{len(slots)}")
            command = spec.get("command")
            if not isinstance(command, Sequence) or isinstance(command, str) or not command or not all(isinstance(c, str) for c in command):
                raise ConfigError(f"{where}: 'command' must be a non-empty list of strings")
            env = spec.get("env", {}) or {}
            if not isinstance(env, Mapping):
                raise ConfigError(f"{where}: 'env' must be an object")
            regions.append(
                RegionSpec(
                    name=str(name),
                    replicas=replicas,
                    slots=tuple(slots),
                    command=tuple(command),
                    env={str(k): str(v) for k, v in env.items()},
                    cwd=str(spec["cwd"]) if spec.get("cwd") else None,
                )
            )
        log_dir = Path(str(data.get("log_dir") or "."))
        if not log_dir.is_absolute() and base_dir is not None:
            log_dir = base_dir / log_dir
        try:
            delay = float(data.get("restart_delay_s", 0.2))
            max_delay = float(data.get("max_restart_delay_s", 5.0))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"supervisor config: bad restart_delay_s: {e}") from e
        if delay < 0 or max_delay < delay:
            raise ConfigError(f"supervisor config: restart_delay_s {delay} must be >= 0 and <= max_restart_delay_s {max_delay}")
        kube = None
        if data.get("kubernetes") is not None:
            kube = KubeSpec.from_json(data["kubernetes"], {r.name for r in regions})
        return cls(regions=tuple(regions), log_dir=log_dir, restart_delay_s=delay, max_restart_delay_s=max_delay,
                   kubernetes=kube)


def load_config(path: str) -> SupervisorConfig:
    """Read and validate supervisor.json (a relative log_dir is relative to the file)."""
    from harness.lab.paths import read_json_config

    return SupervisorConfig.from_json(read_json_config(path, "supervisor"), base_dir=Path(path).resolve().parent)


# --------------------------------------------------------------------------- children


def _child_setup(parent_pid: int) -> Any:
    """preexec_fn: die with the supervisor (PR_SET_PDEATHSIG), and bail out if it is already gone."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            except (OSError, AttributeError):
                pass
        if os.getppid() != parent_pid:
            os._exit(1)

    return setup


def substitute(text: str, *, port: int, slot: int, region: str) -> str:
    """Replace {port}, {slot} and {region} (plain replacement: other braces, e.g. JSON, stay as they are)."""
    return text.replace("{port}", str(port)).replace("{slot}", str(slot)).replace("{region}", region)


@dataclass
class Replica:
    """One slot of a region and the child process running in it, if any."""

    region: str
    slot: int
    spec: SlotSpec
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    quick_failures: int = 0
    next_start_at: float = 0.0
    needs_restart: bool = False
    stopping: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def to_json(self) -> dict[str, Any]:
        alive = self.alive
        if self.stopping:
            state = "stopping"
        elif alive:
            state = "running"
        elif self.needs_restart:
            state = "restarting"
        else:
            state = "stopped"
        return {
            "slot": self.slot,
            "url": self.url,
            "port": self.spec.port,
            "pid": self.proc.pid if alive and self.proc else None,
            "alive": alive,
            "restarts": self.restarts,
            "state": state,
            "started_at": _iso(self.started_at) if alive else None,
            "last_exit_code": self.exit_code,
            "last_exit_at": _iso(self.exited_at),
        }


class Supervisor:
    """Reconciles each region's running children with its desired replica count."""

    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.specs = {r.name: r for r in config.regions}
        self.desired = {r.name: r.replicas for r in config.regions}
        self.replicas = {r.name: [Replica(r.name, i, s) for i, s in enumerate(r.slots)] for r in config.regions}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # hooks of the Kubernetes controller (kubecontroller.py), when the config has a `kubernetes` block
        self.can_start: Callable[[Replica], bool] = lambda rep: True
        self.pod_of: Callable[[str, int], dict[str, Any] | None] = lambda region, slot: None
        self.controller = KubeController(self, config.kubernetes) if config.kubernetes else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        self.reconcile()  # the apps first: their Pods follow on the controller's first tick
        if self.controller is not None:
            await self.controller.start()
        self._task = asyncio.create_task(self._loop(), name="supervisor reconcile")

    async def stop(self) -> None:
        """Stop every child (SIGTERM, SIGKILL after the grace period) and the reconcile loop."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.controller is not None:
            await self.controller.stop()
        await asyncio.gather(*(self._terminate(r) for reps in self.replicas.values() for r in reps))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self.reconcile()
            except Exception:
                log.exception("reconcile failed")

    # ------------------------------------------------------------------ reconcile

    def reconcile(self, now: float | None = None) -> None:
        """Notice dead children, schedule restarts with crash-loop backoff, start missing ones."""
        if self._closing:
            return
        now = time.time() if now is None else now
        for region, reps in self.replicas.items():
            desired = self.desired[region]
            for rep in reps:
                if rep.proc is not None and rep.proc.poll() is not None and not rep.stopping:
                    pid = rep.proc.pid
                    self._record_exit(rep, now)
                    if rep.slot < desired:
                        rep.needs_restart = True
                        lived = now - (rep.started_at or now)
                        rep.quick_failures = rep.quick_failures + 1 if lived < QUICK_EXIT_S else 1
                        delay = min(self.config.max_restart_delay_s, self.config.restart_delay_s * 2 ** (rep.quick_failures - 1))
                        rep.next_start_at = now + delay
                        log.warning("%s/%d (pid %s) exited with %s; restart in %.2fs", region, rep.slot, pid, rep.exit_code, delay)
                if rep.slot < desired and rep.proc is None and not rep.stopping and now >= rep.next_start_at \
                        and self.can_start(rep):
                    try:
                        self._spawn(rep)
                    except SupervisorError as e:
                        log.error("%s", e)
                        rep.next_start_at = now + self.config.max_restart_delay_s

    def _record_exit(self, rep: Replica, now: float) -> None:
        assert rep.proc is not None
        rep.exit_code = rep.proc.returncode
        rep.exited_at = now
        rep.proc = None

    def _spawn(self, rep: Replica) -> None:
        spec = self.specs[rep.region]
        port, slot, region = rep.spec.port, rep.slot, rep.region
        argv = [substitute(a, port=port, slot=slot, region=region) for a in spec.command]
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the supervisor's interpreter, whatever PATH says
        env = dict(os.environ)
        env.update({k: substitute(v, port=port, slot=slot, region=region) for k, v in spec.env.items()})
        env.setdefault("PYTHONUNBUFFERED", "1")
        log_path = self.config.log_dir / f"app-{region}-{slot}.log"
        try:
            with open(log_path, "ab") as logf:
                logf.write(f"--- {_iso(time.time())} supervisor starts: {' '.join(argv)}\n".encode())
                logf.flush()
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=spec.cwd,
                    start_new_session=True,  # own process group: killed one by one, not by our terminal
                    preexec_fn=_child_setup(os.getpid()),
                )
        except OSError as e:
            raise SupervisorError(f"cannot start {region}/{slot} ({argv[0]}): {e}") from e
        if rep.needs_restart:
            rep.restarts += 1
        rep.needs_restart = False
        rep.proc = proc
        rep.started_at = time.time()
        log.info("%s/%d started pid %d on port %d", region, slot, proc.pid, port)

    async def _terminate(self, rep: Replica) -> None:
        """SIGTERM the child's process group, SIGKILL it after STOP_GRACE_S; idempotent."""
        proc = rep.proc
        rep.needs_restart = False
        if proc is None:
            return
        rep.stopping = True
        try:
            if proc.poll() is None:
                signal_group(proc.pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_GRACE_S
                while proc.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(POLL_S)
                if proc.poll() is None:
                    signal_group(proc.pid, signal.SIGKILL)
                    while proc.poll() is None:
                        await asyncio.sleep(POLL_S)
            else:
                signal_group(proc.pid, signal.SIGKILL)  # leftovers in its group, if any
            self._record_exit(rep, time.time())
        finally:
            rep.stopping = False

    # ------------------------------------------------------------------ API operations

    def region_state(self, region: str) -> dict[str, Any]:
        reps = self._region(region)
        desired = self.desired[region]
        return {
            "desired": desired,
            "slots": len(reps),
            "replicas": [{**r.to_json(), **(self.pod_of(region, r.slot) or {})}
                         for r in reps if r.slot < desired or r.alive or r.stopping],
        }

    def state(self) -> dict[str, Any]:
        return {name: self.region_state(name) for name in self.replicas}

    def _region(self, region: str) -> list[Replica]:
        try:
            return self.replicas[region]
        except KeyError:
            raise UnknownRegionError(f"unknown region {region!r}; known: {', '.join(sorted(self.replicas))}") from None

    async def scale(self, region: str, replicas: Any) -> dict[str, Any]:
        """Set a region's desired replicas (through its Deployment when there is a Kubernetes API)."""
        reps = self._region(region)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= len(reps):
            raise ConfigError(f"replicas {replicas!r} for region {region!r} must be an integer in 0..{len(reps)}")
        if self.controller is not None:
            await self.controller.set_replicas(region, replicas)
        else:
            await self.apply_scale(region, replicas)
        return self.region_state(region)

    async def kill_replica(self, rep: Replica) -> None:
        """Stop a replica whose Pod was deleted; the reconcile loop starts its replacement at once (no backoff)."""
        await self._terminate(rep)
        rep.next_start_at = 0.0
        rep.quick_failures = 0
        if rep.slot < self.desired[rep.region]:
            rep.restarts += 1

    async def apply_scale(self, region: str, replicas: int) -> dict[str, Any]:
        """Run `replicas` processes in a region: start the missing slots now, stop the highest ones (and wait)."""
        reps = self._region(region)
        self.desired[region] = replicas
        now = time.time()
        for rep in reps:
            if rep.slot < replicas and rep.proc is None:
                rep.next_start_at = min(rep.next_start_at, now)
        await asyncio.gather(*(self._terminate(r) for r in reps if r.slot >= replicas))
        self.reconcile()
        return self.region_state(region)


# --------------------------------------------------------------------------- HTTP API


def build_app(supervisor: Supervisor) -> Any:
    """Starlette app: GET /regions, GET /regions/{region}, PUT /regions/{region} {"replicas": n}, GET /health."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def get_regions(request: Request) -> JSONResponse:
        return JSONResponse(supervisor.state())

    async def get_region(request: Request) -> JSONResponse:
        try:
            return JSONResponse(supervisor.region_state(request.path_params["region"]))
        except UnknownRegionError as e:
            return JSONResponse({"error": str(e)}, status_code=404)

    async def put_region(request: Request) -> JSONResponse:
        try:
            try:
                data = await request.json()
            except ValueError as e:
                raise ConfigError(f"request body is not JSON: {e}") from e
            if not isinstance(data, dict) or "replicas" not in data:
                raise ConfigError('request body must be {"replicas": n}')
            return JSONResponse(await supervisor.scale(request.path_params["region"], data["replicas"]))
        except UnknownRegionError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        except ConfigError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except LabError as e:  # the Kubernetes API did not take the new spec.replicas
            return JSONResponse({"error": str(e)}, status_code=503)

    async def get_nodes(request: Request) -> JSONResponse:
        if supervisor.controller is None:
            return JSONResponse({"error": "no Kubernetes API: the lab runs no nodes"}, status_code=404)
        return JSONResponse({r: supervisor.controller.node_states(r) for r in supervisor.replicas})

    async def put_node(request: Request) -> JSONResponse:
        """{"lost": true}: the node is lost (its replicas die, it turns NotReady and cordoned); false: it is back."""
        if supervisor.controller is None:
            return JSONResponse({"error": "no Kubernetes API: the lab runs no nodes"}, status_code=404)
        try:
            data = await request.json()
        except ValueError as e:
            return JSONResponse({"error": f"request body is not JSON: {e}"}, status_code=400)
        if not isinstance(data, dict) or not isinstance(data.get("lost"), bool):
            return JSONResponse({"error": 'request body must be {"lost": true|false}'}, status_code=400)
        try:
            return JSONResponse(await supervisor.controller.set_node_lost(
                request.path_params["region"], request.path_params["node"], data["lost"]))
        except UnknownNodeError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        except LabError as e:
            return JSONResponse({"error": str(e)}, status_code=503)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        await supervisor.start()
        try:
            yield
        finally:
            await supervisor.stop()

    return Starlette(
        routes=[
            Route("/regions", get_regions, methods=["GET"]),
            Route("/regions/{region}", get_region, methods=["GET"]),
            Route("/regions/{region}", put_region, methods=["PUT"]),
            Route("/nodes", get_nodes, methods=["GET"]),
            Route("/nodes/{region}/{node}", put_node, methods=["PUT"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lab.supervisor", description="App supervisor of the drill lab")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="supervisor.json")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Kubernetes API call otherwise
    try:
        config = load_config(args.config)
    except HarnessError as e:
        print(f"supervisor: {e}", file=sys.stderr)
        return e.exit_code

    import uvicorn

    supervisor = Supervisor(config)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown, whose lifespan stops every child.
    uvicorn.run(build_app(supervisor), host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on")
    # uvicorn returns without running the lifespan shutdown if startup never finished.
    for reps in supervisor.replicas.values():
        for rep in reps:
            if rep.proc is not None and rep.proc.poll() is None:
                signal_group(rep.proc.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
