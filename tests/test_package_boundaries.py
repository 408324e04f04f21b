"""The architecture's import rules, checked in fresh interpreters by inspecting sys.modules.

fed_coordinator never imports fed_agent; fedapp imports neither; fed_common imports no
TensorFlow and no Flower; fed_agent imports no TensorFlow and not the coordinator. Every
submodule of the package is imported, so a stray import anywhere in it is caught.
"""

import json
import subprocess
from importlib.metadata import requires

import pytest

from conftest import AGENT_PYTHON, REPO, needs_agent_venv

COORDINATOR_PYTHON = REPO / ".venv" / "bin" / "python"
PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module({package!r})
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(module.name)
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def imported_by(package: str, python=COORDINATOR_PYTHON) -> set[str]:
    out = subprocess.run([str(python), "-c", PROBE.format(package=package)], capture_output=True,
                         text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("package, forbidden", [
    ("fed_common", {"tensorflow", "keras", "flwr", "fed_agent", "fed_coordinator", "fedapp"}),
    ("fedapp", {"tensorflow", "keras", "fed_agent", "fed_coordinator"}),
    ("fed_coordinator", {"fed_agent"}),
])
def test_package_imports_nothing_it_must_not(package, forbidden):
    modules = imported_by(package)
    assert package in modules  # the probe really imported it
    assert not modules & forbidden, f"{package} imports {sorted(modules & forbidden)}"


@needs_agent_venv
def test_agent_imports_neither_tensorflow_nor_the_coordinator():
    modules = imported_by("fed_agent", AGENT_PYTHON)
    assert "fed_common" in modules
    assert not modules & {"tensorflow", "keras", "fed_coordinator"}


def test_coordinator_distribution_does_not_depend_on_the_agent():
    names = [req.split(";")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
             for req in requires("fed-coordinator") or []]
    assert "fed-common" in names and "fedapp" in names
    assert "fed-agent" not in names and "fed_agent" not in names
