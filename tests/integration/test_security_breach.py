"""The security breach scenario (experiments/security-breach.json) runs once on the shared session lab.

It shares the lab: the drill leaves a new signing key current (the leaked one revoked), which every later login
signs with; nothing else of the lab changes. A DR-region app replica runs during the drill (scaled up here and
back to 0 after), so "every replica" covers both regions: it reads the key ring from the DR standby.
"""

from __future__ import annotations

import json

import httpx
import jwt
import pytest
import redis

from harness.lab.kerp import seed as kseed
from harness.safety.fault_ledger import FaultLedger, ledger_path
from harness.targets import _lab
from harness.targets.app import ops as app_ops
from harness.workload import find_primary_redis
from tests.cli import drill_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]



def _sessions_by_kid(rd: redis.Redis) -> dict[str, tuple[str | None, int]]:
    """session key -> (kid, ttl seconds) of every session in Redis (the test's own scan)."""
    out = {}
    for key in rd.scan_iter("session:*", count=1000):
        raw, ttl = rd.get(key), rd.ttl(key)
        if raw is not None:
            out[key] = (json.loads(raw).get("kid"), ttl)
    return out


def _me(url: str, token: str) -> int:
    return httpx.get(url + "/auth/me", headers={"authorization": f"Bearer {token}"}, timeout=10).status_code


def test_security_breach_rotates_the_key_revokes_sessions_and_refuses_old_and_forged_tokens(drill_lab, tmp_path):
    t = _lab.resolve({"drill_state_dir": str(drill_lab.state)})
    rd = redis.Redis.from_url(find_primary_redis(drill_lab.topology()), decode_responses=True)
    cred = kseed.lab_credentials()[1]  # another user than the drill's victim
    with httpx.Client(timeout=30, trust_env=False) as http:
        app_ops.scale(http, t.supervisor_url, "dr", 1)
        try:
            app_ops.wait_scaled(http, t.supervisor_url, "dr", 1, timeout=120)
            urls = [r["url"] for region in ("primary", "dr")
                    for r in app_ops.alive_replicas(app_ops.regions(http, t.supervisor_url), region)]
            before = http.post(t.router_url + "/auth/login", json={"email": cred.email, "password": cred.password}).json()
            old_kid = before["kid"]
            sessions0 = {k: v for k, v in _sessions_by_kid(rd).items() if v[0] == old_kid}
            assert f"session:{before['session_id']}" in sessions0

            r = drill_cli("run", "experiments/security-breach.json", "--report-dir", str(tmp_path),
                          state=drill_lab.state, timeout=900)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            report = json.loads((tmp_path / "report.json").read_text())

            # the token from before the rotation: refused by every replica of both regions, its session gone
            assert [_me(u, before["token"]) for u in urls] == [401] * len(urls)
            assert not rd.exists(f"session:{before['session_id']}")
            after = _sessions_by_kid(rd)
            assert not [k for k, v in after.items() if v[0] == old_kid], "a session of the leaked key survived"

            # the rotation: the leaked key revoked, every replica (both regions) held it, the measured figures
            (rot,) = [e["data"] for e in report["timeline"] if e["event"] == "signing key rotated"]
            assert rot["revoked"] == [old_kid] and rot["kid"] != old_kid
            assert rot["replicas"] == len(urls) >= 3 and not rot["not_agreed"]
            assert set(rot["regions"].values()) == {"primary", "dr"}
            assert set(rot["agreement_s"]) == set(urls) and rot["agreement_max_s"] is not None
            assert set(rot["old_token_refused_s"]) == set(urls)
            # sessions revoked vs the sessions in Redis: the ones this test saw before the drill (that were not
            # about to expire), plus the probes' sessions under the leaked key, plus the victim's, at least;
            # beyond that only the health checks' and status page's logins of the drill's minutes
            timeline = [json.loads(line) for line in (tmp_path / "timeline.jsonl").read_text().splitlines() if line]
            ops = [e for e in timeline if e["kind"] == "op" and e["data"].get("f") == "session"
                   and e["event"] == "ok" and (e["data"].get("value") or {}).get("kid") == old_kid]
            long_lived = sum(1 for kid, ttl in sessions0.values() if ttl > 900)
            revoked = rot["sessions"]["revoked"]
            print(f"\nkey agreement per replica {rot['agreement_s']} (max {rot['agreement_max_s']} s); old token refused "
                  f"{rot['old_token_refused_s']}; sessions revoked {revoked} (passes {rot['sessions']['passes']}), "
                  f"in Redis before the drill under the key {len(sessions0)} ({long_lived} long-lived), "
                  f"probe sessions under it {len(ops)}, counted by the action just before {rot['sessions_in_redis_before']}")
            assert revoked >= long_lived + len(ops) + 1, (revoked, long_lived, len(ops))
            assert revoked <= len(sessions0) + len(ops) + 1 + 20, (revoked, len(sessions0), len(ops))

            # the drill's own checks: attacker token accepted before, then everything the scenario must show
            checks = {e["event"]: e["data"].get("status") for e in report["timeline"] if e["kind"] == "check"}
            for name in ("attacker token accepted before the rotation",
                         "security breach: token from before the rotation refused",
                         "security breach: its session revoked", "security breach: attacker token refused",
                         "security breach: token forged with the leaked key refused",
                         "security breach: fresh login after the rotation works",
                         "security breach: audit entries record the rotation and the revocation",
                         "security breach: sessions issued under the leaked key removed"):
                assert checks.get(name) == "pass", (name, checks.get(name))

            # independently of the drill: a fresh login signs with the new key and works; a token naming the revoked
            # kid for that live session is refused (the drill's check used one signed with the leaked key itself);
            # the audit log holds the rotation and the revocations, the revoked key's private half is erased
            fresh = http.post(t.router_url + "/auth/login", json={"email": cred.email, "password": cred.password}).json()
            assert fresh["kid"] == rot["kid"]
            assert [_me(u, fresh["token"]) for u in urls[:2]] == [200, 200]
            with _lab.pg_connect(t.pg_dsn("primary")) as conn:
                audit = conn.execute("SELECT seq, action, entity, entity_id FROM audit_log WHERE seq = ANY(%s)"
                                     " ORDER BY seq", (rot["audit_seqs"],)).fetchall()
                state = conn.execute("SELECT state, private_wrapped IS NULL FROM signing_keys WHERE kid = %s",
                                     (old_kid,)).fetchone()
            assert [(a[1], a[2], a[3].split(" ")[0]) for a in audit] == [
                ("rotate", "signing_key", rot["kid"]), ("revoke", "signing_key", old_kid),
                ("revoke_sessions", "session", str(revoked))]
            assert state == ("revoked", True)
            unsigned = jwt.encode({"sub": "1", "sid": fresh["session_id"], "iss": "kerp", "exp": 2_000_000_000},
                                  "x" * 32, algorithm="HS256", headers={"kid": old_kid})
            assert _me(urls[0], unsigned) == 401

            # the services kept their objectives; the sessions of the revoked key were not judged as lost
            assert all(o["met"] for o in report["objectives"]), report["objectives"]
            auth = next(o for o in report["objectives"] if o["service"] == "authentication")
            assert "revoked" in auth["note"] and auth["lost"] == 0
            assert report["writes"]["lost"] == 0
        finally:
            app_ops.scale(http, t.supervisor_url, "dr", 0)
            app_ops.wait_scaled(http, t.supervisor_url, "dr", 0, timeout=120)
    # the shared lab as the drill found it: healthy on its primary region, the fault ledger empty
    assert not FaultLedger(ledger_path(drill_lab.state)).active()
    status = drill_lab.status()
    assert status["healthy"] and status["router"]["active_region"] == "primary"
