"""The one factory of AWS and Kubernetes clients for an environment: dry-run interception and AWS safety checks."""

from __future__ import annotations

import os
from typing import Any, Mapping

from harness.config.environment import Environment, resolve_references
from harness.dryrun import DryRunRecorder, intercept_boto3, intercept_kubernetes
from harness.errors import SafetyRefusal, UsageError
from harness.safety import context as run_context

__all__ = ["aws_endpoint_overrides", "boto3_session", "check_aws_endpoints", "check_aws_identity",
           "kubernetes_api", "preflight_aws", "recorder_of_run"]


_LAB_CREDENTIALS = {"aws_access_key_id": "drill-lab", "aws_secret_access_key": "drill-lab"}


def recorder_of_run(configuration: Mapping[str, Any] | None = None) -> DryRunRecorder | None:
    """The dry-run recorder of the run `configuration` names (drill_run_id); None outside a run or when it is
    not a dry run through APIs (a dry run on the plain lab has none: its probes read the real lab)."""
    s = run_context.of(configuration)
    return getattr(s, "recorder", None) if s is not None else None


def _resolved(environment: Environment, topology: Mapping[str, Any] | None, strict: bool) -> dict[str, Any]:
    data, _ = resolve_references(environment, topology=topology, strict=strict)
    return data


def _unresolved_check(environment: Environment, key: str, value: Any) -> Any:
    """A value a client needs must be resolved (secrets may stay unresolved: clients never need them)."""
    if isinstance(value, str) and "${" in value:
        raise UsageError(f"{environment.source}: {key}: {value} cannot be resolved (variable unset or no running lab)")
    return value


def _region(data: Mapping[str, Any], region: str) -> Mapping[str, Any]:
    regions = data.get("regions") or {}
    if region not in regions:
        raise UsageError(f"environment {data.get('name')!r} has no region {region!r} ({', '.join(regions)})")
    return regions[region]


def boto3_session(environment: Environment, recorder: DryRunRecorder | None = None, *, region: str = "primary",
                  topology: Mapping[str, Any] | None = None, configuration: Mapping[str, Any] | None = None) -> Any:
    """A boto3 Session for `region` of the environment (its AWS region; clients take the environment's
    endpoint_url from `endpoint_url(...)`). With a recorder (default: the dry-run recorder of the run `configuration` names) every client
    made from it records its calls and sends nothing."""
    import boto3

    recorder = recorder if recorder is not None else recorder_of_run(configuration)
    data = _resolved(environment, topology, strict=False)
    aws_region = _unresolved_check(environment, "aws_region", _region(data, region).get("aws_region"))
    # the embedded lab's moto takes any credentials; every other environment uses the caller's own chain
    session = boto3.Session(region_name=aws_region, **(_LAB_CREDENTIALS if environment.embedded else {}))
    if recorder is not None:
        intercept_boto3(session, recorder)
    return session


def endpoint_url(environment: Environment, topology: Mapping[str, Any] | None = None) -> str | None:
    """The AWS endpoint the environment names (None: the real AWS endpoints)."""
    data = _resolved(environment, topology, strict=True)
    return (data.get("aws") or {}).get("endpoint_url")


def kubernetes_api(environment: Environment, recorder: DryRunRecorder | None = None, *, region: str = "primary",
                   topology: Mapping[str, Any] | None = None, configuration: Mapping[str, Any] | None = None) -> Any:
    """A kubernetes.client.ApiClient for `region`'s context of the environment's kubeconfig. With a recorder
    (default: the dry-run recorder of the run `configuration` names) its requests are recorded and none is sent."""
    from kubernetes import config as kconfig
    from kubernetes.config.config_exception import ConfigException

    recorder = recorder if recorder is not None else recorder_of_run(configuration)
    data = _resolved(environment, topology, strict=False)
    context = _unresolved_check(environment, "kubernetes_context", _region(data, region).get("kubernetes_context"))
    kubeconfig = (_unresolved_check(environment, "kubernetes.kubeconfig", (data.get("kubernetes") or {}).get("kubeconfig"))
                  or os.environ.get("KUBECONFIG") or None)
    try:
        client = kconfig.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError) as e:
        raise UsageError(f"environment {environment.name!r}: kubeconfig {kubeconfig or '~/.kube/config'} "
                         f"context {context!r}: {e}") from e
    if recorder is not None:
        intercept_kubernetes(client, recorder)
    return client


# -- real-AWS safety -----------------------------------------------------------------------------------
def aws_endpoint_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """AWS_ENDPOINT_URL and every service-specific AWS_ENDPOINT_URL_* set in the process environment
    (botocore sends there instead of the real AWS endpoint)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if (k == "AWS_ENDPOINT_URL" or k.startswith("AWS_ENDPOINT_URL_")) and v}


def check_aws_endpoints(environment: Environment, *, topology: Mapping[str, Any] | None = None,
                        environ: Mapping[str, str] | None = None) -> None:
    """SafetyRefusal when AWS_ENDPOINT_URL(_*) is set but is not the environment's endpoint_url (unset in the
    file = the real AWS endpoints: then none may be set). No call is made."""
    want = (_resolved(environment, topology, strict=False).get("aws") or {}).get("endpoint_url")
    for var, value in sorted(aws_endpoint_overrides(environ).items()):
        if want is None:
            raise SafetyRefusal(f"not injecting: {var}={value} is set but environment {environment.name!r} names "
                                f"the real AWS endpoints (unset {var} or name it as aws.endpoint_url)")
        if value.rstrip("/") != str(want).rstrip("/"):
            raise SafetyRefusal(f"not injecting: {var}={value} is not the aws.endpoint_url of environment "
                                f"{environment.name!r} ({want})")


def check_aws_identity(environment: Environment, session: Any, *, topology: Mapping[str, Any] | None = None) -> str:
    """The caller identity's account (sts get_caller_identity, the first and only call before the check
    passes); SafetyRefusal when it is not the environment's aws.account_id or cannot be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    data = _resolved(environment, topology, strict=False)
    want = str((data.get("aws") or {}).get("account_id") or "")
    url = (data.get("aws") or {}).get("endpoint_url")
    try:
        ident = session.client("sts", endpoint_url=url).get_caller_identity()
    except (BotoCoreError, ClientError) as e:
        raise SafetyRefusal(f"not injecting: cannot verify the AWS caller identity for environment "
                            f"{environment.name!r}: {e}") from e
    got = str(ident.get("Account") or "")
    if got != want:
        raise SafetyRefusal(f"not injecting: the AWS caller identity is account {got or '(none)'}, environment "
                            f"{environment.name!r} names account {want}")
    return got


def preflight_aws(environment: Environment, recorder: DryRunRecorder | None = None, *,
                  topology: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """Before any AWS call of a run: the endpoint variables, then the caller identity (in a dry run the
    identity call is only recorded: nothing is sent, so nothing needs verifying). The account, or None."""
    if environment.data.get("aws") is None:
        return None
    check_aws_endpoints(environment, topology=topology, environ=environ)
    session = boto3_session(environment, recorder, topology=topology)
    if recorder is not None:
        data = _resolved(environment, topology, strict=False)
        session.client("sts", endpoint_url=(data.get("aws") or {}).get("endpoint_url")).get_caller_identity()
        return None
    return check_aws_identity(environment, session, topology=topology)
