"""Valkey operations on clients passed in: role, promote, link a replica, wait for sync, controlled switchover."""

from __future__ import annotations

import time
from typing import Any, Callable

from harness.errors import LabError
from harness.targets._lab import wait_for

Client = Callable[[], Any]  # returns a redis.Redis (decode_responses=True)


def replication(client: Any) -> dict[str, Any]:
    return client.info("replication")


def role(client: Any) -> str:
    """"master", "slave" or "down"."""
    try:
        return str(replication(client).get("role", "down"))
    except Exception:
        return "down"


def linked(client: Any, port: int) -> bool:
    """A replica of `port` with its link up and no sync in progress."""
    info = replication(client)
    return (info.get("role") == "slave" and int(info.get("master_port", -1)) == port
            and info.get("master_link_status") == "up" and not int(info.get("master_sync_in_progress", 0)))


def promote(client: Any) -> bool:
    """REPLICAOF NO ONE; returns False when it already was a master."""
    if replication(client).get("role") == "master":
        return False
    client.execute_command("REPLICAOF", "NO", "ONE")
    return True


def replicate(client: Any, port: int, timeout: float = 15.0) -> None:
    """REPLICAOF 127.0.0.1 `port` (unless already) and wait until the link is up and synced."""
    info = replication(client)
    if not (info.get("role") == "slave" and int(info.get("master_port", -1)) == port):
        client.execute_command("REPLICAOF", "127.0.0.1", str(port))
    wait_for(lambda: linked(client, port), timeout, f"Valkey replica linked to port {port}")


def wait_offsets(master: Any, replica: Any, timeout: float = 10.0) -> int:
    """Wait until the replica has processed the master's current replication offset."""
    target = int(replication(master).get("master_repl_offset", 0))
    wait_for(lambda: int(replication(replica).get("slave_repl_offset", -1)) >= target, timeout,
             f"Valkey replica at offset {target}")
    return target


def switchover(old_master: Any, new_master: Any, old_link_port: int, timeout: float = 15.0) -> dict[str, Any]:
    """Controlled switchover: pause writes on the old master, wait for the replica, promote it, re-point the old one."""
    t0 = time.monotonic()
    if role(new_master) != "slave":
        raise LabError(f"switchover needs the new master to be a replica, it is {role(new_master)!r}")
    old_master.execute_command("CLIENT", "PAUSE", str(int(timeout * 1000)), "WRITE")
    try:
        offset = wait_offsets(old_master, new_master, timeout)
        promote(new_master)
        old_master.execute_command("REPLICAOF", "127.0.0.1", str(old_link_port))
    finally:
        try:
            old_master.execute_command("CLIENT", "UNPAUSE")
        except Exception:
            pass
    wait_for(lambda: linked(old_master, old_link_port), timeout, f"Valkey old master linked to port {old_link_port}")
    return {"offset": offset, "seconds": round(time.monotonic() - t0, 3)}
