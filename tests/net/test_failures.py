"""Every failure of the issue provoked for real against Orthanc: each raises its typed error with its
sentence, and leaves the cache as it was (published series intact, no staging leftovers)."""
from __future__ import annotations

import os
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from orthanc_server import closed_port, node_for

from liverview.net.errors import (CalledAERejected, CallingAEUnknown, MoveDestinationUnknown, PacsError, PacsTimeout,
                                  PacsUnreachable, PartialRetrieve)
from liverview.net.node import RetrieveMethod
from liverview.net.query import StudyQuery, find_series, find_studies
from liverview.net.retrieve import retrieve_study
from liverview.net.verify import verify_node
from liverview.progress import Cancelled

CRLM_STUDY = "1.3.6.1.4.1.14519.5.2.1.9203.8273.319461848560755521018609264462"
BOTH = [RetrieveMethod.GET, RetrieveMethod.MOVE]


@pytest.fixture
def hcc(own_pacs):
    """The arterial CT's study UID and series, as the PACS lists them."""
    node = node_for(own_pacs)
    (study,) = find_studies(node, StudyQuery())
    return study.study_uid, find_series(node, study.study_uid)


@pytest.fixture
def published(cache, tmp_path):
    """A series already in the cache before the failure: it must survive untouched."""
    staging = cache.new_staging("1.2.3.4")
    (staging / "1.2.3.4.5.dcm").write_bytes(b"complete before")
    return cache.publish(staging, "1.2.3", "1.2.3.4")


def assert_cache_intact(cache, published, study_uid):
    assert sorted(p.name for p in (cache.root / "studies").iterdir()) == ["1.2.3"]
    assert (published / "1.2.3.4.5.dcm").read_bytes() == b"complete before"
    assert list((cache.root / "staging").iterdir()) == []
    assert not cache.study_dir(study_uid).exists()


def test_closed_port_is_unreachable(pacs, cache, published):
    node = node_for(pacs, port=closed_port())
    with pytest.raises(PacsUnreachable, match=r"cannot be reached: check the host name and port"):
        verify_node(node)
    series = find_series(node_for(pacs), CRLM_STUDY)
    with pytest.raises(PacsUnreachable, match=r"The PACS test PACS \(127.0.0.1:\d+\) cannot be reached"):
        retrieve_study(node, CRLM_STUDY, cache, series=series)
    assert_cache_intact(cache, published, CRLM_STUDY)


def test_the_command_line_says_it_once_in_its_own_words(capsys):
    """liverview-pacs printed pynetdicom's two ERROR lines before its own, and pointed at "the PACS
    settings", which the command line does not have."""
    from liverview.net.pacs_cli import main

    assert main(["--pacs", f"127.0.0.1:{closed_port()}:X", "echo"]) == 1
    err = capsys.readouterr().err
    assert "pynetdicom" not in err and err.count("cannot be reached") == 1
    assert "--pacs HOST:PORT[:CALLED_AET] and --calling-aet AET" in err


def test_unknown_host_is_unreachable(pacs):
    with pytest.raises(PacsUnreachable, match="cannot be reached"):
        verify_node(node_for(pacs, host="no-such-pacs.invalid"))


def test_wrong_called_ae_is_named(pacs, cache, published):
    wrong = node_for(pacs, called_ae="WRONG-AE")
    with pytest.raises(CalledAERejected, match="does not answer to the AE title 'WRONG-AE': check the PACS AE title"):
        find_studies(wrong, StudyQuery())
    with pytest.raises(CalledAERejected, match="'WRONG-AE'"):
        retrieve_study(wrong, CRLM_STUDY, cache, series=find_series(node_for(pacs), CRLM_STUDY))
    assert_cache_intact(cache, published, CRLM_STUDY)


def test_every_rejection_is_named_when_the_pacs_closes_at_once(pacs):
    """Orthanc rejects a wrong AE title and closes the connection at once; pynetdicom's requestor could miss
    the rejection it had already received (1 in 15 on a busy machine) and report a closed connection."""
    wrong = node_for(pacs, called_ae="WRONG-AE")

    def attempt(_):
        try:
            verify_node(wrong)
        except PacsError as exc:
            return type(exc).__name__
        return "accepted"

    with ThreadPoolExecutor(4) as pool:
        outcomes = Counter(pool.map(attempt, range(240)))
    assert outcomes == {"CalledAERejected": 240}


@pytest.mark.parametrize("method", BOTH)
def test_unknown_calling_ae_is_named(pacs, cache, published, method):
    series = find_series(node_for(pacs), CRLM_STUDY)
    study_uid = CRLM_STUDY
    stranger = node_for(pacs, calling_ae="STRANGER")
    with pytest.raises(CallingAEUnknown, match="does not allow liverview's AE title 'STRANGER' to search"):
        find_studies(stranger, StudyQuery())
    with pytest.raises(CallingAEUnknown, match="'STRANGER' to retrieve. Ask the PACS administrator to register it"):
        retrieve_study(stranger, study_uid, cache, series=series, method=method)
    assert_cache_intact(cache, published, study_uid)


def test_unknown_move_destination(own_pacs, hcc, cache, published):
    """Orthanc, allowed to move for anyone, answers an unknown destination with 0xC000."""
    study_uid, series = hcc
    node = node_for(own_pacs, calling_ae="NOBODY")
    with pytest.raises(MoveDestinationUnknown, match="does not know where to send the images: .* register "
                                                     "liverview's AE title 'NOBODY'"):
        retrieve_study(node, study_uid, cache, series=series, method=RetrieveMethod.MOVE)
    assert_cache_intact(cache, published, study_uid)


@pytest.mark.parametrize("method", BOTH)
def test_pacs_stopped_mid_transfer_times_out(own_pacs, hcc, cache, published, method):
    study_uid, series = hcc

    def stop_pacs_after_ten(update):
        if update.received == 10 and update.path is None:
            os.kill(own_pacs.process.pid, signal.SIGSTOP)

    try:
        with pytest.raises(PacsTimeout, match=r"stopped sending series 103 \(CT\) for \d+ s after 1\d of 109 images; "
                                              "nothing of the series was kept") as stopped:
            retrieve_study(node_for(own_pacs), study_uid, cache, series=series, method=method,
                           report=stop_pacs_after_ten)
        # What arrived travels with the error (PACS review: `liverview-pacs get` said "0 more arrived").
        assert 10 <= stopped.value.received <= 19
    finally:
        os.kill(own_pacs.process.pid, signal.SIGCONT)
    assert_cache_intact(cache, published, study_uid)


def test_pacs_killed_mid_transfer_is_a_partial_retrieve(own_pacs, hcc, cache, published):
    study_uid, series = hcc

    def kill_pacs_after_ten(update):
        if update.received == 10:
            os.kill(own_pacs.process.pid, signal.SIGKILL)

    with pytest.raises(PartialRetrieve, match=r"Only 1\d of 109 images of series 103 \(CT\) arrived: the PACS test "
                                              "PACS closed the connection. Nothing of the series was kept") as caught:
        retrieve_study(node_for(own_pacs), study_uid, cache, series=series, report=kill_pacs_after_ten)
    assert caught.value.expected == 109 and 10 <= caught.value.received < 109
    assert_cache_intact(cache, published, study_uid)
    own_pacs.process.wait()


@pytest.mark.parametrize("method", BOTH)
def test_cancel_after_n_images_sends_c_cancel(own_pacs, hcc, cache, published, method):
    study_uid, series = hcc
    received = []

    with pytest.raises(Cancelled, match=r"cancelled after 1\d images"):
        retrieve_study(node_for(own_pacs), study_uid, cache, series=series, method=method,
                       report=lambda update: received.append(update.received),
                       should_stop=lambda: bool(received) and received[-1] >= 10)
    assert max(received) < 109
    assert_cache_intact(cache, published, study_uid)
    # The PACS took the C-CANCEL as a cancel, not a broken association: it goes on serving.
    assert len(retrieve_study(node_for(own_pacs), study_uid, cache, series=series, method=method).series) == 1
