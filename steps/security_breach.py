"""Steps of the security breach drill: the JWT signing key leaks, the runbook rotates it and revokes the sessions."""

from __future__ import annotations

from pytest_bdd import parsers, then, when

from harness.drill import actions, exercises
from harness.targets.auth import actions as auth_actions
from .timing import MULTIPLIER

BREACH = "security breach: "


def _check(drill, drill_configuration, name: str) -> dict:
    """The result of one of exercises.check_breach_contained's checks (run once, on the first step that needs it)."""
    if not any(e.event.startswith(BREACH) for e in drill.timeline.of_kind("check")):
        exercises.check_breach_contained(configuration=drill_configuration)
    found = [e for e in drill.timeline.of_kind("check") if e.event == BREACH + name]
    assert found, f"no check {name!r} was recorded"
    data = found[-1].data
    assert data["status"] == "pass", f"{name}: {data}"
    return data


@when("the JWT signing key is compromised")
def key_compromised(drill, drill_configuration):
    result = auth_actions.leak_signing_key(configuration=drill_configuration)
    assert result.get("fault_id"), result


@then("a token forged with the leaked key is accepted by every replica")
def forged_accepted(drill):
    found = [e for e in drill.timeline.of_kind("check") if e.event == "attacker token accepted before the rotation"]
    assert found and found[-1].data["status"] == "pass", found[-1].data if found else "no check recorded"


@when("the runbook rotates the signing key and revokes the sessions")
def runbook_rotates(drill, drill_configuration):
    auth_actions.rotate_signing_key(reason="JWT signing key compromised (security breach drill)",
                                    configuration=drill_configuration)


@then(parsers.parse("every replica refuses the leaked key after {seconds:d} seconds"))
def replicas_agree(drill, seconds: int):
    (rot,) = [e.data for e in drill.timeline.of_kind("check") if e.event == auth_actions.ROTATED_EVENT][-1:]
    assert not rot["not_agreed"], f"replicas still on the leaked key: {rot['not_agreed']}"
    assert rot["agreement_max_s"] is not None and rot["agreement_max_s"] <= seconds * MULTIPLIER, rot


@then("the token from before the rotation is refused and its session is gone")
def old_token_refused(drill, drill_configuration):
    _check(drill, drill_configuration, "token from before the rotation refused")
    _check(drill, drill_configuration, "its session revoked")


@then("a token forged with the leaked key is refused by every replica")
def forged_refused(drill, drill_configuration):
    _check(drill, drill_configuration, "attacker token refused")
    _check(drill, drill_configuration, "token forged with the leaked key refused")


@then("a fresh login after the rotation works on every replica")
def fresh_login(drill, drill_configuration):
    _check(drill, drill_configuration, "fresh login after the rotation works")


@then("the audit log records the rotation and the revocation")
def audited(drill, drill_configuration):
    _check(drill, drill_configuration, "audit entries record the rotation and the revocation")


@then("every session the probes opened under the leaked key is revoked")
def probe_sessions_revoked(drill, drill_configuration):
    data = _check(drill, drill_configuration, "sessions issued under the leaked key removed")
    assert data["probe_sessions"] > 0, "the probes opened no session under the leaked key: nothing was shown"


@when("the workload stops and the final state is read on the primary")
def workload_stops(drill, drill_configuration):
    actions.stop_workload(recovery_timeout_s=30, configuration=drill_configuration)
    assert drill.final_keys is not None
