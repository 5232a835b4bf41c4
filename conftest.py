"""Root pytest configuration: the Gherkin steps load once, from the top-level steps package."""

from steps import PLUGINS

pytest_plugins = [f"steps.{name}" for name in PLUGINS]
