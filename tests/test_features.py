"""Binds the Gherkin drills in features/ to pytest (steps live in the steps/ package).

`drill run FILE.feature` sets DRILL_FEATURE to bind just that file.
"""

import os

import pytest
from pytest_bdd import scenarios

pytestmark = [pytest.mark.integration, pytest.mark.slow]

scenarios(os.environ.get("DRILL_FEATURE") or "../features")
