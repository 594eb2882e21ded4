"""A TLS association with Orthanc (certificates made with openssl for the test), and what a node
without TLS, without its own certificate, or trusting the wrong CA is told. Whether Orthanc drops the
failed handshake at once or lets the association request time out depends on timing, so both
errors are accepted there; the sentence is the same."""
from __future__ import annotations

import subprocess

import pytest
from orthanc_server import node_for, start_orthanc

from liverview.net.errors import AssociationRejected, PacsError, PacsTimeout, PacsUnreachable
from liverview.net.node import Timeouts, TlsSettings
from liverview.net.query import StudyQuery, find_studies
from liverview.net.verify import verify_node

QUICK = Timeouts(connection_s=3, acse_s=1, dimse_s=2, network_s=3)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
             "-days", "2", "-subj", "/CN=liverview test CA")
    (d / "san").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=LIVERVIEW")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                 "-subj", subject)
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-out", str(d / f"{name}.crt"), "-days", "2", "-extfile", str(d / "san"))
    return d


@pytest.fixture
def tls_pacs(tmp_path, certificates, crlm_dir):
    d = certificates
    server = start_orthanc(tmp_path / "orthanc", DicomTlsEnabled=True, DicomTlsCertificate=str(d / "server.crt"),
                           DicomTlsPrivateKey=str(d / "server.key"), DicomTlsTrustedCertificates=str(d / "ca.crt"),
                           DicomTlsRemoteCertificateRequired=True)
    server.upload(sorted(crlm_dir.glob("*.dcm"))[:3])
    yield server
    server.stop(graceful=False)


def test_tls_echo_and_find(tls_pacs, certificates):
    d = certificates
    node = node_for(tls_pacs, tls=TlsSettings(str(d / "ca.crt"), str(d / "client.crt"), str(d / "client.key")))
    assert "answered the echo" in verify_node(node).message
    assert [s.n_instances for s in find_studies(node, StudyQuery(patient_id="CRLM-CT-1004"))] == [3]


def test_tls_misconfigurations_are_told_apart(tls_pacs, certificates):
    d = certificates
    with pytest.raises((PacsTimeout, AssociationRejected), match="the PACS may expect TLS"):
        verify_node(node_for(tls_pacs, timeouts=QUICK))
    with pytest.raises((PacsTimeout, AssociationRejected), match="may want liverview's own certificate"):
        verify_node(node_for(tls_pacs, timeouts=QUICK, tls=TlsSettings(str(d / "ca.crt"))))
    with pytest.raises(PacsUnreachable, match="TLS certificate may not be signed by the CA certificate"):
        verify_node(node_for(tls_pacs, timeouts=QUICK, tls=TlsSettings(str(d / "client.crt"))))
    with pytest.raises(PacsError, match="TLS certificates for test PACS cannot be read"):
        verify_node(node_for(tls_pacs, tls=TlsSettings(str(d / "missing.crt"))))
