"""The lab's Kubernetes API: kmock's in-memory KubernetesEmulator over real HTTP, fixed where kubectl and chaosk8s need it.

One process serves one emulated cluster per `--cluster NAME=PORT` (the lab runs `primary` and `dr`, as two
EKS clusters in two regions would be). kmock 0.8 as shipped ignores label and field selectors, answers
404 to eviction and PUT, fails creating namespaces, gives kubectl a discovery it cannot use and a Deployment
where `kubectl scale` wants a Scale; `LabKubernetesEmulator` carries these gaps. It keeps kmock's object
store and error rendering. What it still does not model is listed in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import re
import signal
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import references, rendering

log = logging.getLogger("harness.lab.kubeapi")

#: (group, version, plural) -> (kind, namespaced, subresources {name: (kind, group, version)})
RESOURCES: dict[tuple[str, str, str], tuple[str, bool, dict[str, tuple[str, str, str]]]] = {
    ("", "v1", "namespaces"): ("Namespace", False, {}),
    ("", "v1", "nodes"): ("Node", False, {"status": ("Node", "", "v1")}),
    ("", "v1", "pods"): ("Pod", True, {"status": ("Pod", "", "v1"), "eviction": ("Eviction", "policy", "v1")}),
    ("", "v1", "events"): ("Event", True, {}),
    ("apps", "v1", "deployments"): ("Deployment", True, {"status": ("Deployment", "apps", "v1"),
                                                         "scale": ("Scale", "autoscaling", "v1")}),
    ("apps", "v1", "replicasets"): ("ReplicaSet", True, {"status": ("ReplicaSet", "apps", "v1")}),
    ("policy", "v1", "poddisruptionbudgets"): ("PodDisruptionBudget", True, {}),
}
SHORT_NAMES = {"pods": ["po"], "nodes": ["no"], "namespaces": ["ns"], "deployments": ["deploy"],
               "replicasets": ["rs"], "events": ["ev"], "poddisruptionbudgets": ["pdb"]}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
WATCH_MAX_S = 300.0
_NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces/?(?P<name>[^/]+)?/?$")


def _now() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "metadata": {},
                                      "status": "Success" if code < 400 else "Failure",
                                      "code": code, "reason": reason, "message": message}, status=code)


# --------------------------------------------------------------------------- selectors


def _split_selector(text: str) -> list[str]:
    """Split a selector on the commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def label_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector: k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k."""
    if not selector:
        return True
    for req in _split_selector(selector):
        m = re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\((.*)\)", req)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            ok = key in labels and labels[key] in values
            if (op == "in") != ok:
                return False
            continue
        m = re.fullmatch(r"([^\s!=]+)\s*(==|=|!=)\s*(\S*)", req)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                if labels.get(key) == value:
                    return False
            elif labels.get(key) != value:
                return False
            continue
        if req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur).lower() if isinstance(cur, bool) else str(cur)


def field_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    """Kubernetes field selector: path=v, path==v, path!=v (any dotted field of the object)."""
    if not selector:
        return True
    for req in _split_selector(selector):
        m = re.fullmatch(r"([^\s!=]+)\s*(==|=|!=)\s*(.*)", req)
        if not m:
            raise ValueError(f"invalid field selector {req!r}")
        key, op, value = m.groups()
        if (op == "!=") == (_field(obj, key) == value.strip()):
            return False
    return True


# --------------------------------------------------------------------------- kubectl's tables


def _age(ts: str | None) -> str:
    try:
        s = int((datetime.now(tz=timezone.utc) - datetime.strptime(ts or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)).total_seconds())
    except ValueError:
        return "<unknown>"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{max(s, 0)}s"


def _cond(obj: dict[str, Any], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions", []))


def table(plural: str, items: list[dict[str, Any]], rv: str) -> dict[str, Any]:
    """The meta.k8s.io/v1 Table kubectl asks for (`kubectl get` columns as a real API server prints them)."""
    cols: list[tuple[str, int]] = [("Name", 0)]
    if plural == "pods":
        cols += [("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1), ("Node", 1)]
    elif plural == "deployments":
        cols += [("Ready", 0), ("Up-to-date", 0), ("Available", 0), ("Age", 0)]
    elif plural == "nodes":
        cols += [("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0)]
    else:
        cols += [("Age", 0)]
    rows = []
    for o in items:
        meta, spec, st = o.get("metadata") or {}, o.get("spec") or {}, o.get("status") or {}
        age = _age(meta.get("creationTimestamp"))
        if plural == "pods":
            cs = st.get("containerStatuses") or []
            cells = [meta.get("name"), f"{sum(1 for c in cs if c.get('ready'))}/{len(spec.get('containers') or [])}",
                     "Terminating" if meta.get("deletionTimestamp") else st.get("phase", "Pending"),
                     sum(int(c.get("restartCount") or 0) for c in cs), age, st.get("podIP", "<none>"), spec.get("nodeName", "<none>")]
        elif plural == "deployments":
            cells = [meta.get("name"), f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}", st.get("updatedReplicas", 0),
                     st.get("availableReplicas", 0), age]
        elif plural == "nodes":
            status = "Ready" if _cond(o, "Ready") else "NotReady"
            cells = [meta.get("name"), status + (",SchedulingDisabled" if spec.get("unschedulable") else ""), "<none>", age,
                     "v1.32.0-drill-lab"]
        else:
            cells = [meta.get("name"), age]
        rows.append({"cells": cells, "object": o})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": [{"name": n, "type": "string", "format": "name" if n == "Name" else "", "description": n,
                                   "priority": p} for n, p in cols],
            "rows": rows}


# --------------------------------------------------------------------------- the emulator


@attrs.define(kw_only=True)
class LabKubernetesEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with selectors, eviction, PUT, the scale subresource, namespaces and full discovery."""

    cluster: str = "lab"
    _rv: int = attrs.field(default=0, init=False)
    _watchers: list[tuple[tuple[str, str, str], asyncio.Queue[dict[str, Any]]]] = attrs.field(factory=list, init=False)
    _namespaces: dict[str, dict[str, Any]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for (group, version, plural), (kind, namespaced, subs) in RESOURCES.items():
            if plural != "namespaces":
                self.resources[f"{group}/{version}/{plural}" if group else f"{version}/{plural}"] = \
                    kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=set(VERBS), subresources=set(subs))
        self._put_namespace("default")

    # -- plumbing --------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _notify(self, rkey: tuple[str, str, str], etype: str, obj: dict[str, Any]) -> None:
        for key, queue in list(self._watchers):
            if key == rkey:
                queue.put_nowait({"type": etype, "object": obj})

    def _put_namespace(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(body or {})
        obj.update(apiVersion="v1", kind="Namespace")
        meta = obj.setdefault("metadata", {})
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=self._next_rv())
        obj["status"] = {"phase": "Active"}
        self._namespaces[name] = obj
        self._notify(("", "v1", "namespaces"), "ADDED", obj)
        return obj

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            if raw_request.method in ("POST", "PUT", "PATCH") and "protobuf" in raw_request.headers.get("Content-Type", ""):
                # no protobuf here: 415 makes client-go send the object again as JSON
                return _status(415, "UnsupportedMediaType", "the lab API takes JSON bodies only")
            m = _NAMESPACES_PATH.match(raw_request.path)
            if m:  # kmock's path parser cannot read /api/v1/namespaces[/name]
                return await self._serve_namespaces(raw_request, m.group("name"))
            if raw_request.path in ("/api/v1", "/api/v1/", "/apis", "/apis/") or re.fullmatch(r"/apis/[^/]+(/[^/]+)?/?", raw_request.path):
                return self._serve_discovery(raw_request.path.rstrip("/"))
            return await super().__call__(raw_request)
        except Exception as e:  # served as a Kubernetes Status, never a dropped connection
            log.exception("%s %s failed", raw_request.method, raw_request.path)
            return await self._render_error(e)
        finally:
            self._requests.clear()  # kmock keeps every request for test assertions: not in a long-lived server

    async def _serve_namespaces(self, raw: aiohttp.web.BaseRequest, name: str | None) -> aiohttp.web.StreamResponse:
        if name is None and raw.method == "GET" and raw.query.get("watch") not in ("true", "1"):
            items = [ns for ns in self._namespaces.values() if label_matches(raw.query.get("labelSelector"), ns["metadata"].get("labels", {}))]
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "NamespaceList",
                                              "metadata": {"resourceVersion": str(self._rv)}, "items": items})
        if name is None and raw.method == "POST":
            body = await raw.json()
            ns_name = (body.get("metadata") or {}).get("name")
            if not ns_name:
                return _status(422, "Invalid", "namespace needs metadata.name")
            if ns_name in self._namespaces:
                return _status(409, "AlreadyExists", f'namespaces "{ns_name}" already exists')
            return aiohttp.web.json_response(self._put_namespace(ns_name, body), status=201)
        if name is not None and raw.method == "GET":
            if name not in self._namespaces:
                return _status(404, "NotFound", f'namespaces "{name}" not found')
            return aiohttp.web.json_response(self._namespaces[name])
        if name is not None and raw.method == "DELETE":
            obj = self._namespaces.pop(name, None)
            if obj is None:
                return _status(404, "NotFound", f'namespaces "{name}" not found')
            self._notify(("", "v1", "namespaces"), "DELETED", obj)
            return aiohttp.web.json_response(obj)
        return _status(405, "MethodNotAllowed", f"{raw.method} {raw.path} is not supported by the lab API")

    def _serve_discovery(self, path: str) -> aiohttp.web.Response:
        groups: dict[str, list[str]] = {}
        for group, version, _ in RESOURCES:
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)

        def group_json(g: str) -> dict[str, Any]:
            vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in groups[g]]
            return {"name": g, "versions": vs, "preferredVersion": vs[0]}

        if path == "/apis":
            return aiohttp.web.json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                              "groups": [group_json(g) for g in groups]})
        parts = path.split("/")[1:]
        if parts[0] == "apis" and len(parts) == 2:
            if parts[1] not in groups:
                return _status(404, "NotFound", f"unknown API group {parts[1]!r}")
            return aiohttp.web.json_response({"kind": "APIGroup", "apiVersion": "v1", **group_json(parts[1])})
        group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
        out = []
        for (g, v, plural), (kind, namespaced, subs) in RESOURCES.items():
            if (g, v) != (group, version):
                continue
            out.append({"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                        "verbs": VERBS, "shortNames": SHORT_NAMES.get(plural, [])})
            for sub, (skind, sgroup, sversion) in subs.items():
                out.append({"name": f"{plural}/{sub}", "singularName": "", "namespaced": namespaced, "kind": skind,
                            "group": sgroup, "version": sversion,
                            "verbs": ["create"] if sub == "eviction" else ["get", "patch", "update"]})
        if not out:
            return _status(404, "NotFound", f"unknown API version {path}")
        return aiohttp.web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                          "groupVersion": f"{group}/{version}" if group else version, "resources": out})

    # -- resources -------------------------------------------------------------------
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        rkey = (res.group, res.version, res.plural) if res is not None else None
        if rkey not in RESOURCES:
            return await super()._handle(request)
        kind, namespaced, _subs = RESOURCES[rkey]
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        params = dict(request.params)
        if request.name is None:
            if method == "GET" and params.get("watch") in ("true", "1"):
                return await self._watch(request, rkey, params)
            if method == "GET":
                return self._list(request, rkey, kind, params)
            if method == "POST":
                return self._create(request, rkey, kind, namespaced)
            return _status(405, "MethodNotAllowed", f"{method} on a collection is not supported by the lab API")
        key = (kmock.resource(*rkey), request.namespace if namespaced else None, request.name)
        sub = request.subresource
        if sub == "eviction" and method == "POST":
            self._delete(rkey, key)
            return _status(201, "Created", f"pod {request.name} evicted")
        if method == "GET" and params.get("watch") in ("true", "1"):
            params["fieldSelector"] = f"metadata.name={request.name}"
            return await self._watch(request, rkey, params)
        obj = self._get(key)
        if obj is None:
            return _status(404, "NotFound", f'{rkey[2]} "{request.name}" not found')
        if sub == "scale":
            if method in ("PATCH", "PUT"):
                replicas = ((request.data or {}).get("spec") or {}).get("replicas")
                if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                    return _status(422, "Invalid", f"spec.replicas {replicas!r} must be a non-negative integer")
                obj = self._update(rkey, key, {"spec": {"replicas": replicas}})
            return aiohttp.web.json_response(self._scale(obj))
        if sub not in (None, "status"):
            return _status(404, "NotFound", f"subresource {sub!r} of {rkey[2]} is not served by the lab API")
        if method == "GET":
            if sub is None and "as=Table" in request.headers.get("Accept", ""):
                return aiohttp.web.json_response(table(rkey[2], [obj], str(self._rv)))
            return aiohttp.web.json_response(obj)
        if method == "PATCH":
            patch = request.data
            if isinstance(patch, list):
                return _status(415, "UnsupportedMediaType", "JSON patch (a list) is not supported by the lab API; "
                                                           "use a merge patch")
            return aiohttp.web.json_response(self._update(rkey, key, patch or {}))
        if method == "PUT":
            body = dict(request.data or {})
            if sub == "status":
                return aiohttp.web.json_response(self._update(rkey, key, {"status": body.get("status", {})}))
            return aiohttp.web.json_response(self._replace(rkey, key, body))
        if method == "DELETE":
            return aiohttp.web.json_response(self._delete(rkey, key))
        return _status(405, "MethodNotAllowed", f"{method} is not supported by the lab API")

    def _get(self, key: tuple[Any, str | None, str]) -> dict[str, Any] | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _items(self, rkey: tuple[str, str, str], namespace: str | None) -> list[dict[str, Any]]:
        res = kmock.resource(*rkey)
        out = []
        for (r, ns, _name), obj in self._objects.items():
            if r == res and not obj.deleted and (namespace is None or ns == namespace):
                out.append(obj.raw)
        return out

    @staticmethod
    def _selected(obj: dict[str, Any], params: dict[str, str]) -> bool:
        return label_matches(params.get("labelSelector"), (obj.get("metadata") or {}).get("labels") or {}) and \
            field_matches(params.get("fieldSelector"), obj)

    def _list(self, request: rendering.Request, rkey: tuple[str, str, str], kind: str, params: dict[str, str]) -> aiohttp.web.Response:
        try:
            items = [o for o in self._items(rkey, request.namespace) if self._selected(o, params)]
        except ValueError as e:
            return _status(400, "BadRequest", str(e))
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        if "as=Table" in request.headers.get("Accept", ""):
            return aiohttp.web.json_response(table(rkey[2], items, str(self._rv)))
        api_version = f"{rkey[0]}/{rkey[1]}" if rkey[0] else rkey[1]
        return aiohttp.web.json_response({"apiVersion": api_version, "kind": f"{kind}List",
                                          "metadata": {"resourceVersion": str(self._rv)}, "items": items})

    def _create(self, request: rendering.Request, rkey: tuple[str, str, str], kind: str, namespaced: bool) -> aiohttp.web.Response:
        body = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if body is None:
            return _status(400, "BadRequest", "the request body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            return _status(422, "Invalid", "metadata.name is required")
        ns = (request.namespace or meta.get("namespace") or "default") if namespaced else None
        if namespaced:
            if ns not in self._namespaces:
                return _status(404, "NotFound", f'namespaces "{ns}" not found')
            meta["namespace"] = ns
        key = (kmock.resource(*rkey), ns, meta["name"])
        if self._get(key) is not None:
            return _status(409, "AlreadyExists", f'{rkey[2]} "{meta["name"]}" already exists')
        body["apiVersion"] = f"{rkey[0]}/{rkey[1]}" if rkey[0] else rkey[1]
        body["kind"] = kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=self._next_rv(), generation=1)
        if key in self._objects:
            del self._objects[key]
        self._objects[key] = body
        obj = self._objects[key].raw
        self._notify(rkey, "ADDED", obj)
        return aiohttp.web.json_response(obj, status=201)

    def _store(self, rkey: tuple[str, str, str], key: tuple[Any, str | None, str], new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        meta = new.setdefault("metadata", {})
        for fixed in ("name", "namespace", "uid", "creationTimestamp"):
            if fixed in old.get("metadata", {}):
                meta[fixed] = old["metadata"][fixed]
        generation = int(old.get("metadata", {}).get("generation") or 1)
        if json.dumps(new.get("spec"), sort_keys=True) != json.dumps(old.get("spec"), sort_keys=True):
            generation += 1  # a spec change is a new generation (rollout status compares observedGeneration)
        meta["generation"] = generation
        meta["resourceVersion"] = self._next_rv()
        new["apiVersion"], new["kind"] = old.get("apiVersion"), old.get("kind")
        self._objects[key].create(new)
        del self._objects[key].history[:-1]  # the lab needs no history: keep memory flat
        obj = self._objects[key].raw
        self._notify(rkey, "MODIFIED", obj)
        return obj

    def _update(self, rkey: tuple[str, str, str], key: tuple[Any, str | None, str], patch: dict[str, Any]) -> dict[str, Any]:
        old = self._objects[key].raw
        self._objects[key].patch(patch)  # kmock's recursive merge: None removes a key
        new = copy.deepcopy(self._objects[key].raw)
        self._objects[key].history.pop()  # _store records the version with its metadata
        return self._store(rkey, key, new, old)

    def _replace(self, rkey: tuple[str, str, str], key: tuple[Any, str | None, str], body: dict[str, Any]) -> dict[str, Any]:
        old = self._objects[key].raw
        body = copy.deepcopy(body)
        body.setdefault("status", old.get("status"))
        return self._store(rkey, key, body, old)

    def _delete(self, rkey: tuple[str, str, str], key: tuple[Any, str | None, str]) -> dict[str, Any]:
        obj = self._get(key)
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError(message=f'{rkey[2]} "{key[2]}" not found')
        del self._objects[key]
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        obj["metadata"]["deletionTimestamp"] = _now()
        self._notify(rkey, "DELETED", obj)
        return obj

    @staticmethod
    def _scale(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in labels.items())}}

    async def _watch(self, request: rendering.Request, rkey: tuple[str, str, str], params: dict[str, str]) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        try:
            timeout = min(float(params.get("timeoutSeconds") or WATCH_MAX_S), WATCH_MAX_S)
        except ValueError:
            timeout = WATCH_MAX_S
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        entry = (rkey, queue)
        self._watchers.append(entry)
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        namespace = request.namespace
        try:
            if params.get("resourceVersion") in (None, "", "0"):
                for obj in self._items(rkey, namespace):
                    if self._selected(obj, params):
                        await response.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                if raw.transport is None or raw.transport.is_closing():
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=min(1.0, max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    continue
                obj = event["object"]
                if namespace is not None and obj.get("metadata", {}).get("namespace") != namespace:
                    continue
                if not self._selected(obj, params):
                    continue
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.remove(entry)
        try:
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response


# --------------------------------------------------------------------------- server


def write_kubeconfig(path: Path, clusters: dict[str, int], host: str, namespace: str) -> None:
    """A kubeconfig with one cluster and one context per emulated cluster (context name = cluster name)."""
    import yaml

    first = next(iter(clusters))
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": first, "preferences": {},
           "clusters": [{"name": f"drill-lab-{n}", "cluster": {"server": f"http://{host}:{p}"}} for n, p in clusters.items()],
           "users": [{"name": "drill-lab", "user": {"token": "drill-lab"}}],  # the lab API checks no credentials
           "contexts": [{"name": n, "context": {"cluster": f"drill-lab-{n}", "user": "drill-lab", "namespace": namespace}}
                        for n in clusters]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)


async def serve(clusters: dict[str, int], host: str, kubeconfig: Path | None = None, namespace: str = "default") -> None:
    """Serve one emulator per cluster until SIGTERM/SIGINT; once listening, write the kubeconfig if asked."""
    runners = []
    for name, port in clusters.items():
        emulator = LabKubernetesEmulator(cluster=name)
        runner = aiohttp.web.ServerRunner(aiohttp.web.Server(emulator), handle_signals=False)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, host, port).start()
        runners.append(runner)
        log.info("cluster %s: Kubernetes API on http://%s:%d", name, host, port)
    if kubeconfig is not None:
        write_kubeconfig(kubeconfig, clusters, host, namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def parse_clusters(values: list[str]) -> dict[str, int]:
    """['primary=6443', ...] -> {'primary': 6443}; ValueError naming the bad value."""
    out: dict[str, int] = {}
    for v in values:
        name, sep, port = v.partition("=")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--cluster {v!r} must be NAME=PORT")
        out[name] = int(port)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lab.kubeapi", description="Kubernetes API of the drill lab")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--cluster", action="append", default=[], help="NAME=PORT, once per cluster")
    parser.add_argument("--port", type=int, help="one cluster named 'lab' on this port")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig here once listening (a context per cluster)")
    parser.add_argument("--namespace", default="default", help="the kubeconfig contexts' namespace")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        clusters = parse_clusters(args.cluster)
    except ValueError as e:
        print(f"kubeapi: {e}", file=sys.stderr)
        return 2
    if args.port:
        clusters.setdefault("lab", args.port)
    if not clusters:
        print("kubeapi: give --cluster NAME=PORT or --port PORT", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(clusters, args.host, args.kubeconfig, args.namespace))
    except OSError as e:
        print(f"kubeapi: cannot listen: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
