"""Where liverview finds its resources and keeps per-user data (Qt-free, PyInstaller-aware)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "liverview"
#: The bundled model: resources/models/<DEFAULT_MODEL_NAME>/ (model.json, weights.pt, MODEL_CARD.md).
DEFAULT_MODEL_NAME = "liver-lesion-classifier"


def resource_path(*parts: str) -> Path:
    """A file under `resources/`, from the source tree, an installed checkout or a PyInstaller bundle."""
    bundle_root = getattr(sys, "_MEIPASS", None)
    base = Path(bundle_root) if bundle_root else Path(__file__).resolve().parent.parent
    return base.joinpath("resources", *parts)


def default_model_path() -> Path:
    """The model bundle shipped with liverview (found without importing torch)."""
    return resource_path("models", DEFAULT_MODEL_NAME)


def user_data_dir() -> Path:
    """Per-user data folder (annotations, demo study, logs); `LIVERVIEW_DATA_DIR` overrides it.

    Linux: $XDG_DATA_HOME/liverview (~/.local/share/liverview); macOS: ~/Library/Application Support/
    liverview; Windows: %LOCALAPPDATA%\\liverview. Never inside the application folder.
    """
    override = os.environ.get("LIVERVIEW_DATA_DIR")
    if override:
        path = Path(override)
    elif sys.platform == "win32":
        path = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / APP_NAME
    elif sys.platform == "darwin":
        path = Path.home() / "Library" / "Application Support" / APP_NAME
    else:
        path = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / APP_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_cache_dir() -> Path:
    """Per-user cache (unpacked zips, thumbnails): safe to delete at any time; `LIVERVIEW_CACHE_DIR`
    overrides it.

    Linux: $XDG_CACHE_HOME/liverview (~/.cache/liverview); macOS: ~/Library/Caches/liverview; Windows:
    %LOCALAPPDATA%\\liverview\\cache.
    """
    override = os.environ.get("LIVERVIEW_CACHE_DIR")
    if override:
        path = Path(override)
    elif sys.platform == "win32":
        path = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / APP_NAME / "cache"
    elif sys.platform == "darwin":
        path = Path.home() / "Library" / "Caches" / APP_NAME
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / APP_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_study_dir() -> Path:
    """Where the generated demo study lives (DIR/dicom + DIR/ground-truth.json)."""
    return user_data_dir() / "demo-study"


def multiphase_demo_dir() -> Path:
    """Where the generated four-phase demo study lives (DIR/dicom/<phase> + DIR/ground-truth.json); the
    folder of its first version (a slab around the liver, other UIDs), "demo-multiphase", is left alone."""
    return user_data_dir() / "demo-multiphase-2"
