"""drill: a chaos-engineering and disaster-recovery drill harness (also a Chaos Toolkit extension)."""

__version__ = "0.2.0"

#: the modules whose public functions (`__all__`) are Chaos Toolkit activities
ACTIVITY_MODULES = (
    "harness.targets.postgres", "harness.targets.redis", "harness.targets.app", "harness.targets.router",
    "harness.targets.s3", "harness.targets.toxiproxy", "harness.targets.auth", "harness.failover", "harness.drill",
)


def discover(discover_system: bool = True) -> dict:
    """Chaos Toolkit discovery: every probe and action the harness exposes (and the lab, if one runs)."""
    import importlib
    import pkgutil

    from chaoslib.discovery.discover import discover_actions, discover_probes, initialize_discovery_result

    result = initialize_discovery_result("harness", __version__, "drill")
    for base in ACTIVITY_MODULES:
        pkg = importlib.import_module(base)
        names = [m.name for m in pkgutil.iter_modules(pkg.__path__)] if hasattr(pkg, "__path__") else []
        for name in names:
            mod = f"{base}.{name}"
            if name == "probes":
                result["activities"].extend(discover_probes(mod))
            elif name in ("actions", "region", "runbook", "failback"):
                result["activities"].extend(discover_actions(mod))
    if discover_system:
        try:
            from harness.lab.manager import Lab

            lab = Lab()
            result["system"] = lab.topology() if lab.is_running() else None
        except Exception:
            result["system"] = None
    return result
