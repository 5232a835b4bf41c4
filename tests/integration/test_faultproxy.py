"""The fault proxy driven as Toxiproxy: toxiproxy-python and chaostoolkit-toxiproxy against a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from tests.timing import poll, scaled

pytestmark = pytest.mark.integration

LOCAL = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


class _Echo(socketserver.BaseRequestHandler):
    #: short messages the echo server has sent back (a test polls for its own token instead of sleeping)
    echoed: list[bytes] = []

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while data := sock.recv(65536):
                if len(data) <= 256:
                    _Echo.echoed.append(data)
                sock.sendall(data)
        except OSError:
            pass


def echoed(token: bytes) -> bool:
    """True once the upstream echo server has answered `token` (it is then inside the proxy's downstream)."""
    return any(token in chunk for chunk in list(_Echo.echoed))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    """An upstream TCP echo server on loopback; yields `host:port`."""
    server = _Server((LOCAL, 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"{LOCAL}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def start_faultproxy(tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start the proxy process; returns it, its API port and the seconds until it answered."""
    port = free_port()
    log = open(tmp / f"faultproxy-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.lab.faultproxy", "--host", LOCAL, "--port", str(port), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    deadline = started + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fault proxy exited: {(tmp / f'faultproxy-{port}.log').read_text()}")
        try:
            socket.create_connection((LOCAL, port), timeout=0.2).close()
            return proc, port, time.monotonic() - started
        except OSError:
            time.sleep(0.01)
    proc.kill()
    raise AssertionError("fault proxy did not listen within 10 s")


def stop_faultproxy(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=5)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fault proxy process; yields its API base URL."""
    proc, port, _ = start_faultproxy(tmp_path_factory.mktemp("faultproxy"))
    yield f"http://{LOCAL}:{port}"
    assert stop_faultproxy(proc) == 0


@pytest.fixture
def toxiproxy(api: str) -> Iterator[Toxiproxy]:
    """A toxiproxy-python client on our server; every proxy is deleted afterwards."""
    client = Toxiproxy()
    host, port = api.removeprefix("http://").split(":")
    client.update_api_consumer(host, int(port))
    yield client
    client.destroy_all()


def address(listen: str) -> tuple[str, int]:
    host, port = listen.rsplit(":", 1)
    return host, int(port)


def connect(listen: str, timeout: float = 3.0) -> socket.socket:
    sock = socket.create_connection(address(listen), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Seconds to send `payload` and get it all back from the echo server."""
    started = time.perf_counter()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed during a round trip"
        got += chunk
    assert got == payload
    return time.perf_counter() - started


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything received until EOF, and the second at which EOF came."""
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got, time.perf_counter()


def test_version_and_a_created_proxy_forwards_data(toxiproxy: Toxiproxy, api: str, echo: str) -> None:
    assert json.loads(toxiproxy.version()) == {"version": "2.12.0"}
    assert requests.get(f"{api}/version").headers["Content-Type"].startswith("application/json")

    proxy = toxiproxy.create(upstream=echo, name="echo")
    assert proxy.enabled is True
    assert proxy.listen.startswith(f"{LOCAL}:") and not proxy.listen.endswith(":0")
    with connect(proxy.listen) as sock:
        round_trip(sock, b"hello through the proxy")
        round_trip(sock, os.urandom(300_000))

    listed = toxiproxy.proxies()
    assert set(listed) == {"echo"} and listed["echo"].upstream == echo
    shown = requests.get(f"{api}/proxies/echo").json()
    assert shown == {"name": "echo", "listen": proxy.listen, "upstream": echo, "enabled": True, "toxics": []}
    with pytest.raises(ProxyExists):
        toxiproxy.create(upstream=echo, name="echo")


def test_latency_toxic_raises_round_trip_on_a_live_connection_and_removal_restores_it(
    toxiproxy: Toxiproxy, echo: str
) -> None:
    proxy = toxiproxy.create(upstream=echo, name="lat")
    with connect(proxy.listen) as sock:
        base = min(round_trip(sock) for _ in range(5))
        proxy.add_toxic(type="latency", attributes={"latency": 200, "jitter": 0})
        toxic = proxy.toxics()["latency_downstream"]
        assert (toxic.stream, toxic.toxicity, toxic.attributes) == (
            "downstream", 1.0, {"latency": 200, "jitter": 0}
        )
        slowed = [round_trip(sock) for _ in range(2)]
        assert min(slowed) >= 0.2 > base * 10
        assert max(slowed) < 0.4
        proxy.destroy_toxic("latency_downstream")
        restored = min(round_trip(sock) for _ in range(3))
        assert restored < 0.05


def test_removing_latency_releases_data_already_delayed(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="release")
    proxy.add_toxic(type="latency", name="slow", attributes={"latency": 5000})
    token = b"held-" + os.urandom(4).hex().encode()
    with connect(proxy.listen, timeout=10) as sock:
        started = time.perf_counter()
        sock.sendall(token)
        poll(lambda: echoed(token), 3.0, "the echo answered (the answer now held by the latency toxic)", 0.01)
        proxy.destroy_toxic("slow")
        assert sock.recv(64) == token
        # released at once, well before the 5 s latency would have delivered it
        assert time.perf_counter() - started < 4.0


def test_updating_latency_applies_to_data_in_flight(toxiproxy: Toxiproxy, api: str, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="retune")
    proxy.add_toxic(type="latency", name="lag", attributes={"latency": 5000})
    token = b"retuned-" + os.urandom(4).hex().encode()
    with connect(proxy.listen, timeout=10) as sock:
        started = time.perf_counter()
        sock.sendall(token)
        poll(lambda: echoed(token), 3.0, "the echo answered (the answer now held by the latency toxic)", 0.01)
        requests.post(f"{api}/proxies/retune/toxics/lag", json={"attributes": {"latency": 300}})
        assert sock.recv(64) == token
        # the new 300 ms apply to the data in flight: well before the old 5 s
        assert 0.28 <= time.perf_counter() - started < 4.0


def test_a_streaming_connection_survives_toxics_coming_and_going_without_loss(
    toxiproxy: Toxiproxy, echo: str
) -> None:
    """A long-lived link (like WAL streaming): toxics change mid-stream, bytes stay exact and in order."""
    proxy = toxiproxy.create(upstream=echo, name="stream")
    payload = os.urandom(4_000_000)
    received = bytearray()
    with connect(proxy.listen, timeout=5) as sock:
        reader = threading.Thread(
            target=lambda: received.extend(read_until_closed(sock)[0]), daemon=True
        )
        reader.start()
        steps = [
            lambda: proxy.add_toxic(type="latency", name="lag", attributes={"latency": 20, "jitter": 10}),
            lambda: proxy.add_toxic(type="slicer", name="cut", stream="upstream",
                                    attributes={"average_size": 20000, "size_variation": 5000, "delay": 0}),
            lambda: proxy.add_toxic(type="bandwidth", name="bw", attributes={"rate": 20000}),
            lambda: proxy.destroy_toxic("lag"),
            lambda: proxy.destroy_toxic("cut"),
            lambda: proxy.destroy_toxic("bw"),
        ]
        view = memoryview(payload)
        step = len(payload) // (len(steps) + 1)
        for index, change in enumerate(steps):
            sock.sendall(view[index * step : (index + 1) * step])
            change()
        sock.sendall(view[len(steps) * step :])
        sock.shutdown(socket.SHUT_WR)
        reader.join(timeout=10)
    assert not reader.is_alive()
    assert len(received) == len(payload) and bytes(received) == payload
    assert proxy.toxics() == {}


def test_upstream_latency_and_zero_toxicity(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="updown")
    proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 150})
    proxy.add_toxic(type="latency", name="never", toxicity=0.0, attributes={"latency": 2000})
    with connect(proxy.listen) as sock:
        assert 0.15 <= round_trip(sock) < 0.5


def test_disable_drops_connections_and_refuses_new_ones_enable_restores(
    toxiproxy: Toxiproxy, echo: str
) -> None:
    proxy = toxiproxy.create(upstream=echo, name="flaky")
    live = connect(proxy.listen)
    round_trip(live)
    proxy.disable()
    try:
        assert live.recv(10) == b""
    except ConnectionResetError:
        pass
    live.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.listen)
    assert toxiproxy.get_proxy("flaky").enabled is False

    proxy.enable()
    assert toxiproxy.get_proxy("flaky").listen == proxy.listen  # same address again
    with connect(proxy.listen) as sock:
        round_trip(sock)
    with proxy.down(), pytest.raises(ConnectionRefusedError):
        connect(proxy.listen)
    with connect(proxy.listen) as sock:
        round_trip(sock)


def test_timeout_toxic_drops_data_then_closes(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="timeout")
    with connect(proxy.listen) as sock:
        round_trip(sock)
        started = time.perf_counter()
        proxy.add_toxic(type="timeout", attributes={"timeout": 300})
        sock.sendall(b"lost")
        got, closed_at = read_until_closed(sock)
        assert got == b""
        assert 0.25 <= closed_at - started < 1.5


def test_timeout_zero_holds_data_until_the_toxic_is_removed(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="hold")
    proxy.add_toxic(type="timeout", name="blackhole", stream="upstream", attributes={"timeout": 0})
    with connect(proxy.listen, timeout=0.3) as sock:
        sock.sendall(b"later")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.destroy_toxic("blackhole")
        sock.settimeout(2)
        assert sock.recv(10) == b"later"


def test_reset_peer_resets_the_connection_after_its_timeout(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="reset")
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 200})
    with connect(proxy.listen) as sock:
        started = time.perf_counter()
        sock.sendall(b"boom")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert 0.18 <= time.perf_counter() - started < 1.5


def test_limit_data_closes_after_the_byte_limit(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="limit")
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    with connect(proxy.listen) as sock:
        sock.sendall(b"0123456789abcdefghij" * 5)
        got, _ = read_until_closed(sock)
        assert got == b"0123456789"


def test_bandwidth_limits_throughput(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="narrow")
    payload = os.urandom(50_000)
    with connect(proxy.listen) as sock:
        assert round_trip(sock, payload) < 0.2
        proxy.add_toxic(type="bandwidth", attributes={"rate": 100})  # 100 KB/s
        assert 0.45 <= round_trip(sock, payload) < 1.2


def test_slicer_cuts_data_into_small_delayed_pieces(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="slices")
    proxy.add_toxic(
        type="slicer", attributes={"average_size": 10, "size_variation": 4, "delay": 20_000}
    )
    payload = bytes(range(100))
    with connect(proxy.listen) as sock:
        sock.sendall(payload)
        started = time.perf_counter()
        pieces: list[bytes] = []
        while sum(map(len, pieces)) < len(payload):
            pieces.append(sock.recv(65536))
        assert b"".join(pieces) == payload
        assert len(pieces) >= 5
        assert max(map(len, pieces)) <= 2 * 14
        assert time.perf_counter() - started >= 0.1


def test_slow_close_delays_the_close(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="slowclose")
    with connect(proxy.listen) as sock:
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        started = time.perf_counter()
        got, closed_at = read_until_closed(sock)
        assert got == b"bye" and closed_at - started < 0.2
    proxy.add_toxic(type="slow_close", attributes={"delay": 400})
    with connect(proxy.listen) as sock:
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        started = time.perf_counter()
        got, closed_at = read_until_closed(sock)
        assert got == b"bye"
        assert 0.38 <= closed_at - started < 1.5


def test_toxic_update_and_reset(toxiproxy: Toxiproxy, api: str, echo: str) -> None:
    proxy = toxiproxy.create(upstream=echo, name="resettable")
    proxy.add_toxic(type="latency", name="lag", attributes={"latency": 300})
    updated = requests.post(
        f"{api}/proxies/resettable/toxics/lag", json={"attributes": {"jitter": 10}, "toxicity": 0.5}
    )
    assert updated.status_code == 200
    assert updated.json() == {
        "attributes": {"latency": 300, "jitter": 10}, "name": "lag", "type": "latency",
        "stream": "downstream", "toxicity": 0.5,
    }
    assert requests.patch(
        f"{api}/proxies/resettable/toxics/lag", json={"attributes": {"latency": 0}}
    ).json()["attributes"] == {"latency": 0, "jitter": 10}
    proxy.disable()

    assert toxiproxy.reset() is True
    shown = requests.get(f"{api}/proxies/resettable").json()
    assert shown["enabled"] is True and shown["toxics"] == []
    with connect(proxy.listen) as sock:
        assert round_trip(sock) < 0.1


def test_populate_creates_keeps_and_replaces_proxies(toxiproxy: Toxiproxy, api: str, echo: str) -> None:
    port_a, port_b = free_port(), free_port()
    wanted = [
        {"name": "pop_a", "listen": f"{LOCAL}:{port_a}", "upstream": echo},
        {"name": "pop_b", "listen": f"{LOCAL}:{port_b}", "upstream": echo, "enabled": False},
    ]
    created = requests.post(f"{api}/populate", json=wanted)
    assert created.status_code == 201
    by_name = {p["name"]: p for p in created.json()["proxies"]}
    assert by_name["pop_a"]["enabled"] is True and by_name["pop_b"]["enabled"] is False
    with connect(f"{LOCAL}:{port_a}") as sock:
        round_trip(sock)
        requests.post(f"{api}/proxies/pop_a/toxics", json={"type": "latency", "attributes": {"latency": 1}})
        again = requests.post(f"{api}/populate", json=wanted[:1])  # unchanged: kept as it is
        assert again.status_code == 201
        assert again.json()["proxies"][0]["toxics"][0]["name"] == "latency_downstream"
        round_trip(sock)

    duplicate = requests.post(f"{api}/populate", json=[wanted[0], wanted[0]])
    assert duplicate.status_code == 400 and "duplicate" in duplicate.json()["error"]
    missing = requests.post(f"{api}/populate", json=[{"name": "x"}])
    assert missing.json() == {"error": "missing required field: upstream at proxy 1", "status": 400}


def test_bad_input_gets_toxiproxy_status_codes_and_json_errors(
    toxiproxy: Toxiproxy, api: str, echo: str
) -> None:
    toxiproxy.create(upstream=echo, name="strict")
    cases = [
        ("post", "/proxies/strict/toxics", {"type": "nope"}, 400, "invalid toxic type"),
        ("post", "/proxies/strict/toxics", {"type": "latency", "attributes": {"latency": "x"}},
         400, "bad request body: attribute 'latency' must be an integer, got 'x'"),
        ("post", "/proxies/strict/toxics", {"type": "latency", "stream": "sideways"}, 400,
         "stream was invalid, can be either upstream or downstream"),
        ("post", "/proxies/strict/toxics", {"type": "latency", "toxicity": 2}, 400,
         "bad request body: toxicity must be between 0 and 1, got 2"),
        ("post", "/proxies/nope/toxics", {"type": "latency"}, 404, "proxy not found"),
        ("get", "/proxies/nope", None, 404, "proxy not found"),
        ("delete", "/proxies/nope", None, 404, "proxy not found"),
        ("get", "/proxies/strict/toxics/nope", None, 404, "toxic not found"),
        ("delete", "/proxies/strict/toxics/nope", None, 404, "toxic not found"),
        ("post", "/proxies", {"name": "strict", "upstream": echo}, 409, "proxy already exists"),
        ("post", "/proxies", {"name": "noup"}, 400, "missing required field: upstream"),
        ("post", "/proxies", {"upstream": echo}, 400, "missing required field: name"),
        ("post", "/proxies", {"name": "badaddr", "upstream": "nowhere"}, 400,
         "bad request body: invalid upstream address 'nowhere': expected host:port"),
    ]
    for method, path, body, status, message in cases:
        response = getattr(requests, method)(f"{api}{path}", json=body)
        assert (response.status_code, response.json()) == (status, {"error": message, "status": status}), path

    bad_json = requests.post(f"{api}/proxies", data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"].startswith("bad request body: ")
    assert requests.post(f"{api}/proxies").json() == {"error": "bad request body: EOF", "status": 400}

    proxy = toxiproxy.get_proxy("strict")
    proxy.add_toxic(type="latency", attributes={"latency": 1})
    duplicate = requests.post(f"{api}/proxies/strict/toxics", json={"type": "latency"})
    assert duplicate.json() == {"error": "toxic already exists", "status": 409}
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="slicer", attributes={"average_size": 0})
    with pytest.raises(NotFound):
        proxy.destroy_toxic("nope")
    assert requests.put(f"{api}/proxies").status_code == 405
    assert requests.get(f"{api}/nothing").status_code == 404

    taken = free_port()
    with socket.socket() as holder:
        holder.bind((LOCAL, taken))
        holder.listen()
        busy = requests.post(f"{api}/proxies", json={"name": "busy", "listen": f"{LOCAL}:{taken}", "upstream": echo})
    assert busy.status_code == 500 and busy.json()["error"].startswith(f"listen tcp {LOCAL}:{taken}")
    assert "busy" not in toxiproxy.proxies()


def test_update_upstream_moves_new_connections(toxiproxy: Toxiproxy, api: str, echo: str) -> None:
    dead = f"{LOCAL}:{free_port()}"
    proxy = toxiproxy.create(upstream=dead, name="moving")
    with connect(proxy.listen) as sock:
        assert sock.recv(10) == b""  # upstream refused: the client is closed
    moved = requests.post(f"{api}/proxies/moving", json={"upstream": echo})
    assert moved.status_code == 200 and moved.json()["upstream"] == echo
    with connect(proxy.listen) as sock:
        round_trip(sock)


def test_chaostoolkit_toxiproxy_actions_drive_it(api: str, echo: str) -> None:
    from chaostoxi.proxy import actions as proxy_actions
    from chaostoxi.proxy import probes as proxy_probes
    from chaostoxi.toxic import actions as toxic_actions

    host, port = api.removeprefix("http://").split(":")
    configuration: dict[str, object] = {"toxiproxy_host": host, "toxiproxy_port": int(port)}
    upstream_host, upstream_port = echo.split(":")
    assert proxy_actions.create_proxy(
        proxy_name="ctk", upstream_host=upstream_host, upstream_port=int(upstream_port),
        listen_host=LOCAL, configuration=configuration,
    )
    listen = f"{LOCAL}:{configuration['ctk_PORT']}"
    try:
        assert proxy_probes.proxy_exist("ctk", configuration=configuration)
        assert proxy_probes.get_proxy_attribute("ctk", "upstream", configuration=configuration) == echo
        with connect(listen) as sock:
            assert min(round_trip(sock) for _ in range(3)) < 0.1
            assert toxic_actions.create_latency_toxic(
                for_proxy="ctk", toxic_name="ctk_lag", latency=200, configuration=configuration
            )
            assert round_trip(sock) >= 0.2
            assert toxic_actions.delete_toxic("ctk", "ctk_lag", configuration=configuration)
            assert round_trip(sock) < 0.1

        assert proxy_actions.disable_proxy("ctk", configuration=configuration)
        with pytest.raises(ConnectionRefusedError):
            connect(listen)
        assert proxy_actions.enable_proxy("ctk", configuration=configuration)
        with connect(listen) as sock:
            round_trip(sock)
        assert toxic_actions.create_limiter_toxic("ctk", "ctk_limit", 3, configuration=configuration)
        assert proxy_actions.reset(configuration=configuration)
        assert requests.get(f"{api}/proxies/ctk").json()["toxics"] == []
    finally:
        proxy_actions.delete_proxy("ctk", configuration=configuration)
    assert not proxy_probes.proxy_exist("ctk", configuration=configuration)
    with pytest.raises(ConnectionRefusedError):
        connect(listen)


def test_config_file_creates_proxies_at_start(tmp_path: Path, echo: str) -> None:
    listen = f"{LOCAL}:{free_port()}"
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "from_config", "listen": listen, "upstream": echo, "enabled": True}]))
    proc, port, startup_s = start_faultproxy(tmp_path, "--config", str(config))
    try:
        print(f"\n[figure] faultproxy_startup_s = {startup_s:.3f}")
        assert startup_s < scaled(5.0), f"fault proxy took {startup_s:.2f} s to listen"
        shown = requests.get(f"http://{LOCAL}:{port}/proxies").json()
        assert shown["from_config"]["listen"] == listen and shown["from_config"]["enabled"] is True
        with connect(listen) as sock:
            round_trip(sock)
    finally:
        assert stop_faultproxy(proc) == 0
    with pytest.raises(ConnectionRefusedError):
        connect(listen)


def test_bad_config_file_fails_fast(tmp_path: Path) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "broken"}]))
    result = subprocess.run(
        [sys.executable, "-m", "harness.lab.faultproxy", "--port", str(free_port()), "--config", str(config)],
        capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 2
    assert "missing required field: upstream at proxy 1" in result.stderr
    assert "Traceback" not in result.stderr
