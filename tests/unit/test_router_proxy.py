"""The router's proxy step with a scripted upstream: which failures go on to a second target, which never do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.lab.router.app import RegionRouter
from harness.lab.router.logic import RouterConfig
from harness.lab.router.upstream import UpstreamConnectError, UpstreamError

P1, P2 = "http://127.0.0.1:1001", "http://127.0.0.1:1002"


class ScriptedUpstream:
    """Answers per target: an exception to raise or a (status, headers, body) to return; records every send."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.sent: list[tuple[str, str]] = []

    async def request(self, base_url: str, method: str, target: bytes, headers: Any, body: bytes):
        self.sent.append((base_url, method))
        outcome = self.script[base_url]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def close(self) -> None:
        pass


def run_proxy(method: str, script: dict[str, Any]) -> tuple[int, dict[bytes, bytes], list[tuple[str, str]]]:
    router = RegionRouter(RouterConfig.from_json({"regions": {"primary": {"role": "PRIMARY", "targets": [P1, P2]}},
                                                  "health_check": {"failure_threshold": 1}}))
    for url in (P1, P2):
        router.table.observe("primary", url, True, 0.0)
    router.table.regions["primary"].cursor = 0
    router.upstream = ScriptedUpstream(script)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/health", "headers": [], "query_string": b""}
    asyncio.run(router.proxy(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), router.upstream.sent


OK = (200, [(b"content-type", b"application/json")], b"{}")


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_an_idempotent_request_dropped_unanswered_goes_to_the_next_target(method: str) -> None:
    status, headers, sent = run_proxy(method, {P1: UpstreamError("closed without answering"), P2: OK})
    assert status == 200 and headers[b"x-drill-target"] == P2.encode()
    assert sent == [(P1, method), (P2, method)]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_write_dropped_unanswered_is_never_sent_twice(method: str) -> None:
    status, headers, sent = run_proxy(method, {P1: UpstreamError("closed without answering"), P2: OK})
    assert status == 502 and b"x-drill-outcome" not in headers  # indeterminate: it may have been applied
    assert sent == [(P1, method)]


def test_a_write_nothing_was_sent_of_goes_to_the_next_target() -> None:
    status, _, sent = run_proxy("POST", {P1: UpstreamConnectError("refused"), P2: OK})
    assert status == 200 and sent == [(P1, "POST"), (P2, "POST")]


def test_an_idempotent_request_both_targets_dropped_gives_502_after_two_tries() -> None:
    status, _, sent = run_proxy("GET", {P1: UpstreamError("reset"), P2: UpstreamError("reset")})
    assert status == 502 and len(sent) == 2
