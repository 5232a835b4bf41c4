"""pytest-bdd step definitions for the drills in features/ (loaded once from the root conftest)."""
