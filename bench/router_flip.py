"""Benchmark of the router's failover delay: time from a primary going unhealthy to the flip, N rounds.

Route 53 semantics: the flip comes after `failure_threshold` failed checks, i.e. between
(threshold - 1) x interval and threshold x interval after the change (plus one check's time).
Prints every round, the median and PASS/FAIL against [(threshold - 1) x interval, (threshold + 1) x interval]
(the integration test keeps only a generous upper bound; the precise figure is measured here).

    python bench/router_flip.py [--rounds 5] [--interval 0.2] [--threshold 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration._backends import Backend, start_router, stop  # noqa: E402


def flips(router: str) -> list[dict]:
    return httpx.get(router + "/_router/state", timeout=2.0).json()["flips"]


def wait_flips(router: str, count: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = flips(router)
        if len(got) >= count:
            return got[count - 1]
        time.sleep(0.01)
    raise SystemExit(f"no flip {count} within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--threshold", type=int, default=3)
    args = ap.parse_args(argv)
    lo, hi = (args.threshold - 1) * args.interval, (args.threshold + 1) * args.interval
    with tempfile.TemporaryDirectory(prefix="drill-bench-flip-") as tmp:
        work = Path(tmp)
        p0, d0 = Backend("p0", work), Backend("d0", work)
        router_proc = None
        try:
            p0.wait(), d0.wait()
            router_proc, router = start_router({
                "regions": {"primary": {"role": "PRIMARY", "targets": [p0.url]},
                            "dr": {"role": "SECONDARY", "targets": [d0.url]}},
                "health_check": {"path": "/health", "interval_s": args.interval,
                                 "failure_threshold": args.threshold, "timeout_s": 0.5},
                "ttl_s": 0}, work)
            delays = []
            for i in range(args.rounds):
                n = len(flips(router))
                t0 = time.time()
                p0.set_health(False)
                over = wait_flips(router, n + 1)["at_epoch"] - t0
                t1 = time.time()
                p0.set_health(True)
                back = wait_flips(router, n + 2)["at_epoch"] - t1
                delays += [over, back]
                print(f"round {i + 1}: failover {over:.3f} s, failback {back:.3f} s")
        finally:
            if router_proc is not None:
                stop(router_proc)
            p0.stop()
            d0.stop()
    med = statistics.median(delays)
    ok = all(lo <= d <= hi for d in delays)
    print(f"flip delay: median {med:.3f} s, min {min(delays):.3f} s, max {max(delays):.3f} s "
          f"(bounds [{lo:.1f}, {hi:.1f}] s): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
