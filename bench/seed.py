"""Benchmark of the K-ERP seed: `seed(scale=1)` into a fresh database, N rounds (target <= 1 s at scale 1).

The integration test only keeps a generous sanity bound; the speed figure is measured here.

    python bench/seed.py [--rounds 5] [--scale 1] [--target 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from integrity import throwaway_postgres  # noqa: E402 - the bench's own throwaway server

from harness.lab.kerp import seed as kseed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--target", type=float, default=1.0, help="seconds, median of the rounds")
    args = ap.parse_args(argv)
    samples = []
    with throwaway_postgres() as node:
        for i in range(args.rounds):
            name = f"seed_bench_{i}"
            with psycopg.connect(node.admin_dsn(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
            with psycopg.connect(node.admin_dsn(name)) as conn:
                kseed.apply_schema(conn)
                conn.commit()
                t0 = time.perf_counter()
                counts = kseed.seed(conn, scale=args.scale)
                conn.commit()
                samples.append(time.perf_counter() - t0)
            print(f"round {i + 1}: seed at scale {args.scale} in {samples[-1]:.3f} s ({counts['vouchers']} vouchers)")
            with psycopg.connect(node.admin_dsn(), autocommit=True) as admin:
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    median = statistics.median(samples)
    ok = median <= args.target
    print(f"seed scale {args.scale}: median {median:.3f} s, max {max(samples):.3f} s "
          f"(target <= {args.target:.1f} s): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
