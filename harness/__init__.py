"""drill: a chaos-engineering and disaster-recovery drill harness (also a Chaos Toolkit extension)."""

__version__ = "0.1.0"
