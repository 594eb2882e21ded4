"""Fixtures of the network tests (the session's Orthanc, `pacs`, is in tests/conftest.py)."""
from __future__ import annotations

import pytest
from orthanc_server import node_for, start_orthanc

from liverview.net.cache import RetrieveCache
from liverview.net.node import PacsNode


@pytest.fixture
def own_pacs(tmp_path, hcc_dir):
    """An Orthanc of this test alone (it may be stopped or killed), holding the 109-image arterial CT."""
    server = start_orthanc(tmp_path / "orthanc", DicomAlwaysAllowMove=True)
    server.upload(sorted(hcc_dir.glob("*.dcm")))
    yield server
    server.stop(graceful=False)


@pytest.fixture
def node(pacs) -> PacsNode:
    return node_for(pacs)


@pytest.fixture
def cache(tmp_path) -> RetrieveCache:
    return RetrieveCache(tmp_path / "cache")
