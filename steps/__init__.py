"""pytest-bdd steps of the drills in features/ (installed as `harness.steps`; `drill run X.feature` binds them)."""

#: the modules holding step definitions and hooks, loaded as pytest plugins (by the root conftest of a checkout,
#: and by `drill run X.feature`); `timing` is a helper they import
PLUGINS = ("common", "region_failover", "component_faults", "region_catalog", "data_disasters",
           "security_breach", "zones")
