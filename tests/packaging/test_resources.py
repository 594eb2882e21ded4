"""Resources are found from the source tree and from a PyInstaller bundle; the icons are complete."""
from __future__ import annotations

import sys
from pathlib import Path

from liverview.paths import resource_path

REPO = Path(__file__).resolve().parents[2]


def test_resource_path_in_the_source_tree():
    assert resource_path("icons", "liverview-16.png") == REPO / "resources" / "icons" / "liverview-16.png"


def test_resource_path_in_a_pyinstaller_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resource_path("models", "m", "model.json") == tmp_path / "resources" / "models" / "m" / "model.json"


def test_icons_in_every_size():
    from PIL import Image

    from liverview.app import ICON_SIZES

    for size in ICON_SIZES:
        with Image.open(resource_path("icons", f"liverview-{size}.png")) as image:
            assert image.size == (size, size) and image.mode == "RGBA"
    with Image.open(resource_path("icons", "liverview.ico")) as ico:
        assert {(s, s) for s in (16, 32, 48, 256)} <= set(ico.info["sizes"])
    with Image.open(resource_path("icons", "liverview.icns")) as icns:
        assert icns.format == "ICNS"


def test_window_icon_has_all_sizes(qapp):
    from liverview.app import ICON_SIZES, app_icon

    sizes = {(s.width(), s.height()) for s in app_icon().availableSizes()}
    assert sizes == {(s, s) for s in ICON_SIZES}
