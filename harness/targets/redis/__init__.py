"""Redis/Valkey target: probes (role) and actions (kill the primary, promote the replica, rejoin as replica)."""
