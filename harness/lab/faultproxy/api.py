"""Toxiproxy's HTTP API over the proxy collection: routes, JSON bodies, status codes, error bodies."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from . import TOXIPROXY_VERSION
from .errors import ApiError, bad_body
from .httpserver import Request, Response, path_segments
from .proxy import ProxyCollection

log = logging.getLogger(__name__)

Route = Callable[..., Awaitable[Response]]


def json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(data).encode()
    return Response(status, body, {"Content-Type": "application/json"})


def error_response(status: int, message: str) -> Response:
    """Toxiproxy's error body: `{"error": message, "status": status}`."""
    return json_response({"error": message, "status": status}, status)


def no_content() -> Response:
    return Response(204)


def decode_body(request: Request) -> Any:
    """The JSON body; Toxiproxy answers an empty body with `bad request body: EOF`."""
    if not request.body.strip():
        raise bad_body("EOF")
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_body(str(exc)) from exc


class Api:
    """Dispatches requests to the collection; every failure becomes a JSON error, never a trace."""

    def __init__(self, collection: ProxyCollection) -> None:
        self.collection = collection

    async def handle(self, request: Request) -> Response:
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            return Response(403, b"User agent not allowed\n", {"Content-Type": "text/plain"})
        try:
            route, args = self._route(request.method, path_segments(request.path))
            if request.method == "GET":
                return await route(request, *args)
            async with self.collection.lock:
                return await route(request, *args)
        except ApiError as exc:
            log.info("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
            return json_response(exc.body(), exc.status)
        except Exception as exc:  # noqa: BLE001 - the API answers 500, the log keeps the trace
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, f"{type(exc).__name__}: {exc}")

    def _route(self, method: str, seg: list[str]) -> tuple[Route, list[str]]:
        table: dict[str, Route]
        args: list[str] = []
        match seg:
            case ["version"]:
                table = {"GET": self.version}
            case ["reset"]:
                table = {"POST": self.reset}
            case ["populate"]:
                table = {"POST": self.populate}
            case ["proxies"]:
                table = {"GET": self.proxy_index, "POST": self.proxy_create}
            case ["proxies", proxy] if proxy:
                table = {"GET": self.proxy_show, "POST": self.proxy_update,
                         "PATCH": self.proxy_update, "DELETE": self.proxy_delete}
                args = [proxy]
            case ["proxies", proxy, "toxics"] if proxy:
                table = {"GET": self.toxic_index, "POST": self.toxic_create}
                args = [proxy]
            case ["proxies", proxy, "toxics", toxic] if proxy and toxic:
                table = {"GET": self.toxic_show, "POST": self.toxic_update,
                         "PATCH": self.toxic_update, "DELETE": self.toxic_delete}
                args = [proxy, toxic]
            case _:
                raise ApiError("404 page not found", 404)
        if method not in table:
            raise ApiError(f"method {method} not allowed", 405)
        return table[method], args

    async def version(self, request: Request) -> Response:
        return json_response({"version": TOXIPROXY_VERSION})

    async def reset(self, request: Request) -> Response:
        await self.collection.reset()
        return no_content()

    async def populate(self, request: Request) -> Response:
        proxies, error = await self.collection.populate(decode_body(request))
        data: dict[str, Any] = {"proxies": [p.to_json() for p in proxies]}
        if error is not None:
            data.update(error.body())
            return json_response(data, error.status)
        return json_response(data, 201)

    async def proxy_index(self, request: Request) -> Response:
        return json_response({n: p.to_json() for n, p in self.collection.proxies.items()})

    async def proxy_create(self, request: Request) -> Response:
        proxy = await self.collection.add(self.collection.parse(decode_body(request)))
        return json_response(proxy.to_json(), 201)

    async def proxy_show(self, request: Request, name: str) -> Response:
        return json_response(self.collection.get(name).to_json())

    async def proxy_update(self, request: Request, name: str) -> Response:
        self.collection.get(name)  # 404 before a body error, as Toxiproxy
        proxy = await self.collection.update(name, decode_body(request))
        return json_response(proxy.to_json())

    async def proxy_delete(self, request: Request, name: str) -> Response:
        self.collection.remove(name)
        return no_content()

    async def toxic_index(self, request: Request, name: str) -> Response:
        return json_response([t.to_json() for t in self.collection.get(name).toxics()])

    async def toxic_create(self, request: Request, name: str) -> Response:
        proxy = self.collection.get(name)
        return json_response(proxy.add_toxic(decode_body(request)).to_json())

    async def toxic_show(self, request: Request, name: str, toxic: str) -> Response:
        return json_response(self.collection.get(name).get_toxic(toxic).to_json())

    async def toxic_update(self, request: Request, name: str, toxic: str) -> Response:
        proxy = self.collection.get(name)
        proxy.get_toxic(toxic)
        return json_response(proxy.update_toxic(toxic, decode_body(request)).to_json())

    async def toxic_delete(self, request: Request, name: str, toxic: str) -> Response:
        self.collection.get(name).remove_toxic(toxic)
        return no_content()
