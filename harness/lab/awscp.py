"""The lab's AWS control plane: moto in this process, its gaps carried by hooks, and a reconciler to the real lab.

`python -m harness.lab.awscp --host H --port P --state-dir D` serves the moto API (every service) and, once
`drill lab up` has written `aws-controlplane.json` (which moto resource stands for which lab process), keeps
both sides in step:

* API -> lab: promote_read_replica pg_promotes the real standby; stop/start/reboot_db_instance stop, start or
  restart the real PostgreSQL; a Route 53 change of the failover records or of a health check moves the region
  router; ElastiCache test_failover makes the Valkey replica the master.
* lab -> API: instance status follows the real server (a killed one is `failed`), the replica's role and
  lag (`StatusInfos`, CloudWatch `AWS/RDS ReplicaLag`), Route 53 health-check status follows the router's
  health checker, a disabled KMS key refuses to encrypt and decrypt, and a bucket policy that denies every
  principal (`"Effect": "Deny", "Principal": "*"`) refuses the actions it names (moto stores bucket policies
  without evaluating them): a region's backup bucket can be made unavailable without deleting an object.

Changes are not instant: the API answers with a transitional status (`modifying`, `stopping`, `starting`,
`rebooting`) and the final one once the real process is there.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

CONTROLPLANE_FILE = "aws-controlplane.json"
OBSERVE_INTERVAL_S = 0.25
LAG_METRIC_INTERVAL_S = 1.0
ACCOUNT_ID = "123456789012"  # moto's default account
NICE = 10


def _log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} awscp: {msg}", flush=True)


class Controller:
    """Reconciles moto's RDS / Route 53 / ElastiCache state with the real lab processes (one worker thread)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.mapping: dict[str, Any] = {}
        self._mapping_mtime = 0.0
        self.lock = threading.RLock()
        self.jobs: queue.Queue[tuple[str, Callable[[], None]]] = queue.Queue()
        self.busy: set[str] = set()  # instance ids with an operation in flight: the observer leaves them alone
        self.api_stopped: set[str] = set()
        self.health: dict[str, bool] = {}  # health check id -> last observed health
        self._last_lag = 0.0
        self._lab = None
        self._nodes: dict[str, Any] | None = None
        self.stop_event = threading.Event()

    # -- the lab side ---------------------------------------------------------
    def lab(self):
        if self._lab is None:
            from harness.lab.manager import Lab

            self._lab = Lab(self.state_dir)
        return self._lab

    def nodes(self) -> dict[str, Any]:
        if self._nodes is None:
            self._nodes = self.lab().pg_nodes()
        return self._nodes

    def ports(self) -> dict[str, int]:
        return self.lab().ports()

    def load_mapping(self) -> bool:
        p = self.state_dir / CONTROLPLANE_FILE
        try:
            m = p.stat().st_mtime
        except FileNotFoundError:
            return bool(self.mapping)
        if m != self._mapping_mtime:
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError):
                return bool(self.mapping)  # half written: next round
            self._mapping_mtime = m
            self.mapping = data
            self._nodes = None
            self._adopt()
            _log(f"control plane mapping loaded: {sorted(data.get('rds', {}))}")
        return bool(self.mapping)

    def _adopt(self) -> None:
        """Point the RDS endpoints at the real servers (moto derives the address from the identifier)."""
        with self.lock:
            for ident, info in self.mapping.get("rds", {}).items():
                db = self.rds_instance(ident)
                if db is not None:
                    db.lab_address = "127.0.0.1"
                    db.port = info["port"]

    # -- moto side lookups ----------------------------------------------------
    def rds_instance(self, ident: str):
        from moto.rds.models import rds_backends

        info = self.mapping.get("rds", {}).get(ident)
        if not info:
            return None
        return rds_backends[ACCOUNT_ID][info["region"]].databases.get(ident)

    def mapped(self, ident: str) -> dict[str, Any] | None:
        return self.mapping.get("rds", {}).get(ident)

    # -- API -> lab: jobs queued by the hooks --------------------------------
    def submit(self, what: str, ident: str, fn: Callable[[], None]) -> None:
        with self.lock:
            self.busy.add(ident)
        self.jobs.put((what, lambda: self._run_job(what, ident, fn)))

    def _run_job(self, what: str, ident: str, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        try:
            fn()
            _log(f"{what} {ident}: done in {time.monotonic() - t0:.2f} s")
        except Exception as e:  # the worker goes on; the status shows it
            _log(f"{what} {ident}: FAILED: {type(e).__name__}: {e}")
            db = self.rds_instance(ident)
            if db is not None:
                db.status = "failed"
        finally:
            with self.lock:
                self.busy.discard(ident)

    def on_promote(self, db) -> None:
        info = self.mapped(db.db_instance_identifier)
        if not info:
            return
        db.status = "modifying"
        node = self.nodes()[info["node"]]

        def promote() -> None:
            if _in_recovery(node):
                node.promote()
            db.status = "available"

        self.submit("promote", db.db_instance_identifier, promote)

    def on_stop(self, db) -> None:
        info = self.mapped(db.db_instance_identifier)
        if not info:
            return
        db.status = "stopping"
        self.api_stopped.add(db.db_instance_identifier)
        node = self.nodes()[info["node"]]

        def stop() -> None:
            if node.is_running():
                node.stop("fast", 30)
            db.status = "stopped"

        self.submit("stop", db.db_instance_identifier, stop)

    def on_start(self, db) -> None:
        info = self.mapped(db.db_instance_identifier)
        if not info:
            return
        db.status = "starting"
        node = self.nodes()[info["node"]]

        def start() -> None:
            if not node.is_running():
                node.start()
            self.api_stopped.discard(db.db_instance_identifier)
            db.status = "available"

        self.submit("start", db.db_instance_identifier, start)

    def on_reboot(self, db) -> None:
        info = self.mapped(db.db_instance_identifier)
        if not info:
            return
        db.status = "rebooting"
        node = self.nodes()[info["node"]]

        def reboot() -> None:
            if node.is_running():
                node.stop("fast", 30)
            node.start()
            db.status = "available"

        self.submit("reboot", db.db_instance_identifier, reboot)

    def on_dns_change(self) -> None:
        """Records or health-check settings changed: send the router where the failover answer now points."""
        if not self.mapping.get("route53"):
            return
        self.jobs.put(("route53", self._apply_dns))

    def _apply_dns(self) -> None:
        import httpx

        region = self.dns_answer_region()
        if region is None:
            return
        url = f"http://127.0.0.1:{self.ports()['router']}/_router"
        active = httpx.get(url + "/state", timeout=2).json().get("active_region")
        if active != region:
            httpx.post(url + "/active", json={"region": region}, timeout=2).raise_for_status()
            _log(f"route53: failover answer is {region}: router moved from {active}")

    def on_cache_failover(self, rg, node_group_id: str) -> None:
        """test_failover: the replica node of the group becomes the master (the real Valkey too)."""
        ec = self.mapping.get("elasticache")
        if not ec or rg.replication_group_id != ec["replication_group_id"]:
            return
        members = [m for g in rg.node_groups if g.get("node_group_id") == node_group_id
                   for m in g["node_group_members"]]
        old = next((m for m in members if m.get("current_role") == "primary"), None)
        new = next((m for m in members if m.get("current_role") == "replica"), None)
        if not (old and new):
            return
        rg.status = "modifying"
        old["current_role"], new["current_role"] = "replica", "primary"
        ports = self.ports()
        new_region, old_region = ec["members"][new["cache_cluster_id"]], ec["members"][old["cache_cluster_id"]]

        def failover() -> None:
            import redis

            with redis.Redis(port=ports[f"redis_{new_region}"], socket_timeout=5) as c:
                if c.info("replication").get("role") != "master":
                    c.execute_command("REPLICAOF", "NO", "ONE")
            # the lab's replicas link as the lab links them: primary -> dr through the replication fault proxy
            link = ports.get("proxy_redis_replication") if (new_region, old_region) == ("primary", "dr") else None
            port = link or ports[f"redis_{new_region}"]
            try:
                with redis.Redis(port=ports[f"redis_{old_region}"], socket_timeout=5) as c:
                    info = c.info("replication")
                    if not (info.get("role") == "slave" and int(info.get("master_port", -1)) == port):
                        c.execute_command("REPLICAOF", "127.0.0.1", str(port))
                    deadline = time.monotonic() + 15
                    while c.info("replication").get("master_link_status") != "up" and time.monotonic() < deadline:
                        time.sleep(0.05)
            except redis.RedisError as e:  # the old master is down: it rejoins when the lab restores it
                _log(f"elasticache: old master {old_region} not re-pointed: {e}")
            rg.status = "available"

        self.submit("test_failover", rg.replication_group_id, failover)

    # -- Route 53 evaluation --------------------------------------------------
    def health_check_healthy(self, hc_id: str) -> bool | None:
        """Health of a health check of the mapping (None: not one of the lab's)."""
        from moto.route53.models import route53_backends

        r53 = self.mapping.get("route53") or {}
        region = r53.get("health_checks", {}).get(hc_id)
        if region is None:
            return None
        hc = route53_backends[ACCOUNT_ID]["aws"].health_checks.get(hc_id)
        if hc is None:
            return None
        if hc.disabled:  # Route 53 treats a disabled health check as healthy
            return True
        ok = self.health.get(hc_id, True)
        return (not ok) if hc.inverted else ok

    def dns_answer(self, name: str, rtype: str) -> list[str] | None:
        """What Route 53 answers for `name`: failover records by health, else the plain record (None: no record)."""
        from moto.route53.models import route53_backends

        name = name.rstrip(".")
        sets = [rs for zone in route53_backends[ACCOUNT_ID]["aws"].zones.values() for rs in zone.rrsets
                if rs.name.rstrip(".") == name and rs.type == rtype]
        if not sets:
            return None
        by_role = {rs.failover: rs for rs in sets if rs.failover}
        if not by_role:
            return _values(sets[0])

        def healthy(rs) -> bool:
            if not rs.health_check_id:
                return True
            h = self.health_check_healthy(rs.health_check_id)
            return True if h is None else h

        for role in ("PRIMARY", "SECONDARY"):
            rs = by_role.get(role)
            if rs is not None and healthy(rs):
                return _values(rs)
        rs = by_role.get("PRIMARY") or by_role.get("SECONDARY")  # all unhealthy: Route 53 answers the primary
        return _values(rs)

    def dns_answer_region(self) -> str | None:
        r53 = self.mapping.get("route53") or {}
        ans = self.dns_answer(r53.get("record_name", ""), r53.get("record_type", "CNAME"))
        if not ans:
            return None
        return r53.get("values", {}).get(ans[0].rstrip("."))

    # -- lab -> API: the observer --------------------------------------------
    def observe(self) -> None:
        import httpx

        with self.lock:
            busy = set(self.busy)
        ports = self.ports()
        # Route 53 health checks: what the router's health checker sees for each region
        r53 = self.mapping.get("route53") or {}
        if r53.get("health_checks"):
            try:
                state = httpx.get(f"http://127.0.0.1:{ports['router']}/_router/state", timeout=1).json()
                for hc_id, region in r53["health_checks"].items():
                    self.health[hc_id] = bool(state["regions"].get(region, {}).get("healthy"))
            except Exception:  # router down: every region's endpoint is unreachable
                for hc_id in r53["health_checks"]:
                    self.health[hc_id] = False
        # RDS: status, role, lag
        lags: dict[str, float] = {}
        for ident, info in self.mapping.get("rds", {}).items():
            if ident in busy:
                continue
            db = self.rds_instance(ident)
            if db is None:
                continue
            node = self.nodes()[info["node"]]
            seen = _observe_pg(node)
            with self.lock:
                if ident in self.busy:
                    continue
                if seen is None:
                    db.status = "stopped" if ident in self.api_stopped else "failed"
                    if db.is_replica:
                        db.status_infos = [_replication_info("error")]
                    continue
                if db.status in ("failed", "stopped", "storage-full") and ident not in self.api_stopped:
                    db.status = "available"
                recovering, lag, streaming = seen
                if recovering:
                    if not db.is_replica:
                        self._relink(ident, db)
                    db.status_infos = [_replication_info("replicating" if streaming else "error")]
                    lags[ident] = lag
                elif db.is_replica:  # promoted outside the API (a native lab failover): reflect it
                    self._unlink(db)
                    _log(f"{ident} is no longer a replica (promoted outside the API)")
        if lags and time.monotonic() - self._last_lag >= LAG_METRIC_INTERVAL_S:
            self._last_lag = time.monotonic()
            self._put_lag(lags)

    def _unlink(self, db) -> None:
        from moto.rds.models import rds_backends

        src = db.source_db_instance_identifier
        db.is_replica = False
        db.source_db_instance_identifier = None
        db.status_infos = []
        if src:
            for backend in rds_backends[ACCOUNT_ID].values():
                for other in list(getattr(backend, "databases", {}).values()):
                    for ref in (db.db_instance_identifier, db.db_instance_arn):
                        if ref in other.replicas:
                            other.replicas.remove(ref)

    def _relink(self, ident: str, db) -> None:
        """The real node is a standby again (failback rebuilt it): it is a replica of the mapped primary."""
        for other_id in self.mapping.get("rds", {}):
            other = self.rds_instance(other_id)
            if other is None or other_id == ident or other.is_replica:
                continue
            cross = other.region != db.region
            db.is_replica = True
            db.source_db_instance_identifier = other.db_instance_arn if cross else other_id
            ref = db.db_instance_arn if cross else ident
            if ref not in other.replicas:
                other.replicas.append(ref)
            _log(f"{ident} is a replica of {other_id} again")
            return

    def _put_lag(self, lags: dict[str, float]) -> None:
        from moto.cloudwatch.models import cloudwatch_backends

        for ident, lag in lags.items():
            region = self.mapping["rds"][ident]["region"]
            cloudwatch_backends[ACCOUNT_ID][region].put_metric_data(
                "AWS/RDS", [{"MetricName": "ReplicaLag", "Value": lag, "Unit": "Seconds",
                             "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": ident}]}])

    # -- threads --------------------------------------------------------------
    def worker(self) -> None:
        while not self.stop_event.is_set():
            try:
                what, job = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                job()
            except Exception as e:
                _log(f"{what}: FAILED: {type(e).__name__}: {e}")

    def observer(self) -> None:
        while not self.stop_event.wait(OBSERVE_INTERVAL_S):
            try:
                if self.load_mapping():
                    self.observe()
            except Exception as e:  # never dies: the lab may be half down for a moment
                _log(f"observe: {type(e).__name__}: {e}")


def _values(rs) -> list[str]:
    return [r["Value"] if isinstance(r, dict) else str(r) for r in (rs.records or [])]


def _replication_info(status: str) -> dict[str, Any]:
    return {"StatusType": "read replication", "Normal": status == "replicating", "Status": status}


_CONNS: dict[int, Any] = {}  # port -> open admin connection of the observer (one per node, reused)


def _observe_pg(node) -> tuple[bool, float, bool] | None:
    """(in recovery, replica lag in s, WAL receiver streaming) of a node, None when it does not answer."""
    import psycopg

    if not node.is_running() or _shutting_down(node):
        _drop(node.port)  # a kept connection would hold off a smart shutdown (`pg_ctl stop -m smart`)
        return None
    try:
        c = _CONNS.get(node.port)
        if c is None or c.closed or c.broken:
            c = _CONNS[node.port] = psycopg.connect(node.admin_dsn(), connect_timeout=1, autocommit=True)
        rec = c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        if not rec:
            return False, 0.0, False
        row = c.execute(
            "SELECT (SELECT status FROM pg_stat_wal_receiver), "
            "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
            "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END").fetchone()
        streaming = row[0] == "streaming"
        return True, (float(row[1]) if streaming else -1.0), streaming
    except psycopg.Error:
        _drop(node.port)
        return None


def _shutting_down(node) -> bool:
    """postmaster.pid says "stopping": a shutdown (of any mode) is under way."""
    try:
        return "stopping" in (node.data_dir / "postmaster.pid").read_text()
    except OSError:
        return False


def _drop(port: int) -> None:
    c = _CONNS.pop(port, None)
    if c is not None:
        try:
            c.close()
        except Exception:
            pass


def _in_recovery(node) -> bool:
    """pg_is_in_recovery() of a node on a connection of its own (the worker's, not the observer's)."""
    import psycopg

    with psycopg.connect(node.admin_dsn(), connect_timeout=2, autocommit=True) as c:
        return bool(c.execute("SELECT pg_is_in_recovery()").fetchone()[0])


# -- hooks: where moto returns success and changes nothing, or does not implement a call --------------------
def install_hooks(ctl: Controller) -> None:
    """Patch moto's backends and responses (this process only) so the calls above have their effects."""
    _hook_rds(ctl)
    _hook_route53(ctl)
    _hook_elasticache(ctl)
    _hook_kms()
    _hook_s3_deny()


def _hook_rds(ctl: Controller) -> None:
    from moto.rds import models, responses
    from moto.rds.exceptions import InvalidParameterCombination

    addr = models.DBInstance.address

    def address(self) -> str:
        return getattr(self, "lab_address", None) or addr.fget(self)

    models.DBInstance.address = property(address)

    orig_promote = models.RDSBackend.promote_read_replica

    def promote_read_replica(self, db_kwargs):
        db = orig_promote(self, db_kwargs)
        with ctl.lock:
            ctl._unlink(db)  # moto leaves ReadReplicaSourceDBInstanceIdentifier set
            ctl.on_promote(db)
        return db

    models.RDSBackend.promote_read_replica = promote_read_replica

    orig_stop = models.RDSBackend.stop_db_instance

    def stop_db_instance(self, db_instance_identifier, db_snapshot_identifier=None):
        db = orig_stop(self, db_instance_identifier, db_snapshot_identifier)
        with ctl.lock:
            ctl.on_stop(db)
        return db

    models.RDSBackend.stop_db_instance = stop_db_instance

    orig_start = models.RDSBackend.start_db_instance

    def start_db_instance(self, db_instance_identifier):
        with ctl.lock:
            db = orig_start(self, db_instance_identifier)
            ctl.on_start(db)
        return db

    models.RDSBackend.start_db_instance = start_db_instance

    def reboot_db_instance(self):  # response level: moto's backend never sees ForceFailover
        ident = self.params.get("DBInstanceIdentifier")
        force = str(self.params.get("ForceFailover", "false")).lower() == "true"
        db = self.backend.describe_db_instances(ident)[0]
        if force and not db.multi_az:
            raise InvalidParameterCombination(
                "Cannot do a reboot with failover because the instance is not configured for multi-AZ.")
        if db.status != "available":
            from moto.rds.exceptions import InvalidDBInstanceStateError

            raise InvalidDBInstanceStateError(ident, "reboot")
        with ctl.lock:
            ctl.on_reboot(db)
        from moto.core.responses import ActionResult

        return ActionResult({"DBInstance": db})

    responses.RDSResponse.reboot_db_instance = reboot_db_instance


def _hook_route53(ctl: Controller) -> None:
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.route53 import models, responses, urls

    orig_change = models.Route53Backend.change_resource_record_sets

    def change_resource_record_sets(self, zoneid, change_list):
        out = orig_change(self, zoneid, change_list)
        ctl.on_dns_change()
        return out

    models.Route53Backend.change_resource_record_sets = change_resource_record_sets

    orig_update = models.Route53Backend.update_health_check

    def update_health_check(self, health_check_id, health_check_args):
        out = orig_update(self, health_check_id, health_check_args)
        ctl.on_dns_change()
        return out

    models.Route53Backend.update_health_check = update_health_check

    orig_status = responses.Route53.get_health_check_status

    def get_health_check_status(self):
        hc_id = self._get_param("HealthCheckId") or self.path.rstrip("/").split("/")[-2]
        healthy = ctl.health_check_healthy(hc_id)
        if healthy is None:
            return orig_status(self)
        hc = self.backend.get_health_check(hc_id)
        status = ("Success: HTTP Status Code 200, OK" if healthy
                  else "Failure: Connection refused. The endpoint or the internet connection is down, "
                       "or the endpoint is not answering.")
        return ActionResult({"HealthCheckObservations": [
            {"Region": r, "IPAddress": hc.ip_address or "127.0.0.1",
             "StatusReport": {"Status": status, "CheckedTime": utcnow()}}
            for r in ("ap-northeast-1", "ap-southeast-1", "us-west-2")]})

    responses.Route53.get_health_check_status = get_health_check_status

    def test_dns_answer(self):
        qs = self.querystring
        name = (qs.get("recordname") or [""])[0]
        rtype = (qs.get("recordtype") or ["A"])[0]
        ans = ctl.dns_answer(name, rtype)
        return ActionResult({"Nameserver": "ns-1.awsdns-lab.com", "RecordName": name, "RecordType": rtype,
                             "RecordData": ans or [], "ResponseCode": "NOERROR" if ans else "NXDOMAIN",
                             "Protocol": "UDP"})

    responses.Route53.test_dns_answer = test_dns_answer
    urls.url_paths[r"{0}/(?P<api_version>[\d_-]+)/testdnsanswer$"] = responses.Route53.dispatch


def _hook_elasticache(ctl: Controller) -> None:
    from moto.core.responses import ActionResult
    from moto.elasticache import responses
    from moto.elasticache.exceptions import ReplicationGroupNotFound

    def test_failover(self):
        rg_id = self._get_param("ReplicationGroupId")
        node_group_id = self._get_param("NodeGroupId")
        groups = self.elasticache_backend.replication_groups
        if rg_id not in groups:
            raise ReplicationGroupNotFound(rg_id)
        rg = groups[rg_id]
        with ctl.lock:
            ctl.on_cache_failover(rg, node_group_id)
        return ActionResult({"ReplicationGroup": rg})

    responses.ElastiCacheResponse.test_failover = test_failover


def _hook_kms() -> None:
    from moto.core.exceptions import JsonRESTError
    from moto.kms import models

    def usable(backend, key_id: str) -> None:
        key = backend.keys[key_id]
        if key.key_state == "Disabled":
            raise JsonRESTError("DisabledException", f"{key.arn} is disabled.")
        if key.key_state != "Enabled":
            raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is pending deletion.")

    orig_encrypt = models.KmsBackend.encrypt

    def encrypt(self, key_id, plaintext, encryption_context):
        usable(self, self.any_id_to_key_id(key_id))
        return orig_encrypt(self, key_id, plaintext, encryption_context)

    models.KmsBackend.encrypt = encrypt

    orig_decrypt = models.KmsBackend.decrypt

    def decrypt(self, ciphertext_blob, encryption_context, key_id=None):
        plaintext, arn = orig_decrypt(self, ciphertext_blob, encryption_context, key_id)
        usable(self, arn.split("/")[-1])
        return plaintext, arn

    models.KmsBackend.decrypt = decrypt


#: bucket-policy actions that stay allowed whatever the policy says (on AWS the account root can always read,
#: replace and delete a bucket policy that locks everyone out: that is how such a block is lifted)
_POLICY_QUERIES = ("policy",)


def denied_actions(policy: bytes | str | None) -> set[str]:
    """The S3 actions a bucket policy denies to every principal ("s3:*" for all)."""
    if not policy:
        return set()
    try:
        doc = json.loads(policy)
    except ValueError:
        return set()
    out: set[str] = set()
    for st in doc.get("Statement", []) if isinstance(doc, dict) else []:
        if not isinstance(st, dict) or st.get("Effect") != "Deny":
            continue
        principal = st.get("Principal")
        if principal not in ("*", {"AWS": "*"}):
            continue
        actions = st.get("Action", [])
        out |= {actions} if isinstance(actions, str) else set(actions)
    return out


def _s3_action(method: str, key: bool) -> str:
    if key:
        return {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject", "POST": "s3:PutObject",
                "DELETE": "s3:DeleteObject"}.get(method, "s3:*")
    return {"GET": "s3:ListBucket", "HEAD": "s3:ListBucket", "PUT": "s3:PutBucket", "DELETE": "s3:DeleteBucket",
            "POST": "s3:DeleteObject"}.get(method, "s3:*")


def _hook_s3_deny() -> None:
    from moto.s3 import responses
    from moto.s3.exceptions import S3AccessDeniedError, S3ClientError

    def refused(self, request: Any, bucket_name: str, action: str) -> bool:
        try:
            bucket = self.backend.get_bucket(bucket_name)
        except S3ClientError:
            return False
        denied = denied_actions(bucket.policy)
        return "s3:*" in denied or action in denied

    def guard(self, request: Any, full_url: str, key: bool) -> None:
        from urllib.parse import parse_qs, unquote, urlparse

        query = parse_qs(urlparse(full_url).query, keep_blank_values=True)
        if any(q in query for q in _POLICY_QUERIES):
            return
        bucket_name = self.parse_bucket_name_from_url(request, full_url)
        if bucket_name and refused(self, request, bucket_name, _s3_action(request.method, key)):
            raise S3AccessDeniedError()
        source = request.headers.get("x-amz-copy-source")  # a copy reads its source bucket
        if source:
            src_bucket = unquote(source).lstrip("/").split("/", 1)[0]
            if refused(self, request, src_bucket, "s3:GetObject"):
                raise S3AccessDeniedError()

    orig_bucket, orig_key = responses.S3Response._bucket_response, responses.S3Response._key_response

    def bucket_response(self, request: Any, full_url: str):
        guard(self, request, full_url, key=False)
        return orig_bucket(self, request, full_url)

    def key_response(self, request: Any, full_url: str):
        guard(self, request, full_url, key=True)
        return orig_key(self, request, full_url)

    responses.S3Response._bucket_response = bucket_response
    responses.S3Response._key_response = key_response


def provision(state_dir: Path, endpoint_url: str, done: Callable[[], None] = lambda: None) -> None:
    """Create the control plane with boto3 through this server, in parallel with the rest of `lab up`.

    Writes `aws-controlplane.json` (this process reconciles from it) and `aws-ids.json` (the manager puts
    the ids into the topology); on failure `aws-ids.json` holds {"error": ...}.
    """
    from harness.lab import aws

    out = state_dir / aws.IDS_FILE
    try:
        ports = json.loads((state_dir / "lab.json").read_text())["ports"]
        t0 = time.monotonic()
        aws.provision(endpoint_url)
        cp = aws.provision_control_plane(endpoint_url, ports)
        _write_json(state_dir / CONTROLPLANE_FILE, aws.controller_mapping(cp, ports))
        _write_json(out, cp)
        _log(f"control plane provisioned in {time.monotonic() - t0:.2f} s")
    except Exception as e:
        _log(f"provisioning FAILED: {type(e).__name__}: {e}")
        _write_json(out, {"error": f"{type(e).__name__}: {e}"})
    finally:
        done()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--provision", action="store_true",
                    help="create the lab's control-plane resources (ports from the lab state) once serving")
    args = ap.parse_args(argv)
    from werkzeug.serving import make_server

    ctl = Controller(Path(args.state_dir))
    install_hooks(ctl)
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    server = make_server(args.host, args.port, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler)

    def stop(*_: Any) -> None:
        # all state is in memory and nothing is half written to disk: leave at once (`lab down` waits for it)
        ctl.stop_event.set()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # `lab up` waits for the provisioning: until it is done everything runs at normal priority; then the API
    # server (its request threads are spawned by the main thread) and the observer are niced, the worker is
    # not (servers it starts, `pg_ctl start`, inherit its priority)
    main_tid = threading.get_native_id()
    observer = threading.Thread(target=ctl.observer, daemon=True)
    threading.Thread(target=ctl.worker, daemon=True).start()
    observer.start()

    def then_nice() -> None:
        for tid in (main_tid, observer.native_id):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, NICE)  # Linux: per thread
            except (OSError, TypeError):
                pass

    if args.provision:
        threading.Thread(target=provision, args=(ctl.state_dir, f"http://{args.host}:{args.port}", then_nice),
                         daemon=True).start()
    else:
        then_nice()
    _log(f"serving on {args.host}:{args.port}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
