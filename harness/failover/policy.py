"""The failover policy engine: measures the plan's signals continuously, decides with `core.policy`, acts through the runbook and targets."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from harness.core import escalation
from harness.core import policy as core_policy
from harness.errors import HarnessError, SafetyRefusal
from harness.failover import runbook
from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab
from harness.targets.app import actions as app_actions
from harness.targets.app import ops as app_ops
from harness.targets.postgres import actions as pg_actions
from harness.targets.router import ops as router_ops

__all__ = ["start_policy", "stop_policy", "wait_for_decision"]

DEFAULT_INTERVAL_S = 0.25
CONNECT_WAIT_S = 0.5
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="drill-policy-connect")
MAX_REPLICAS = 3  # the lab's app slots per region

_engines: dict[str, "PolicyRunner"] = {}
_lock = threading.Lock()


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(0.99 * len(v)) - 1))]


def measure(t: _lab.LabTarget, http: Any, ctx: Any, window_s: float, latency_window_s: float | None = None) -> dict[str, Any]:
    """The plan's signals now: replication lag of the standby (s), primary database connection failing, app replicas
    not ready in the serving region, the Kubernetes API (the lab's supervisor) unreachable, and the probes' error
    rate and p99 latency over the last `window_s` (from the run's timeline)."""
    out: dict[str, Any] = {}
    active = _lab.quiet(lambda: router_ops.state(http, t.router_url)["active_region"], "primary") or "primary"
    standby = _lab.other(active)

    def lag() -> float | None:
        """0 while the standby streams and has replayed all it received; else the age of its last replayed
        transaction (the workload commits all the time, so that is how far behind it is). None: not a standby."""
        with t.pg(standby, timeout=1) as c:
            row = c.execute("select pg_is_in_recovery(), (select status from pg_stat_wal_receiver), "
                            "pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), "
                            "extract(epoch from now() - pg_last_xact_replay_timestamp())").fetchone()
        if not row[0]:
            return None
        if row[1] == "streaming" and row[2]:
            return 0.0
        return float(row[3]) if row[3] is not None else None

    def connect() -> bool:
        with t.pg(active, timeout=1) as c:
            c.execute("select 1").fetchone()
        return True

    def connection_failure() -> bool:
        """The primary database does not answer `select 1` within CONNECT_WAIT_S (a hung server accepts the TCP
        connection and never answers; libpq's own connect timeout is 2 s at least)."""
        fut = _POOL.submit(connect)
        try:
            return not fut.result(timeout=CONNECT_WAIT_S)
        except Exception:  # refused, failed, or no answer in time
            return True

    out["replication_lag"] = _lab.quiet(lag, None)
    out["connection_failure"] = connection_failure()
    try:
        st = app_ops.regions(http, t.supervisor_url)
        out["api_server_unreachable"] = False
        out["node_not_ready"] = max(0, int(st[active]["desired"]) - len(app_ops.alive_replicas(st, active)))
    except Exception:
        out["api_server_unreachable"] = True
        out["node_not_ready"] = None
    if ctx is not None:
        now = time.time()
        lw = latency_window_s or window_s
        probes = [e for e in ctx.timeline.of_kind("probe") if e.t >= now - max(window_s, lw)]
        recent = [e for e in probes if e.t >= now - window_s]
        if recent:
            out["error_rate"] = sum(1 for e in recent if not e.data.get("ok")) / len(recent)
        lat = [float(e.data["latency_s"]) for e in probes if e.t >= now - lw
               and isinstance(e.data.get("latency_s"), (int, float))]
        if lat:
            out["latency_p99"] = _p99(lat)
    return out


class PolicyRunner:
    """The engine's thread: every `interval_s` measure, decide, act; every decision goes on the timeline (kind
    "decision")."""

    def __init__(self, configuration: dict, interval_s: float, window_s: float,
                 overrides: Mapping[str, Mapping[str, Any]] | None, latency_window_s: float | None = None) -> None:
        self.cfg = dict(configuration)
        self.ctx = run_context.of(configuration)
        plan = guard.plan(configuration)
        self.scale = escalation.time_scale(self.cfg.get("drill_time_scale"))
        self.engine = core_policy.PolicyEngine.for_plan(plan, self.scale, overrides)
        self.interval_s, self.window_s, self.latency_window_s = interval_s, window_s, latency_window_s or window_s
        self.decisions: list[dict[str, Any]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-failover-policy", daemon=True)
        self.target = _lab.resolve(configuration)

    def _record(self, d: core_policy.PolicyDecision, **acted: Any) -> None:
        doc = {**d.to_dict(), **acted}
        self.decisions.append(doc)
        if self.ctx is not None:
            self.ctx.timeline.append("decision", f"{d.rule}: {doc['outcome']}", {k: v for k, v in doc.items() if k != "t"},
                                     t=d.t)

    def act(self, d: core_policy.PolicyDecision, signals: Mapping[str, Any]) -> dict[str, Any]:
        """Carry out a fired decision's action through the targets and the runbook (the guard decides on each)."""
        cfg = self.cfg
        t = self.target
        with t.http(timeout=2.0) as http:
            active = router_ops.state(http, t.router_url)["active_region"]
            if d.action == "alert":
                if self.ctx is not None:
                    self.ctx.timeline.append("failover", "alert", {"rule": d.rule, "measured": d.measured,
                                                                   "threshold": d.threshold})
                return {"alerted": True}
            if d.action == "promote_replica":
                return pg_actions.promote_standby(region=_lab.other(active), configuration=cfg)
            if d.action == "scale_up":
                now = app_ops.regions(http, t.supervisor_url)[active]["desired"]
                if now >= MAX_REPLICAS:
                    return {"region": active, "replicas": now, "skipped": f"already at the lab's {MAX_REPLICAS} slots"}
                return app_actions.scale_region(region=active, replicas=now + 1, configuration=cfg)
            if d.action == "drain_and_replace":
                return app_actions.restore_scale(region=active, replicas=app_ops.regions(http, t.supervisor_url)[active]
                                                 ["desired"], configuration=cfg)
            if d.action == "activate_dr":
                return runbook.fail_over(to_region=_lab.other(active), configuration=cfg)
            if d.action == "rollback":  # roll back the run's most recent change still in place (the ledger's newest)
                run_id = self.ctx.run_id if self.ctx is not None else None
                active_faults = guard.ledger(cfg).active_of_run(run_id) if run_id else []
                if not active_faults:
                    return {"rolled_back": None, "skipped": "no change of this run is in place"}
                last = max(active_faults, key=lambda e: e.injected_at)
                guard.ledger(cfg).revert(last, how=f"failover policy rollback ({d.rule})")
                return {"rolled_back": {"id": last.id, "fault": last.fault, "target": last.target}}
        raise HarnessError(f"failover policy: no action {d.action!r}")

    def tick(self) -> None:
        try:
            with self.target.http(timeout=1.0) as http:
                signals = measure(self.target, http, self.ctx, self.window_s, self.latency_window_s)
        except Exception as e:
            self.errors += 1
            if self.errors <= 3 and self.ctx is not None:
                self.ctx.note(f"failover policy could not measure: {type(e).__name__}: {e}")
            return
        now = time.time()
        for d in self.engine.observe(now, signals):
            if d.outcome != core_policy.FIRED:
                self._record(d)
                continue
            try:
                result = self.act(d, signals)
            except SafetyRefusal as e:  # an approval gate (or the guard's own cooldown) said no
                self._record(core_policy.PolicyDecision(d.t, d.rule, d.measured, d.threshold, d.duration_s,
                                                        d.drill_duration_s, d.held_s, d.action, core_policy.REFUSED,
                                                        str(e), peak=d.peak))
                continue
            except Exception as e:
                self._record(d, result={"error": f"{type(e).__name__}: {e}"})
                continue
            if isinstance(result, dict) and result.get("outcome") in ("refused", "dry_run"):
                self._record(core_policy.PolicyDecision(d.t, d.rule, d.measured, d.threshold, d.duration_s,
                                                        d.drill_duration_s, d.held_s, d.action, core_policy.REFUSED,
                                                        str(result.get("reason")), peak=d.peak))
                continue
            self.engine.acted(d)
            self._record(d, result=result, acted_t=time.time())

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            self.tick()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - start)))

    def start(self) -> "PolicyRunner":
        if self.ctx is not None:
            self.ctx.event("note", "failover policy started", time_scale=self.scale, interval_s=self.interval_s,
                           window_s=self.window_s, latency_window_s=self.latency_window_s, rules=[r.to_dict() for r in self.engine.rules])
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(30)
        for d in self.engine.finish(time.time()):
            self._record(d)


def _run_id(configuration: dict | None) -> str:
    rid = (configuration or {}).get(run_context.RUN_ID_KEY)
    if not rid or run_context.of(configuration) is None:
        raise HarnessError("the failover policy runs inside a drill (no run context in the configuration)")
    return str(rid)


def start_policy(interval_s: float = DEFAULT_INTERVAL_S, window_s: float = 1.0, latency_window_s: float | None = None,
                 overrides: dict | None = None, configuration: dict | None = None,
                 secrets: dict | None = None) -> dict:
    """Start evaluating the plan's failover conditions continuously (on the drill clock, configuration
    drill_time_scale): the probes' error rate over the last `window_s`, their p99 over `latency_window_s` (default the
    same). `overrides` {rule: {"threshold": v}} replaces a drill threshold. Rollback: stop_policy."""
    rid = _run_id(configuration)
    if guard.is_dry_run(configuration):  # nothing is injected, so nothing to evaluate; nothing may act
        return {"started": False, "dry_run": True}
    if str((configuration or {}).get("drill_environment") or "lab") != "lab":
        raise HarnessError("the failover policy engine measures the embedded lab only")
    with _lock:
        if rid in _engines:
            return {"started": False, "reason": "already running"}
        runner = PolicyRunner(configuration or {}, float(interval_s), float(window_s), overrides,
                              float(latency_window_s) if latency_window_s else None)
        _engines[rid] = runner
    runner.start()
    return {"started": True, "time_scale": runner.scale, "rules": [r.to_dict() for r in runner.engine.rules]}


def stop_policy(configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Stop the run's policy engine (idempotent); the decisions it took."""
    rid = (configuration or {}).get(run_context.RUN_ID_KEY)
    with _lock:
        runner = _engines.pop(str(rid), None) if rid else None
    if runner is None:
        return {"stopped": False}
    runner.stop()
    return {"stopped": True, "decisions": len(runner.decisions),
            "fired": sorted({d["rule"] for d in runner.decisions if d["outcome"] == core_policy.FIRED})}


def wait_for_decision(rule: str, outcome: str = core_policy.FIRED, timeout_s: float = 15.0,
                      configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Probe: wait until the policy engine decided `rule` with `outcome` (fired, not_fired, refused); the decision.
    HarnessError when it did not within `timeout_s`."""
    rid = _run_id(configuration)
    if guard.is_dry_run(configuration):
        return {"rule": rule, "outcome": None, "dry_run": True}
    deadline = time.monotonic() + float(timeout_s)
    while True:
        with _lock:
            runner = _engines.get(rid)
        if runner is None:
            raise HarnessError("wait_for_decision: the failover policy is not running (start_policy first)")
        found = next((d for d in runner.decisions if d["rule"] == rule and d["outcome"] == outcome), None)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            seen = [f"{d['rule']}:{d['outcome']}" for d in runner.decisions]
            raise HarnessError(f"failover policy: no {outcome} decision of {rule!r} within {timeout_s:.0f} s "
                               f"(decisions so far: {', '.join(seen) or 'none'})")
        time.sleep(0.1)
