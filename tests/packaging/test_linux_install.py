"""packaging/linux: the menu entry and the per-user install/uninstall script (no root)."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINUX = REPO / "packaging" / "linux"
SIZES = (16, 32, 48, 64, 128, 256, 512)


def read_desktop(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def test_desktop_entry():
    entry = read_desktop(LINUX / "liverview.desktop")
    assert entry["Type"] == "Application" and entry["Icon"] == "liverview" and entry["Terminal"] == "false"
    assert entry["Exec"] == "liverview %F"
    # A main category first (freedesktop menu spec), MedicalSoftware as its additional category.
    assert entry["Categories"].split(";")[:2] == ["Science", "MedicalSoftware"]


def fake_application(folder: Path) -> Path:
    """What `make package` leaves in dist/liverview, as far as the script cares."""
    icons = folder / "_internal" / "resources" / "icons"
    icons.mkdir(parents=True)
    for size in SIZES:
        shutil.copy(REPO / "resources" / "icons" / f"liverview-{size}.png", icons)
    exe = folder / "liverview"
    exe.write_text("#!/bin/sh\necho fake liverview\n")
    exe.chmod(0o755)
    return folder


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XDG_DATA_HOME"} | {"HOME": str(home)}
    return subprocess.run(["sh", str(LINUX / "install.sh"), *args], env=env, capture_output=True, text=True)


def test_install_and_uninstall_for_the_user(tmp_path):
    app_dir = fake_application(tmp_path / "dist" / "liverview")
    home = tmp_path / "home"
    result = run(str(app_dir), home=home)
    assert result.returncode == 0, result.stderr
    local = home / ".local"
    target = local / "opt" / "liverview" / "liverview"
    assert subprocess.run([str(target)], capture_output=True, text=True).stdout == "fake liverview\n"
    assert (local / "bin" / "liverview").resolve() == target.resolve()
    for size in SIZES:
        assert (local / "share" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "liverview.png").is_file()
    entry = read_desktop(local / "share" / "applications" / "liverview.desktop")
    assert entry["Exec"] == f'"{target}" %F'

    result = run("--uninstall", home=home)
    assert result.returncode == 0, result.stderr
    assert not (local / "opt" / "liverview").exists()
    assert not (local / "bin" / "liverview").exists()
    assert not (local / "share" / "applications" / "liverview.desktop").exists()
    assert not list((local / "share" / "icons").rglob("liverview.png"))


def test_install_with_prefix_replaces_an_older_install(tmp_path):
    app_dir = fake_application(tmp_path / "app")
    prefix = tmp_path / "prefix"
    (prefix / "opt" / "liverview").mkdir(parents=True)
    (prefix / "opt" / "liverview" / "stale-file").write_text("from an older version")
    result = run("--prefix", str(prefix), str(app_dir), home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert not (prefix / "opt" / "liverview" / "stale-file").exists()
    assert (prefix / "share" / "applications" / "liverview.desktop").is_file()
    assert not (tmp_path / "home" / ".local").exists()


def test_install_without_a_built_application_says_what_to_do(tmp_path):
    result = run(str(tmp_path / "nothing-here"), home=tmp_path / "home")
    assert result.returncode == 1
    assert "make package" in result.stderr
