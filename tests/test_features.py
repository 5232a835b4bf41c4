"""Binds the Gherkin drills in features/ to pytest (steps live in the steps/ package, loaded by the root conftest).

`drill run FILE.feature` binds one file through harness/drill/scenario_binding.py instead.
"""

import pytest
from pytest_bdd import scenarios

pytestmark = [pytest.mark.integration, pytest.mark.slow]

scenarios("../features")
