"""Environment files (docs/ENVIRONMENTS.md); installed as `harness.environments` so `--env NAME` finds them anywhere."""
