"""Region router of the lab: Route 53 style failover routing, health checks, admin API, reverse proxy."""

from harness.lab.router.app import RegionRouter, RouterError, load_config
from harness.lab.router.logic import RouterConfig, RoutingTable, TargetHealth, choose_region

__all__ = ["RegionRouter", "RouterConfig", "RouterError", "RoutingTable", "TargetHealth", "choose_region", "load_config"]
