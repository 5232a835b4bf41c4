"""The fault proxy as a target: probes (proxy state) and guarded actions (toxics, link cuts), plus shared calls."""

from harness.targets.toxiproxy.ops import (add_toxic, clean, ensure_upstream, proxies, proxy, remove_toxic, reset,
                                           set_enabled, set_upstream)

__all__ = ["add_toxic", "clean", "ensure_upstream", "proxies", "proxy", "remove_toxic", "reset", "set_enabled",
           "set_upstream"]
