"""packaging/prune.py: dropping files from the analysis takes the libraries only they needed along."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PRUNE = Path(__file__).resolve().parents[2] / "packaging" / "prune.py"


@pytest.fixture
def prune(monkeypatch):
    spec = importlib.util.spec_from_file_location("liverview_packaging_prune", PRUNE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # ldd's answer (transitive, as on Linux) for the sources below.
    imports = {
        "/src/_C.so": ["libcudart.so.13", "libz.b9.so.1"],
        "/src/image.so": ["libnvjpeg.so.13", "libcudart.so.13"],
        "/src/core.so": ["libz.b9.so.1", "libpython3.11.so"],
        "/src/libqgtk3.so": ["libgtk.so"],
    }
    monkeypatch.setattr(module, "get_imports", lambda path: [(name, None) for name in imports.get(path, [])])
    return module


def test_drop_removes_matches_and_their_orphaned_dependencies(prune):
    binaries = [
        ("tv/_C.so", "/src/_C.so", "EXTENSION"),
        ("tv/image.so", "/src/image.so", "EXTENSION"),
        ("core.so", "/src/core.so", "EXTENSION"),
        ("tv.libs/libcudart.so.13", "/src/libcudart", "BINARY"),
        ("libnvjpeg.so.13", "/src/libnvjpeg", "BINARY"),
        ("tv.libs/libz.b9.so.1", "/src/libz", "BINARY"),  # also needed by core.so: stays
        ("libpython3.11.so", "/src/libpython", "BINARY"),  # loaded by the bootloader, needed by nobody dropped
        ("pkg/sub/libcudart.so.13", "/src/other", "BINARY"),  # inside a package: may be loaded by name
    ]
    datas = [
        ("libcudart.so.13", "tv.libs/libcudart.so.13", "SYMLINK"),
        ("libz.b9.so.1", "tv.libs/libz.b9.so.1", "SYMLINK"),
        ("tv/test/data.bin", "/src/data.bin", "DATA"),
        ("resources/icons/a.png", "/src/a.png", "DATA"),
    ]
    kept_binaries, kept_datas, removed = prune.drop(binaries, datas, ["tv/_C.*", "tv/image.*", "tv/test/*"])
    assert [e[0] for e in kept_binaries] == ["core.so", "tv.libs/libz.b9.so.1", "libpython3.11.so",
                                             "pkg/sub/libcudart.so.13"]
    assert [e[0] for e in kept_datas] == ["libz.b9.so.1", "resources/icons/a.png"]
    assert removed == sorted(["tv/_C.so", "tv/image.so", "tv.libs/libcudart.so.13", "libnvjpeg.so.13",
                              "libcudart.so.13", "tv/test/data.bin"])
