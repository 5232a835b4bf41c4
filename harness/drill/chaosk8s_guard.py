"""chaostoolkit-kubernetes actions through the fault guard: each fault action a ledger entry with our idempotent rollback."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from harness.errors import HarnessError, SafetyRefusal, UsageError
from harness.safety import guard
from harness.targets.kubernetes import actions as k8s_actions
from harness.targets.kubernetes import ops as k8s_ops

__all__ = ["FAULTS", "REVERTS", "after", "before", "kube_context", "region_of_context"]


def _pods(region: str, a: Mapping[str, Any]) -> tuple[str, tuple[Callable[..., Any], dict[str, Any]]]:
    selector = a.get("label_selector") or a.get("name_pattern") or "*"
    return f"pod:{region}:{selector}", (k8s_actions.wait_pods_ready,
                                         {"region": region, "label_selector": a.get("label_selector")})


def _node(region: str, a: Mapping[str, Any]) -> tuple[str, tuple[Callable[..., Any], dict[str, Any]]]:
    name = a.get("name")
    return f"node:{region}:{name or a.get('label_selector') or '*'}", (k8s_actions.uncordon_node,
                                                                      {"region": region, "node": name})


#: chaosk8s fault actions ("module:func") -> (fault name, its target and our rollback from the region and arguments)
FAULTS: dict[str, tuple[str, Callable[[str, Mapping[str, Any]], tuple[str, Any]]]] = {
    "chaosk8s.pod.actions:terminate_pods": ("terminate_pods", _pods),
    "chaosk8s.node.actions:drain_nodes": ("drain_node", _node),
    "chaosk8s.node.actions:cordon_node": ("cordon_node", _node),
}
#: chaosk8s actions that undo faults ("module:func") -> (the faults they revert, the target)
REVERTS: dict[str, tuple[tuple[str, ...], Callable[[str, Mapping[str, Any]], tuple[str, Any]]]] = {
    "chaosk8s.node.actions:uncordon_node": (("cordon_node", "drain_node"), _node),
}


def _ref(activity: Mapping[str, Any]) -> str:
    p = activity.get("provider") or {}
    return f"{p.get('module')}:{p.get('func')}" if p.get("type") == "python" else ""


def kube_context(activity: Mapping[str, Any], secrets: Mapping[str, Any] | None) -> str | None:
    """The context chaosk8s will use: KUBERNETES_CONTEXT of the activity's secret scopes, else of the process
    environment, else None (the kubeconfig's current context)."""
    import os

    for scope in (activity.get("provider") or {}).get("secrets") or []:
        v = ((secrets or {}).get(scope) or {}).get("KUBERNETES_CONTEXT")
        if v:
            return str(v)
    return os.environ.get("KUBERNETES_CONTEXT") or None


def region_of_context(context: str | None, configuration: Mapping[str, Any] | None) -> str:
    """The plan region whose Kubernetes context is `context` in the run's environment (None: the primary)."""
    if context is None:
        return "primary"
    env = k8s_ops.environment_of(configuration)
    data = k8s_ops.cluster(configuration).data if env.embedded else env.data
    for region, r in (data.get("regions") or {}).items():
        if (r or {}).get("kubernetes_context") == context:
            return str(region)
    raise UsageError(f"kubernetes context {context!r} is no region's context in environment {env.name!r}")


def _arguments(activity: Mapping[str, Any], configuration: Any, secrets: Any) -> dict[str, Any]:
    from chaoslib import substitute

    return dict(substitute(dict((activity.get("provider") or {}).get("arguments") or {}), configuration, secrets))


def before(activity: dict, configuration: Mapping[str, Any] | None, secrets: Any,
           is_rollback: bool = False) -> dict[str, Any] | None:
    """Before a chaosk8s fault action of the method: the guard decides and writes the ledger entry (with our
    rollback). Returns the injection as a dict, or None for an activity that is no chaosk8s fault. Raises
    SafetyRefusal when refused. In a dry run the activity is made dry (chaoslib skips it) unless every
    Kubernetes client of the process already records instead of sending (a dry run against a real environment)."""
    ref = _ref(activity)
    if activity.get("type") != "action" or ref not in FAULTS or is_rollback:
        return None
    fault, describe = FAULTS[ref]
    _check_kubeconfig(configuration)
    args = _arguments(activity, configuration, secrets)
    region = region_of_context(kube_context(activity, secrets), configuration)
    target, revert = describe(region, args)
    inj = guard.inject(fault, target, revert=revert, regions=(region,), components=("app",),
                       configuration=configuration, details={"activity": ref, "arguments": args})
    if not inj.proceed and not _intercepted(configuration):
        from chaoslib.types import Dry

        activity["dry"] = Dry.ACTIVITIES
    return inj.to_dict()


def _check_kubeconfig(configuration: Mapping[str, Any] | None) -> None:
    """The embedded lab: chaosk8s must read the lab's kubeconfig (KUBECONFIG, as the kubernetes client read it
    at import), never ~/.kube/config or another cluster's. SafetyRefusal naming the file it would use."""
    import os

    env = k8s_ops.environment_of(configuration)
    if not env.embedded:
        return  # `drill run --env FILE` pointed KUBECONFIG at the environment's kubeconfig
    want = str((k8s_ops.cluster(configuration).data.get("kubernetes") or {}).get("kubeconfig") or "")
    from chaosk8s import get_config_path
    from kubernetes.config import kube_config

    # chaosk8s checks the file at KUBECONFIG, the kubernetes client loads the one it saw at import
    for used in {get_config_path(), os.path.expanduser(str(kube_config.KUBE_CONFIG_DEFAULT_LOCATION))}:
        if os.path.realpath(used) != os.path.realpath(want):
            raise SafetyRefusal(f"not injecting: chaostoolkit-kubernetes would use kubeconfig {used}, not the "
                                f"lab's {want} (set KUBECONFIG={want} before the run)")


def _intercepted(configuration: Mapping[str, Any] | None) -> bool:
    from harness.safety import context as run_context

    s = run_context.of(configuration)
    env = getattr(s, "environment", None)
    return bool(s is not None and getattr(s, "recorder", None) is not None and env is not None and not env.embedded)


def after(activity: Mapping[str, Any], state: Any, configuration: Mapping[str, Any] | None, secrets: Any) -> list[str]:
    """After a chaosk8s action that undoes faults (uncordon): mark those faults reverted when it succeeded."""
    ref = _ref(activity)
    if ref not in REVERTS or not isinstance(state, dict) or state.get("status") != "succeeded":
        return []
    faults, describe = REVERTS[ref]
    try:
        region = region_of_context(kube_context(activity, secrets), configuration)
    except HarnessError:
        return []
    target, _ = describe(region, _arguments(activity, configuration, secrets))
    return guard.mark_reverted(faults, target, configuration)
