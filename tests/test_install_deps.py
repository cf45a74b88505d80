"""issue 22, 5: a plain install runs ``divaext demo``. Every third-party distribution the demo
imports (its workflows, estimators and plots) must come with divaext's own ``dependencies``
in pyproject.toml (directly or as a dependency of one), not only with an extra."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `divaext demo`'s imports (python/divaext/demo.py) in a fresh interpreter in which only the
# distributions that `pip install .` brings can be imported: every other installed one (the
# extras, the test tools) is hidden, as in a fresh venv. Packages that import what they find
# (torch, scikit-learn take pandas or tqdm when present) then simply do without.
_PROBE = """
import json, sys
from importlib.metadata import packages_distributions
allowed = set(json.loads(sys.argv[1])) | {"divaext"}
owners = packages_distributions()

class Hide:
    def find_spec(self, name, path=None, target=None):
        dists = owners.get(name.split(".")[0])
        if dists and not any(d.lower().replace("_", "-") in allowed for d in dists):
            raise ModuleNotFoundError(f"{name} (from {dists}) is not installed by pip install .", name=name)
        return None

sys.meta_path.insert(0, Hide())
import divaext.demo, divaext.estimator, divaext.workflows, divaext.plots as P
P.require_matplotlib()
import matplotlib.pyplot
"""


def _name(requirement: str) -> str:
    return re.split(r"[ <>=!~;\\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _closure(names) -> set:
    """The distributions installed with ``names``: their requirements without extras, recursively."""
    from importlib.metadata import PackageNotFoundError, requires

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if "extra ==" not in r]
    return seen


def test_the_demo_needs_nothing_beyond_the_dependencies():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = [_name(r) for r in tomllib.load(f)["project"]["dependencies"]]
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(sorted(_closure(deps)))], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"divaext demo needs more than `pip install .` installs:\n{out.stderr[-1500:]}"
