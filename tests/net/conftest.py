"""A real PACS (Debian's Orthanc) for the network tests; `make test` installs it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orthanc import ORTHANC_AE, Orthanc  # noqa: E402

from liverview.net.cache import RetrieveCache  # noqa: E402
from liverview.net.node import PacsNode, Timeouts  # noqa: E402

#: Short waits so that a PACS gone silent is noticed in seconds, not the default minute.
TEST_TIMEOUTS = Timeouts(connection_s=3, acse_s=5, dimse_s=2, network_s=3)


def start_orthanc(folder: Path, **config) -> Orthanc:
    try:
        return Orthanc(folder, extra_config=config).start()
    except RuntimeError as exc:
        pytest.fail(str(exc))


def node_for(server: Orthanc, **changes) -> PacsNode:
    node = PacsNode("test PACS", "127.0.0.1", server.dicom_port, called_ae=ORTHANC_AE, move_port=server.move_port,
                    timeouts=TEST_TIMEOUTS)
    return node.with_changes(**changes) if changes else node


@pytest.fixture(scope="session")
def pacs(tmp_path_factory, crlm_dir, demo_study) -> Orthanc:
    """One Orthanc for the session holding crlm-ct-1004 and the demo study (tests may add, not remove)."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    server.upload(sorted(crlm_dir.glob("*.dcm")))
    server.upload(sorted(demo_study.dicom_dir.rglob("*.dcm")))
    yield server
    server.stop(graceful=False)


@pytest.fixture
def own_pacs(tmp_path, hcc_dir) -> Orthanc:
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
