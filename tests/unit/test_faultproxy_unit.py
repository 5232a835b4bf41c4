"""Pure parts of the fault proxy: toxic and proxy parsing, slicing math, HTTP parsing, API routing."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from harness.errors import HarnessError
from harness.lab.faultproxy.api import Api
from harness.lab.faultproxy.errors import ApiError
from harness.lab.faultproxy.httpserver import BadRequest, Request, parse_head, path_segments
from harness.lab.faultproxy.proxy import (
    ProxyCollection,
    ProxyInput,
    format_address,
    parse_address,
    parse_proxy_input,
)
from harness.lab.faultproxy.toxics import (
    TOXIC_ATTRIBUTES,
    latency_delay_ms,
    parse_toxic,
    slice_offsets,
    update_toxic,
)


def test_toxic_defaults_follow_toxiproxy() -> None:
    toxic = parse_toxic({"type": "latency", "attributes": {"latency": 100}})
    assert toxic.to_json() == {
        "attributes": {"latency": 100, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
    }
    upstream = parse_toxic({"type": "bandwidth", "stream": "UPSTREAM", "attributes": None})
    assert (upstream.name, upstream.stream, dict(upstream.attributes)) == (
        "bandwidth_upstream", "upstream", {"rate": 0}
    )


def test_every_toxic_type_parses_with_its_attributes() -> None:
    for toxic_type, defaults in TOXIC_ATTRIBUTES.items():
        attributes = {key: 5 for key in defaults}
        if toxic_type == "slicer":
            attributes["size_variation"] = 2
        toxic = parse_toxic({"type": toxic_type, "attributes": attributes, "toxicity": 0.5})
        assert dict(toxic.attributes) == attributes and toxic.toxicity == 0.5


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ([], 400, "bad request body: expected a JSON object, got list"),
        ({"type": "nope"}, 400, "invalid toxic type"),
        ({"type": "latency", "stream": "both"}, 400,
         "stream was invalid, can be either upstream or downstream"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, 400,
         "bad request body: attribute 'latency' must be an integer, got 1.5"),
        ({"type": "latency", "attributes": {"latency": True}}, 400,
         "bad request body: attribute 'latency' must be an integer, got True"),
        ({"type": "latency", "attributes": {"latency": -1}}, 400,
         "bad request body: attribute 'latency' must not be negative, got -1"),
        ({"type": "latency", "attributes": [1]}, 400,
         "bad request body: field 'attributes' must be an object, got [1]"),
        ({"type": "latency", "toxicity": "all"}, 400,
         "bad request body: field 'toxicity' must be a number, got 'all'"),
        ({"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}}, 400,
         "bad request body: slicer size_variation must be less than average_size, got 4 >= 4"),
        ({"type": 3}, 400, "bad request body: field 'type' must be a string, got 3"),
    ],
)
def test_bad_toxics_are_refused_with_toxiproxy_errors(body: object, status: int, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_toxic(body)
    assert caught.value.body() == {"error": message, "status": status}
    assert isinstance(caught.value, HarnessError)


def test_unknown_attributes_are_ignored_and_integral_floats_accepted() -> None:
    toxic = parse_toxic({"type": "timeout", "attributes": {"timeout": 100.0, "extra": "x"}})
    assert dict(toxic.attributes) == {"timeout": 100}


def test_update_merges_attributes_and_makes_a_new_toxic() -> None:
    old = parse_toxic({"type": "latency", "name": "lag", "attributes": {"latency": 100, "jitter": 5}})
    new = update_toxic(old, {"attributes": {"latency": 300}, "toxicity": 0.25, "name": "ignored"})
    assert new is not old and new != old  # identity equality: live links see the change
    assert (new.name, dict(new.attributes), new.toxicity) == ("lag", {"latency": 300, "jitter": 5}, 0.25)
    assert update_toxic(old, {}).toxicity == 1.0


@pytest.mark.parametrize(("size", "average", "variation"), [(0, 1, 0), (1, 1, 0), (100, 10, 4), (65536, 7, 3), (5, 10, 2)])
def test_slice_offsets_cover_the_data_in_order_with_bounded_pieces(size: int, average: int, variation: int) -> None:
    cuts = slice_offsets(size, average, variation, random.Random(7))
    assert cuts[0] == 0 and cuts[-1] == size
    pieces = [b - a for a, b in zip(cuts, cuts[1:])]
    assert all(0 < p <= average + variation for p in pieces) or size == 0
    assert sorted(cuts) == cuts


def test_latency_jitter_stays_within_bounds() -> None:
    rng = random.Random(1)
    delays = {latency_delay_ms(100, 20, rng) for _ in range(2000)}
    assert min(delays) >= 80 and max(delays) < 120 and len(delays) > 30
    assert latency_delay_ms(5, 0, rng) == 5
    assert latency_delay_ms(0, 10, rng) >= 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), (":0", ("", 0)), ("[::1]:5432", ("::1", 5432)),
     ("localhost:6379", ("localhost", 6379))],
)
def test_addresses_parse(value: str, expected: tuple[str, int]) -> None:
    assert parse_address(value, "listen") == expected


@pytest.mark.parametrize("value", ["nowhere", "host:", "host:99999", "::1:80", "host:port"])
def test_bad_addresses_are_400(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_address(value, "upstream")
    assert caught.value.status == 400 and value in caught.value.message


def test_format_address_brackets_ipv6() -> None:
    assert format_address("::1", 80) == "[::1]:80"
    assert format_address("127.0.0.1", 80) == "127.0.0.1:80"


def test_proxy_input_defaults_and_update() -> None:
    created = parse_proxy_input({"name": "pg", "upstream": "127.0.0.1:5432"}, "127.0.0.1:0")
    assert created == ProxyInput("pg", "127.0.0.1:0", "127.0.0.1:5432", True)
    updated = parse_proxy_input({"enabled": False, "name": "other"}, "127.0.0.1:0", current=created)
    assert updated == ProxyInput("pg", "127.0.0.1:0", "127.0.0.1:5432", False)
    with pytest.raises(ApiError, match="missing required field: name"):
        parse_proxy_input({"upstream": "a:1"}, "127.0.0.1:0")
    with pytest.raises(ApiError, match="field 'enabled' must be a bool"):
        parse_proxy_input({"name": "x", "upstream": "a:1", "enabled": "yes"}, "127.0.0.1:0")


def test_http_head_parsing() -> None:
    method, target, version, headers = parse_head(
        b"POST /proxies/a%20b/toxics?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"
    )
    assert (method, version, headers["content-length"]) == ("POST", "HTTP/1.1", "2")
    assert path_segments(Request(method, target, headers).path) == ["proxies", "a b", "toxics"]
    with pytest.raises(BadRequest):
        parse_head(b"GARBAGE\r\n\r\n")
    with pytest.raises(BadRequest):
        parse_head(b"GET / HTTP/2\r\n\r\n")


def _call(api: Api, method: str, path: str, body: object = None) -> tuple[int, object]:
    raw = b"" if body is None else json.dumps(body).encode()
    response = asyncio.run(api.handle(Request(method, path, {}, raw)))
    return response.status, json.loads(response.body) if response.body else None


def test_api_routes_answer_with_toxiproxy_shapes_without_sockets() -> None:
    api = Api(ProxyCollection())
    assert _call(api, "GET", "/version") == (200, {"version": "2.12.0"})
    assert _call(api, "GET", "/proxies") == (200, {})
    created = {"name": "off", "upstream": "127.0.0.1:1", "listen": "127.0.0.1:0", "enabled": False}
    assert _call(api, "POST", "/proxies", created) == (
        201, {"name": "off", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "enabled": False, "toxics": []}
    )
    status, toxic = _call(api, "POST", "/proxies/off/toxics", {"type": "slow_close", "stream": "upstream"})
    assert status == 200 and toxic["name"] == "slow_close_upstream"
    assert _call(api, "GET", "/proxies/off/toxics")[1] == [toxic]
    assert _call(api, "DELETE", "/proxies/off/toxics/slow_close_upstream") == (204, None)
    assert _call(api, "PUT", "/proxies/off") == (405, {"error": "method PUT not allowed", "status": 405})
    assert _call(api, "GET", "/proxies/off/extra/path")[0] == 404
    assert _call(api, "POST", "/populate", {"not": "a list"})[0] == 400
    assert _call(api, "DELETE", "/proxies/off") == (204, None)
    assert _call(api, "DELETE", "/proxies/off") == (404, {"error": "proxy not found", "status": 404})


def test_browsers_are_refused() -> None:
    api = Api(ProxyCollection())
    response = asyncio.run(api.handle(Request("GET", "/proxies", {"user-agent": "Mozilla/5.0"})))
    assert response.status == 403
