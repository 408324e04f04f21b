"""The architecture's import rules, checked in fresh interpreters by inspecting sys.modules.

fed_coordinator never imports fed_agent (nor the demo scaffolding); fedapp imports neither; fed_common imports no
TensorFlow and no Flower; fed_agent imports no TensorFlow and not the coordinator. Every
submodule of the package is imported, so a stray import anywhere in it is caught.
"""

import ast
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
    ("fed_coordinator", {"fed_agent", "fed_demo"}),
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


ROOMS = {"service", "campaigns", "models", "deploy", "api", "fedctl"}
SHARED = {"__init__.py", "config.py", "state.py", "flower.py"}  # what every room uses


def test_coordinator_is_in_rooms_of_small_modules():
    """The server package is rooms by concern, with small modules and functions (the
    structure issue 8 asked for); a new flat module or a 400-line one fails here."""
    package = REPO / "coordinator" / "fed_coordinator"
    top_files = {path.name for path in package.glob("*.py")}
    assert top_files == SHARED, f"modules outside the rooms: {sorted(top_files - SHARED)}"
    assert {path.name for path in package.iterdir() if path.is_dir() and path.name != "__pycache__"} == ROOMS
    too_long = []
    for path in package.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 300:
            too_long.append(f"{path.relative_to(package)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{path.relative_to(package)}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, too_long
