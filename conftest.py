"""Root pytest configuration: the Gherkin steps load once, from the top-level steps package."""

pytest_plugins = ["steps.common", "steps.region_failover"]
