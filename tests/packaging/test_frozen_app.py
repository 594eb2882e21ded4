"""Build the desktop application with PyInstaller (as `make package` does) and run what was built.

Always builds afresh into a temporary folder, so the test never passes on a stale dist/. Takes
about two minutes on two cores (PyInstaller's analysis of torch dominates).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from liverview.paths import default_model_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
BUDGET_BYTES = 1.2e9


@pytest.fixture(scope="module")
def built_app(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pyinstaller")
    pyinstaller = Path(sys.executable).with_name("pyinstaller")
    result = subprocess.run([str(pyinstaller), "--noconfirm", "--clean", "--distpath", str(work / "dist"),
                             "--workpath", str(work / "build"), str(REPO / "packaging" / "liverview.spec")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    return work / "dist" / "liverview"


@pytest.fixture(scope="module")
def model_env(request) -> dict[str, str]:
    """The bundled model when the source tree has one; else an untrained MobileNetV3 bundle (still
    exercising torchvision inside the frozen app), said loudly."""
    if (default_model_path() / "model.json").is_file():
        return {}
    warnings.warn(f"no model bundle at {default_model_path()}: the frozen self-test used an untrained stand-in",
                  stacklevel=1)
    return {"LIVERVIEW_MODEL": str(request.getfixturevalue("mobilenet_bundle"))}


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "LIVERVIEW_MODEL", "PYTHONPATH")}
    return env | {"LIVERVIEW_DATA_DIR": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")} | extra


def test_self_test_of_the_built_application(built_app, model_env, tmp_path):
    out = tmp_path / "self-test.json"
    env = clean_env(tmp_path, QT_QPA_PLATFORM="offscreen", **model_env)
    result = subprocess.run([str(built_app / "liverview"), "--self-test", "--out", str(out)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True, report["error"]
    assert report["frozen"] is True
    assert report["device"] == "cpu"
    assert report["predicted"] in report["model"]["classes"]
    assert sum(report["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    if not model_env:
        assert Path(report["model"]["path"]).is_relative_to(built_app)
    # User data goes to the per-user folder, never into the application folder.
    assert (tmp_path / "data" / "logs" / "liverview.log").is_file()
    assert (tmp_path / "data" / "demo-study" / "dicom").is_dir()


def test_the_built_application_says_when_there_is_no_display(built_app, tmp_path):
    result = subprocess.run([str(built_app / "liverview")], env=clean_env(tmp_path), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "no display" in result.stderr
    assert "no display" in (tmp_path / "data" / "logs" / "liverview.log").read_text()


def test_bundle_holds_what_the_app_needs_and_nothing_more(built_app):
    files = [p for p in built_app.rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files)
    assert size <= BUDGET_BYTES, f"{size / 1e9:.2f} GB"
    names = {p.relative_to(built_app).as_posix() for p in files}
    assert "_internal/resources/icons/liverview-256.png" in names
    assert "install.sh" in names and "liverview.desktop" in names
    left_out = ("matplotlib/", "sklearn/", "scipy/", "SimpleITK/", "pytest/", "_pytest/", "tkinter/", "IPython/",
                "torch/include/", "torch/test/", "torch/share/", "torchvision.libs/", "tests/")
    unwanted = [n for n in names if n.removeprefix("_internal/").startswith(left_out)
                or any(lib in n for lib in ("Qt6WebEngine", "Qt6Quick", "Qt6Qml", "Qt6Pdf", "Qt63D", "libcudart",
                                            "libnvjpeg"))
                or n.endswith((".h", ".a"))
                # DICOM only as pydicom's own palettes and character-set samples, no test or shared data.
                or (n.endswith(".dcm") and not n.startswith("_internal/pydicom/data/"))]
    assert unwanted == []
    assert not [p for p in built_app.rglob("*") if p.is_symlink() and not p.exists()], "dangling symlinks"
