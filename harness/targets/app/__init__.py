"""K-ERP app target: probes (health through the global endpoint, every service) and actions (scale, kill a replica)."""
