"""The lab's metrics endpoint: the detector's latest sample as Prometheus gauges (`kerp_disaster_level{region}`, one per indicator).

Like a Prometheus Pushgateway: the detector (one implementation, in the failover layer) PUTs each sample as
JSON to `/detector`; `GET /metrics` serves the text exposition of the latest one, with its timestamp
(`kerp_detector_last_sample_timestamp_seconds`), so a scraper sees how old it is. Run as
`python -m harness.lab.metrics --host 127.0.0.1 --port P`.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from harness.lab.stdserve import serve_main

__all__ = ["render", "MetricsServer", "main"]


def _families(sample: Mapping[str, Any]) -> list[GaugeMetricFamily]:
    region = str(sample.get("region") or "unknown")
    level = GaugeMetricFamily("kerp_disaster_level", "Disaster level of the plan (0 normal .. 4 catastrophic), from "
                              "the weighted health indicators", labels=["region"])
    level.add_metric([region], float(sample.get("level", math.nan)))
    weight = GaugeMetricFamily("kerp_detector_failed_weight", "Sum of the weights of the failed indicators",
                               labels=["region"])
    weight.add_metric([region], float(sample.get("failed_weight", math.nan)))
    out = [level, weight]
    for name, ind in (sample.get("indicators") or {}).items():
        healthy = ind.get("healthy") if isinstance(ind, Mapping) else None
        g = GaugeMetricFamily(f"kerp_indicator_{name}",
                              f"Indicator {name} (weight {ind.get('weight') if isinstance(ind, Mapping) else '?'}): "
                              f"1 healthy, 0 failed, NaN unknown", labels=["region"])
        g.add_metric([region], math.nan if healthy is None else (1.0 if healthy else 0.0))
        out.append(g)
    if sample.get("t") is not None:
        ts = GaugeMetricFamily("kerp_detector_last_sample_timestamp_seconds", "When the detector took this sample",
                               labels=["region"])
        ts.add_metric([region], float(sample["t"]))
        out.append(ts)
    return out


class _Collector:
    def __init__(self, sample: Mapping[str, Any] | None) -> None:
        self.sample = sample

    def collect(self):  # noqa: ANN201 - prometheus_client collector protocol
        return _families(self.sample) if self.sample else []


def render(sample: Mapping[str, Any] | None) -> bytes:
    """The Prometheus text exposition of one detector sample (`LevelSample.to_dict()`); empty without one."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(sample))
    return generate_latest(reg)


class MetricsServer(ThreadingHTTPServer):
    """Keeps the latest pushed sample; serves it at /metrics."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.sample: dict[str, Any] | None = None


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet: the lab keeps logs small
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/metrics":
            with self.server.lock:
                sample = self.server.sample
            self._send(200, render(sample), CONTENT_TYPE_LATEST)
        elif self.path == "/detector":
            with self.server.lock:
                sample = self.server.sample
            self._send(200 if sample else 404, json.dumps(sample or {"error": "no sample yet"}).encode())
        elif self.path == "/health":
            self._send(200, b'{"ok": true}')
        else:
            self._send(404, b'{"error": "not found"}')

    def do_PUT(self) -> None:  # noqa: N802
        if self.path != "/detector":
            self._send(404, b'{"error": "not found"}')
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
            doc = json.loads(self.rfile.read(n) or b"null")
            if not isinstance(doc, dict) or not isinstance(doc.get("level"), int):
                raise ValueError("a detector sample needs an integer 'level'")
        except (ValueError, TypeError) as e:
            self._send(400, json.dumps({"error": str(e)}).encode())
            return
        with self.server.lock:
            self.server.sample = doc
        self._send(204, b"")


def main(argv: list[str] | None = None) -> int:
    return serve_main(MetricsServer, "python -m harness.lab.metrics", "lab metrics endpoint", argv)


if __name__ == "__main__":
    sys.exit(main())
