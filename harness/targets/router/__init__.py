"""Region router target: probes (active region, state) and actions (manual flip, clear the override)."""
