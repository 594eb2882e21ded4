"""The dependency rule of DESIGN.md, checked on the source: Qt only in the GUI, torch only in the model
layer, and lower layers never import higher ones."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "liverview"
QT = {"PySide6", "pyqtgraph", "PyQt5", "PyQt6", "shiboken6"}
TORCH = {"torch", "torchvision"}
RANK = {"io": 0, "imaging": 1, "net": 1, "synth": 2, "annotations": 2, "model": 3, "gui": 4}
# synth (the simulator) sits beside annotations: it may use io/imaging/annotations, never model/gui.
ALLOWED_SAME_RANK = {("synth", "annotations")}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _layer(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        layer = _layer(path)
        in_gui = layer == "gui" or rel.as_posix() in ("liverview/app.py", "liverview/__main__.py")
        for name in _imports(path):
            top = name.split(".")[0]
            if top in QT and not in_gui:
                found.append(f"{rel}: imports {name} (Qt belongs in liverview/gui)")
            if top in TORCH and layer != "model":
                found.append(f"{rel}: imports {name} (torch belongs in liverview/model)")
            if top == "liverview" and layer in RANK:
                parts = name.split(".")
                target = parts[1] if len(parts) > 1 else None
                if target in RANK and target != layer and RANK[target] >= RANK[layer] \
                        and (layer, target) not in ALLOWED_SAME_RANK:
                    found.append(f"{rel}: {layer} imports higher layer {name}")
    return found


def test_dependency_rule_holds():
    assert _violations() == []


def test_rule_detects_a_violation(tmp_path, monkeypatch):
    """The checker itself must fail on a Qt import in the core (guards against a vacuous test)."""
    fake = tmp_path / "liverview"
    (fake / "io").mkdir(parents=True)
    (fake / "io" / "bad.py").write_text("from PySide6.QtCore import QObject\nimport torch\nfrom liverview.gui import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert len(_violations()) == 3


def test_core_imports_without_qt_or_torch():
    code = ("import sys, liverview.io, liverview.imaging, liverview.imaging.inspect_cli, liverview.paths\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'PySide6', 'pyqtgraph', 'torch', 'torchvision'})\n"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
