"""The "JWT signing key compromised" fault and the key rotation that answers it (its rollback too).

What is injected: the attacker holds the current private signing key (in the lab it is read from the database
and unwrapped with the lab's app secret: the lab carries the leak, the adapter's rotation is the real ops call)
and a session id stolen from a live victim session; with both it mints a token the app accepts. Nothing of the
system changes: the fault is the attacker's capability, and the rollback is the runbook's answer, the rotation.

The runbook (`rotate_signing_key`): the ops API of K-ERP (`POST /ops/signing-keys/rotate`, its own bearer
token: a leaked signing key cannot authorise it) makes a new key current, revokes every other key and removes
the sessions issued under them, with audit entries. The action measures how long until every live replica of
both regions holds the revocation (each replica's own key ring) and refuses the victim's old token.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from harness.errors import LabError
from harness.lab.kerp import keyring
from harness.lab.kerp import seed as kseed
from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab
from harness.targets.auth import ops, probes
from harness.workload import find_primary_dsn

__all__ = ["leak_signing_key", "rotate_if_leaked", "rotate_signing_key"]

TARGET = "auth:signing-key"
COMPONENTS = ("authentication",)
ROTATED_EVENT = "signing key rotated"
FORGED_LIFETIME_S = 30 * 86400  # the attacker's token outlives any session the app would issue


@dataclass(frozen=True)
class Leak:
    """What the attacker holds after the leak (kept in memory for the run, never written anywhere)."""

    kid: str
    private_key: Any
    victim: dict[str, Any]  # the victim's login answer: token, session_id, kid
    attacker_token: str
    t: float

    def forge(self, session_id: str) -> str:
        """A token for the victim's user and `session_id`, signed with the leaked key."""
        claims = jwt.decode(self.victim["token"], options={"verify_signature": False})
        now = int(time.time())
        return jwt.encode({**claims, "sid": session_id, "iat": now, "exp": now + FORGED_LIFETIME_S},
                          self.private_key, algorithm=keyring.ALGORITHM, headers={"kid": self.kid})


_LEAKS: dict[str | None, Leak] = {}


def _run_id(configuration: dict | None) -> str | None:
    return (configuration or {}).get(run_context.RUN_ID_KEY)


def leaked(configuration: dict | None = None) -> Leak | None:
    """The leak of this run (None when `leak_signing_key` did not run in it)."""
    return _LEAKS.get(_run_id(configuration))


def _scaled(seconds: float) -> float:
    return seconds * float(os.environ.get("DRILL_TIMEOUT_MULTIPLIER", "1") or 1)


def _app_secret(t: _lab.LabTarget) -> str:
    return (t.lab.state / "jwt-secret").read_text(encoding="utf-8").strip()


def leak_signing_key(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Fault: the current JWT signing key leaks, and a victim's session id with it. Rollback: rotate_signing_key
    (only while the leaked key is still usable)."""
    decision = guard.check("leak_signing_key", TARGET, components=COMPONENTS, configuration=configuration)
    if decision.dry_run:  # planned only: not even the victim's login (a session is a write)
        return guard.inject("leak_signing_key", TARGET, revert=(rotate_signing_key, {"reason": "rollback"}),
                            components=COMPONENTS, configuration=configuration).to_dict()
    t = _lab.resolve(configuration)
    cred = kseed.lab_credentials()[0]
    with t.http() as http:
        victim = ops.login(http, t.router_url, cred.email, cred.password)
    with _lab.pg_connect(find_primary_dsn(t.lab.topology())) as conn:
        current = ops.current_key(conn)
    if current is None or current[0] != victim.get("kid"):
        raise LabError(f"the current signing key changed while the victim logged in ({victim.get('kid')!r} signed, "
                       f"{current[0] if current else None!r} current); inject again")
    kid, wrapped = current
    inj = guard.inject("leak_signing_key", TARGET,
                       revert=(rotate_signing_key, {"reason": f"rollback: signing key {kid} leaked in a drill",
                                                    "only_if_usable": kid}),
                       components=COMPONENTS, configuration=configuration,
                       details={"kid": kid, "victim": cred.email, "victim_session": victim["session_id"]})
    if not inj.proceed:
        return inj.to_dict()
    private = keyring.unwrap(keyring.wrapper(_app_secret(t)), wrapped)
    leak = Leak(kid, private, victim, "", time.time())
    leak = Leak(kid, private, victim, leak.forge(victim["session_id"]), leak.t)  # the attacker's own token
    _LEAKS[_run_id(configuration)] = leak
    ctx = run_context.of(configuration)
    if ctx is not None:  # tokens never reach the timeline or the report
        ctx.secrets |= {victim["token"], leak.attacker_token}
    accepted = probes.token_accepted(leak.attacker_token, configuration=configuration)
    if ctx is not None:
        ctx.event("check", "attacker token accepted before the rotation",
                  status="pass" if accepted["accepted"] else "fail", kid=kid, replicas=accepted["replicas"])
    return {"kid": kid, "victim": cred.email, "attacker_token_accepted": accepted["accepted"],
            "replicas": accepted["replicas"], "fault_id": inj.entry.id}


class _Watch:
    """One thread per replica polls it until its own key ring holds `old_kid` in state `want` (revoked after a
    compromise, retired after a scheduled rotation; and, given a token, until it refuses that token). A replica's ring view names the epoch it took the change (`since`, the replica's own
    record); the token's refusal is the time of the first 401 seen."""

    def __init__(self, urls: list[str], ops_token: str, old_kid: str, token: str | None, timeout_s: float,
                 want: str = keyring.REVOKED):
        self.urls, self.ops_token, self.old_kid, self.token, self.want = urls, ops_token, old_kid, token, want
        self.deadline = time.monotonic() + timeout_s
        self.ring_at: dict[str, float] = {}
        self.refused_at: dict[str, float] = {}
        self.threads = [threading.Thread(target=self._poll, args=(url,), name=f"key-watch-{i}", daemon=True)
                        for i, url in enumerate(urls)]

    def _revoked_in(self, view: dict[str, Any] | None) -> bool:
        if not view or view.get("current") in (None, self.old_kid):
            return False
        states = {k["kid"]: k["state"] for k in view.get("keys", [])}
        return states.get(self.old_kid, keyring.REVOKED) == self.want

    def _poll(self, url: str) -> None:
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while time.monotonic() < self.deadline:
                if url not in self.ring_at:
                    view = ops.ring_view(http, url, self.ops_token)
                    if self._revoked_in(view):
                        self.ring_at[url] = float(view.get("since") or time.time())
                if self.token and url not in self.refused_at and ops.me_status(http, url, self.token) == 401:
                    self.refused_at[url] = time.time()
                if url in self.ring_at and (not self.token or url in self.refused_at):
                    return
                time.sleep(0.01)

    def start(self) -> None:
        for th in self.threads:
            th.start()

    def join(self) -> None:
        for th in self.threads:
            th.join()


def rotate_signing_key(reason: str = "signing key compromised", mode: str = "compromised",
                       only_if_usable: str | None = None, agreement_timeout_s: float = 15.0,
                       configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """The runbook's answer to a leaked key: rotate through the ops API (new current key; "compromised" revokes the
    others and removes their sessions). Idempotent as a rollback: with `only_if_usable` it rotates only while that
    key is still current or retired. Measures how long until every live replica holds the revocation."""
    if mode not in ("compromised", "scheduled"):
        raise LabError(f"mode {mode!r} must be 'compromised' or 'scheduled'")
    decision = guard.check("rotate_signing_key", TARGET, components=COMPONENTS, configuration=configuration)
    ctx = run_context.of(configuration)
    if decision.dry_run:
        if ctx is not None:
            ctx.event("note", "signing key rotation planned, not done (dry run)", dry_run=True)
        return {"dry_run": True}
    t = _lab.resolve(configuration)
    dsn = find_primary_dsn(t.lab.topology())
    with _lab.pg_connect(dsn) as conn:
        states = ops.key_states(conn)
        current = ops.current_key(conn)
    if only_if_usable is not None and states.get(only_if_usable) not in (keyring.CURRENT, keyring.RETIRED):
        reverted = guard.mark_reverted("leak_signing_key", TARGET, configuration, how="rollback")
        return {"rotated": False, "kid": only_if_usable, "state": states.get(only_if_usable), "reverted": reverted}
    old_kid = current[0] if current else None
    token = ops.ops_token(t.lab.state)
    leak = leaked(configuration)
    # a token of the old key is refused only after a compromise (a scheduled rotation keeps it valid until it expires)
    watched = leak.victim["token"] if leak is not None and leak.kid == old_kid and mode == "compromised" else None
    with t.http(timeout=30.0) as http:
        regions = ops.replica_urls(http, t.supervisor_url)
        urls = list(regions)
        want = keyring.REVOKED if mode == "compromised" else keyring.RETIRED
        watch = _Watch(urls, token, old_kid or "", watched, _scaled(agreement_timeout_s), want) if old_kid else None
        if watch is not None:
            watch.start()
        sessions_before = probes.sessions_count(configuration=configuration)
        sent = time.time()
        r = http.post(t.router_url + "/ops/signing-keys/rotate", headers={"authorization": f"Bearer {token}"},
                      json={"reason": reason, "mode": mode, "actor": f"drill:{_run_id(configuration) or 'manual'}"})
        answered = time.time()
    if r.status_code != 200:
        raise LabError(f"signing key rotation: HTTP {r.status_code} {r.text.strip()[:200]}")
    result = r.json()
    if watch is not None:
        watch.join()
    rotated_at = float(result["rotated_at"])
    agreement = {u: round(max(0.0, at - rotated_at), 3) for u, at in watch.ring_at.items()} if watch else {}
    refused = {u: round(max(0.0, at - rotated_at), 3) for u, at in watch.refused_at.items()} if watch else {}
    lagging = sorted(set(urls) - set(agreement)) if watch else []
    out = {"rotated": True, "kid": result["kid"], "mode": mode, "revoked": result.get("revoked", []),
           "retired": result.get("retired", []), "rotated_at": rotated_at, "request_s": round(answered - sent, 3),
           "sessions": result.get("sessions"), "sessions_in_redis_before": sessions_before, "audit_seqs": result.get("audit_seqs", []), "replicas": len(urls),
           "regions": regions,
           "agreement_s": agreement, "agreement_max_s": max(agreement.values()) if agreement and not lagging else None,
           "not_agreed": lagging}
    if watched:
        out["old_token_refused_s"] = refused
        out["old_token_refused_max_s"] = max(refused.values()) if len(refused) == len(urls) else None
    if ctx is not None:
        ctx.event("check", ROTATED_EVENT, status="pass" if not lagging else "fail", **out)
    out["reverted"] = guard.mark_reverted("leak_signing_key", TARGET, configuration, how="rotated")
    return out


def rotate_if_leaked(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Rollback of a drill: rotate when this run leaked a key that is still usable; otherwise nothing (idempotent)."""
    leak = leaked(configuration)
    if leak is None:
        return {"rotated": False, "reason": "no key leaked in this run"}
    return rotate_signing_key(reason=f"rollback: signing key {leak.kid} leaked in a drill", only_if_usable=leak.kid,
                              configuration=configuration)
