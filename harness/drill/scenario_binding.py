"""The pytest module `drill run FILE.feature` runs: binds the feature file named by $DRILL_FEATURE to the steps.

The steps (`harness.steps`) are loaded as pytest plugins by the runner, so a feature file anywhere binds to the
steps drill ships, with no conftest or tests/ of a checkout. Without $DRILL_FEATURE nothing is bound.
"""

from __future__ import annotations

import os

from pytest_bdd import scenarios

if os.environ.get("DRILL_FEATURE"):
    scenarios(os.environ["DRILL_FEATURE"])
