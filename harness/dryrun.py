"""Dry run against a real environment: intercept botocore and kubernetes-client calls, record them, send none."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from typing import Any, Iterator

__all__ = ["DryRunRecorder", "NotSent", "intercept_boto3", "intercept_kubernetes", "intercept_process"]


class NotSent(RuntimeError):
    """A request reached the wire stage of an intercepted client (must never happen)."""


def _plain(v: Any) -> Any:
    try:
        return json.loads(json.dumps(v, default=str))
    except (TypeError, ValueError):
        return str(v)


class DryRunRecorder:
    """The API calls a dry run would have made, in order: {"t", "api", "service", "operation", "resource",
    "params"}. Thread-safe; the run context holds one and the report lists `calls`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []

    def record(self, api: str, service: str, operation: str, resource: str = "", params: Any = None,
               **extra: Any) -> dict[str, Any]:
        call = {"t": time.time(), "api": api, "service": service, "operation": operation, "resource": resource,
                "params": _plain(params or {}), **{k: _plain(v) for k, v in extra.items()}}
        with self._lock:
            self._calls.append(call)
        return call

    @property
    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._calls]

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)


# -- botocore ------------------------------------------------------------------------------------
_RESOURCE_KEYS = ("DBInstanceIdentifier", "DBClusterIdentifier", "HostedZoneId", "HealthCheckId",
                  "ReplicationGroupId", "Bucket", "KeyId", "TableName", "ClusterName", "Name")


def _skeleton(shape: Any) -> dict[str, Any]:
    """A parsed response that reads like an empty answer: list members [], map members {}."""
    out: dict[str, Any] = {}
    for name, member in (getattr(shape, "members", None) or {}).items():
        if member.type_name == "list":
            out[name] = []
        elif member.type_name == "map":
            out[name] = {}
    return out


def intercept_boto3(session: Any, recorder: DryRunRecorder) -> Any:
    """Make every client of `session` (a boto3.Session) record its calls and answer them itself.

    `before-call` (before signing: no credentials needed) records service, operation, region and the API
    parameters and returns a synthetic empty response, so botocore never builds, signs or sends a request;
    a `before-send` handler stands behind it and refuses anything that still got that far.
    """
    events = session._session.get_component("event_emitter")  # botocore's session events (shared by clients)
    pending: dict[int, dict[str, Any]] = {}

    def params(params: dict, model: Any, context: dict, **_: Any) -> None:
        pending[id(context)] = copy.deepcopy(params)

    def answer(model: Any, params: dict, context: dict, **kwargs: Any) -> tuple[Any, dict]:
        api_params = pending.pop(id(context), {})
        region = (context.get("client_region") or (context.get("client_config") and
                                                   context["client_config"].region_name) or "")
        resource = next((str(api_params[k]) for k in _RESOURCE_KEYS if k in api_params), "")
        recorder.record("aws", model.service_model.service_name, model.name, resource, api_params, region=region)
        parsed = _skeleton(model.output_shape)
        parsed["ResponseMetadata"] = {"HTTPStatusCode": 200, "RequestId": "dry-run", "HTTPHeaders": {},
                                      "RetryAttempts": 0}
        return _Http(200), parsed

    def refuse(request: Any, **_: Any) -> None:
        raise NotSent(f"dry run: {getattr(request, 'method', '?')} {getattr(request, 'url', '?')} was about to be sent")

    events.register("before-parameter-build", params)
    events.register_first("before-call", answer)
    events.register_first("before-send", refuse)
    return session


class _Http:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""
        self.raw = None


# -- kubernetes client -----------------------------------------------------------------------------
class _KubeResponse:
    """What kubernetes.client.rest.RESTClientObject.request returns, minus the network."""

    def __init__(self, data: bytes) -> None:
        self.status = 200
        self.reason = "OK (dry run)"
        self.data = data

    def read(self) -> bytes:  # kubernetes >= 32 (RESTResponse) reads before deserializing
        return self.data

    @property
    def headers(self) -> dict[str, str]:
        return self.getheaders()

    @property
    def response(self) -> "_KubeResponse":  # _preload_content=False callers take the raw response
        return self

    def getheaders(self) -> dict[str, str]:
        return {"content-type": "application/json"}

    def getheader(self, name: str, default: Any = None) -> Any:
        return self.getheaders().get(name.lower(), default)


def _kube_resource(path: str) -> str:
    """"pods/web-1 in ns kerp" from /api/v1/namespaces/kerp/pods/web-1[/eviction]."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    ns = ""
    if "namespaces" in parts and parts.index("namespaces") + 1 < len(parts):
        i = parts.index("namespaces")
        ns = parts[i + 1]
        parts = parts[:i] + parts[i + 2:]
    # drop the group/version prefix: api/v1 or apis/GROUP/VERSION
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else parts
    what = "/".join(rest) or "/".join(parts)
    return f"{what} in namespace {ns}" if ns else what


def _kube_request(recorder: DryRunRecorder, host_of: Any) -> Any:
    from urllib.parse import parse_qsl, urlsplit

    def request(self_or_none: Any, method: str, url: str, query_params: Any = None, headers: Any = None,
                body: Any = None, post_params: Any = None, _preload_content: bool = True,
                _request_timeout: Any = None) -> _KubeResponse:
        parts = urlsplit(url)
        # kubernetes < 32 passes query_params; newer clients put the query in the URL
        query = dict(query_params or []) or dict(parse_qsl(parts.query, keep_blank_values=True))
        recorder.record("kubernetes", "kubernetes", method.upper(), _kube_resource(parts.path),
                        {"path": parts.path, "query": query, "body": body},
                        host=host_of(parts))
        reply: dict[str, Any] = {"items": [], "metadata": {}}
        if isinstance(body, dict):
            reply = {**reply, **body}
        return _KubeResponse(json.dumps(reply).encode())

    return request


def intercept_kubernetes(api_client: Any, recorder: DryRunRecorder) -> Any:
    """Replace `api_client.rest_client.request` (kubernetes.client.ApiClient) by a recorder: method, path,
    query, body are recorded, an empty object (with `items: []`) is returned, nothing is sent."""
    host = api_client.configuration.host
    request = _kube_request(recorder, lambda parts: host)
    api_client.rest_client.request = lambda *a, **kw: request(None, *a, **kw)
    # the connection pool itself is never used again; make sure of it
    api_client.rest_client.pool_manager = None
    return api_client


@contextlib.contextmanager
def intercept_process(recorder: DryRunRecorder) -> Iterator[DryRunRecorder]:
    """While inside: EVERY botocore client and kubernetes ApiClient of the process records and sends nothing,
    also those third-party activities build themselves (chaosaws, chaostoolkit-kubernetes). For a dry run
    against a real environment; the factory's per-client interception stays the first line."""
    from botocore.client import BaseClient

    patched: list[tuple[Any, str, Any]] = []

    def make_api_call(self: Any, operation_name: str, api_params: dict) -> dict:
        model = self.meta.service_model.operation_model(operation_name)
        params = copy.deepcopy(api_params)
        resource = next((str(params[k]) for k in _RESOURCE_KEYS if k in params), "")
        recorder.record("aws", self.meta.service_model.service_name, model.name, resource, params,
                        region=self.meta.region_name or "")
        parsed = _skeleton(model.output_shape)
        parsed["ResponseMetadata"] = {"HTTPStatusCode": 200, "RequestId": "dry-run", "HTTPHeaders": {},
                                      "RetryAttempts": 0}
        return parsed

    patched.append((BaseClient, "_make_api_call", BaseClient.__dict__["_make_api_call"]))
    BaseClient._make_api_call = make_api_call
    try:
        from kubernetes.client import rest
    except ImportError:
        rest = None
    if rest is not None:
        patched.append((rest.RESTClientObject, "request", rest.RESTClientObject.__dict__["request"]))
        rest.RESTClientObject.request = _kube_request(recorder, lambda parts: f"{parts.scheme}://{parts.netloc}")
    try:
        yield recorder
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
