"""Binds every Gherkin drill in features/ to pytest (steps live in the steps/ package)."""

import pytest
from pytest_bdd import scenarios

pytestmark = [pytest.mark.integration, pytest.mark.slow]

scenarios("../features")
