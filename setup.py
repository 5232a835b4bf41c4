"""Build script: which packages the distribution holds, and where the shipped top-level folders go.

Metadata and dependencies are in pyproject.toml. The checkout keeps `experiments/`, `features/`,
`steps/` and `environments/` at its top level; they are installed as `harness.experiments`, `harness.features`,
`harness.steps` and `harness.environments`, so an installed drill runs its profiles and binds feature files from any directory
(an editable install maps the same names back onto the checkout's folders).
"""

from setuptools import find_namespace_packages, setup

#: import name in the installed package -> folder at the top of the checkout
SHIPPED = {"harness.experiments": "experiments", "harness.features": "features", "harness.steps": "steps",
           "harness.environments": "environments"}

setup(
    packages=find_namespace_packages(include=["harness", "harness.*"], exclude=["*.__pycache__"]) + list(SHIPPED),
    package_dir=SHIPPED,
)
