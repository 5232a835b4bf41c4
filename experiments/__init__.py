"""The Chaos Toolkit experiments of the plan's cadences; installed as `harness.experiments` (profiles run them)."""
