"""The dependency rule of DESIGN.md: the import-linter contracts in pyproject.toml hold, and they catch
what they are meant to (checked on a copy of the package with one violation added); the core runs
without Qt or torch loaded."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

CONTRACTS = {
    "layers": "Lower layers never import higher ones",
    "session": "The session (the open study) and the simulator do not know each other",
    "net": "DICOM networking is reached from the GUI only",
    "qt": "Qt only in liverview.gui and liverview/app.py",
    "torch": "torch and torchvision only in liverview.model",
    "model": "The model package, bottom to top",
}


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def _contract_states(output: str) -> dict[str, str]:
    """{contract id: "KEPT" | "BROKEN"} from lint-imports' summary (a contract's name may wrap over lines)."""
    flat = " ".join(output.split())
    states = {}
    for key, name in CONTRACTS.items():
        start = flat.find(name)
        assert start >= 0, f"contract {key!r} missing from the lint-imports report:\n{output}"
        rest = flat[start:]
        kept, broken = rest.find(" KEPT"), rest.find(" BROKEN")
        states[key] = "BROKEN" if broken >= 0 and (kept < 0 or broken < kept) else "KEPT"
    return states


def test_the_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(_contract_states(result.stdout).values()) == {"KEPT"}


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    """The package and its contracts, copied, for a violation to be added to."""
    shutil.copytree(ROOT / "liverview", tmp_path / "liverview", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n" + text)


VIOLATIONS = {
    "relative import of a higher layer": ("liverview/io/_violation.py", "from ..gui import main_window\n", "layers"),
    "import inside a function": ("liverview/imaging/_violation.py",
                                 "def f():\n    from liverview.annotations import labels\n    return labels\n", "layers"),
    "Qt in the core": ("liverview/annotations/_violation.py", "from PySide6.QtCore import QObject\n", "qt"),
    "pyqtgraph in the model": ("liverview/model/transforms.py", "def f():\n    import pyqtgraph\n", "qt"),
    "torch outside the model": ("liverview/io/_violation.py", "def f():\n    import torch\n", "torch"),
    "a cycle inside the model": ("liverview/model/bundle_format.py", "def f():\n    from . import report\n", "model"),
    "two model modules of one layer": ("liverview/model/split.py", "from liverview.model import domain\n", "model"),
    "a model module in no layer": ("liverview/model/helpers.py", "X = 1\n", "model"),
    "the session imports the model": ("liverview/session/__init__.py", "from liverview.model import inference\n",
                                      "layers"),
    "the session imports the simulator": ("liverview/session/__init__.py", "import liverview.synth\n", "session"),
    "networking imports imaging": ("liverview/net/__init__.py", "from liverview.imaging import window\n", "layers"),
    "annotations import networking": ("liverview/annotations/_violation.py", "import liverview.net.echo\n", "net"),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_a_violation_breaks_its_contract(package_copy: Path, name: str):
    path, code, contract = VIOLATIONS[name]
    if contract == "net" or "net/" in path:
        _add(package_copy, "liverview/net/__init__.py", "")
        _add(package_copy, "liverview/net/echo.py", "from liverview.io import volume\n")
    _add(package_copy, path, code)
    result = _lint_imports(package_copy)
    states = _contract_states(result.stdout)
    assert result.returncode != 0 and states[contract] == "BROKEN", result.stdout + result.stderr
    assert [key for key, state in states.items() if state == "BROKEN"] == [contract], result.stdout


def test_the_packages_yet_to_come_are_held_to_their_rules(package_copy: Path):
    """liverview.net and liverview.session may not exist yet; once they do, importing what DESIGN.md
    allows keeps every contract."""
    _add(package_copy, "liverview/net/__init__.py", "from liverview.io import volume\n")
    _add(package_copy, "liverview/session/__init__.py",
         "from liverview.io import volume\nfrom liverview.imaging import window\nfrom liverview.annotations import store\n")
    _add(package_copy, "liverview/gui/_uses_them.py", "import liverview.net\nimport liverview.session\n")
    result = _lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_imports_without_qt_or_torch():
    """At run time too (lint-imports does not see imports by name, such as the model package's lazy ones)."""
    code = ("import sys, liverview.io, liverview.imaging, liverview.imaging.inspect_cli, liverview.paths, "
            "liverview.model\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'PySide6', 'pyqtgraph', 'torch', 'torchvision'})\n"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
