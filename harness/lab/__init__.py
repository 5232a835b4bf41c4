"""The embedded two-region lab: real servers on loopback, started and stopped by `drill lab`."""
