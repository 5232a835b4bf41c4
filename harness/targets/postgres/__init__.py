"""PostgreSQL target: probes (roles, replication lag) and actions (kill, stop, pause, promote, cut replication, rejoin)."""
