"""The Gherkin drills; installed as `harness.features` (the tabletop validates them, `drill run` runs them)."""
