"""Chaos Toolkit style target adapters: probes (read only) and actions (mutating, each with a rollback) per system."""
