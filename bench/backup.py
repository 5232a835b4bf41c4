"""Benchmark: the harness's backup and restore against the plain tools on a database of at least 1 GB.

Backup throughput is `drill`'s pg_dump streamed to S3 (hash, multipart upload to moto, sha256 set, DynamoDB record)
as a ratio to a plain `pg_dump -Fc > /dev/null` of the same database in the same run (goal >= 0.9); restore
throughput is the harness's restore (download, sha256 + pg_restore --list verification, pg_restore --jobs 2 into a
new database) as a ratio to a plain `pg_restore -j 2` of the same dump file (goal >= 0.8); the harness's peak RSS is
measured in a child process that runs only the backup (then only the restore): getrusage(RUSAGE_SELF).ru_maxrss
(goal <= 300 MB). The integrity checks after a restore are timed apart (they are not restore throughput).

    python bench/backup.py [--vouchers 2000000] [--min-gb 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from integrity import build, throwaway_postgres  # noqa: E402 - the bench's own throwaway server and data

from harness.lab import aws, procs  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from harness.backup import dump
from harness.lab import paths
from harness.lab.postgres import runtime
args = json.loads(sys.argv[1])
rt = runtime(paths.install_cache_root())
t0 = time.perf_counter()
if args["op"] == "backup":
    info = dump.create(args["dsn"], pg_runtime=rt, endpoint_url=args["endpoint"])
    out = {"key": info.key, "size": info.size}
else:
    res = dump.restore(args["key"], args["into"], dsn=args["dsn"], pg_runtime=rt, endpoint_url=args["endpoint"],
                       configuration={"drill_approvals": ["data_restore_from_backup"],
                                      "drill_state_dir": args["state"]}, integrity_checks=False)
    out = {"ok": res.verification.ok, "reason": res.verification.reason}
out["seconds"] = time.perf_counter() - t0
out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(op: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(op)], capture_output=True, text=True, timeout=7200)
    if r.returncode != 0:
        raise SystemExit(f"harness {op['op']} failed: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def timed(rt, name: str, args: list[str], stdout=subprocess.DEVNULL) -> float:
    t0 = time.perf_counter()
    p = rt.popen(name, args, stdout=stdout)
    err = p.stderr.read().decode(errors="replace")
    if p.wait() != 0:
        raise SystemExit(f"{name} failed: {err.strip()[-500:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vouchers", type=int, default=2_000_000)
    ap.add_argument("--min-gb", type=float, default=1.0)
    a = ap.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="drill-bench-backup-"))
    moto_port = procs.free_ports(1)[0]
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{moto_port}"
    try:
        with throwaway_postgres() as node:
            rt = node.rt
            with psycopg.connect(node.admin_dsn(), autocommit=True) as c:
                c.execute("CREATE DATABASE kerp")
            t0 = time.perf_counter()
            with psycopg.connect(node.dsn) as c:
                build(c, a.vouchers, min(1000, a.vouchers // 50))
                c.commit()
            with psycopg.connect(node.dsn, autocommit=True) as c:
                c.execute("VACUUM ANALYZE")
                size = c.execute("SELECT pg_database_size('kerp')").fetchone()[0]
            print(f"database: {size / 2**30:.2f} GiB ({a.vouchers} vouchers) built in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            if size < a.min_gb * 2**30:
                print(f"WARNING: below {a.min_gb} GiB; raise --vouchers", flush=True)
            procs.wait_until(lambda: procs.port_open(moto_port), 30)
            aws.provision(endpoint)
            print(f"load average before: {os.getloadavg()}", flush=True)
            plain_dump = timed(rt, "pg_dump", ["-Fc", "-d", node.dsn])
            print(f"plain pg_dump -Fc > /dev/null: {plain_dump:.1f} s", flush=True)
            b = child({"op": "backup", "dsn": node.dsn, "endpoint": endpoint})
            print(f"harness backup: {b['seconds']:.1f} s, {b['size'] / 2**20:.0f} MiB dump, "
                  f"peak RSS {b['maxrss_mb']:.0f} MB", flush=True)
            # the plain restore's input: the same dump file, on local disk
            with tempfile.TemporaryDirectory(prefix="drill-bench-dump-") as tmp:
                Path(tmp).chmod(0o755)
                f = Path(tmp) / "kerp.dump"
                aws.client("s3", endpoint).download_file(aws.BUCKET, b["key"], str(f))
                f.chmod(0o644)
                with psycopg.connect(node.admin_dsn(), autocommit=True) as c:
                    c.execute("CREATE DATABASE plain_restore TEMPLATE template0")
                plain_restore = timed(rt, "pg_restore", ["--no-owner", "--no-acl", "-j", "2", "-d",
                                                         node.admin_dsn("plain_restore"), str(f)])
            print(f"plain pg_restore -j 2: {plain_restore:.1f} s", flush=True)
            with psycopg.connect(node.admin_dsn(), autocommit=True) as c:
                c.execute("DROP DATABASE plain_restore")
            r = child({"op": "restore", "key": b["key"], "into": "harness_restore", "dsn": node.dsn,
                       "endpoint": endpoint, "state": str(state)})
            if not r["ok"]:
                raise SystemExit(f"harness restore failed verification: {r['reason']}")
            print(f"harness restore: {r['seconds']:.1f} s, peak RSS {r['maxrss_mb']:.0f} MB", flush=True)
            print(f"load average after: {os.getloadavg()}", flush=True)
            result = {"database_bytes": size, "dump_bytes": b["size"],
                      "plain_pg_dump_s": round(plain_dump, 2), "harness_backup_s": round(b["seconds"], 2),
                      "backup_ratio": round(plain_dump / b["seconds"], 3),
                      "plain_pg_restore_j2_s": round(plain_restore, 2), "harness_restore_s": round(r["seconds"], 2),
                      "restore_ratio": round(plain_restore / r["seconds"], 3),
                      "peak_rss_mb": round(max(b["maxrss_mb"], r["maxrss_mb"]), 1)}
            print(json.dumps(result, indent=2))
            ok = result["backup_ratio"] >= 0.9 and result["restore_ratio"] >= 0.8 and result["peak_rss_mb"] <= 300
            print("goals met" if ok else "goals NOT met (backup >= 0.9, restore >= 0.8, RSS <= 300 MB)")
            return 0 if ok else 1
    finally:
        moto.terminate()
        moto.wait(10)


if __name__ == "__main__":
    sys.exit(main())
