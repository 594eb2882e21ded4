from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LIVERVIEW_SHARED_DATA", REPO.parent / "shared" / "data"))
CRLM = SHARED_DATA / "series" / "crlm-ct-1004" / "image"
CORPUS = SHARED_DATA / "corpus"


@pytest.fixture(autouse=True)
def _private_user_data(tmp_path_factory, monkeypatch):
    """Every test gets its own user-data folder and settings, never the developer's real ones."""
    data = tmp_path_factory.mktemp("userdata")
    monkeypatch.setenv("LIVERVIEW_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(data / "config"))
    return data


@pytest.fixture(scope="session")
def crlm_dir() -> Path:
    if not CRLM.is_dir():
        pytest.fail(f"real test data missing: {CRLM} (set LIVERVIEW_SHARED_DATA to the shared data folder)")
    return CRLM


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"real test data missing: {CORPUS} (set LIVERVIEW_SHARED_DATA to the shared data folder)")
    return CORPUS


@pytest.fixture
def crlm_copy(tmp_path, crlm_dir) -> Path:
    """A writable copy of the real CT series (41 files)."""
    target = tmp_path / "crlm"
    shutil.copytree(crlm_dir, target)
    return target
