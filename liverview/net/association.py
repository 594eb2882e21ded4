"""Open an association with a PACS, every wait bounded, every refusal turned into a typed error.

pynetdicom reports failures as flags on the association and lines in its log; here they become
:mod:`liverview.net.errors` exceptions whose message says what to check.
"""
from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext

from liverview.net.errors import (AssociationRejected, CalledAERejected, CallingAEUnknown, PacsError, PacsTimeout,
                                  PacsUnreachable)
from liverview.net.node import PacsNode

log = logging.getLogger(__name__)
# pynetdicom logs query identifiers (patient names) at INFO and below; keep them out of our logs.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

#: A-ASSOCIATE-RJ (result source 1 = service user) reasons, PS3.8 Table 9-21.
_CALLING_AE_NOT_RECOGNISED = 3
_CALLED_AE_NOT_RECOGNISED = 7
#: The most presentation contexts one association may propose (odd context IDs 1..255).
MAX_CONTEXTS = 128


@dataclass
class AssociationWatch:
    """What happened on the wire, for telling a timeout from a closed connection afterwards."""

    connected: bool = False
    reply: A_ASSOCIATE | None = None
    last_activity: float = field(default_factory=time.monotonic)

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_ACSE_RECV, self._on_acse),
                (evt.EVT_DIMSE_RECV, self._on_activity)]

    def _on_open(self, _event) -> None:
        self.connected = True

    def _on_acse(self, event) -> None:
        if isinstance(event.primitive, A_ASSOCIATE) and event.primitive.result is not None:
            self.reply = event.primitive

    def _on_activity(self, _event) -> None:
        self.mark_activity()

    def mark_activity(self) -> None:
        self.last_activity = time.monotonic()

    def idle_s(self) -> float:
        return time.monotonic() - self.last_activity


def make_ae(node: PacsNode) -> AE:
    """An application entity named `node.calling_ae` with the node's four timeouts."""
    ae = AE(ae_title=node.calling_ae)
    t = node.timeouts
    ae.connection_timeout = t.connection_s
    ae.acse_timeout = t.acse_s
    ae.dimse_timeout = t.dimse_s
    ae.network_timeout = t.network_s
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs for image transfers
    return ae


def tls_context(node: PacsNode) -> ssl.SSLContext | None:
    """A client TLS context from the node's certificates, or None for a plain TCP association."""
    if node.tls is None:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=node.tls.ca_file)
        if node.tls.cert_file:
            context.load_cert_chain(node.tls.cert_file, node.tls.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise PacsError(f"The TLS certificates for {node.name} cannot be read ({exc.strerror or exc}); "
                        "check the certificate files in the PACS settings.") from exc
    return context


def describe_failure(node: PacsNode, watch: AssociationWatch) -> PacsError:
    """The error for an association that was not established."""
    where = f"{node.name} ({node.host}:{node.port})"
    if not watch.connected:
        tls = (" If it is, the PACS's TLS certificate may not be signed by the CA certificate in the PACS settings."
               if node.tls is not None else "")
        return PacsUnreachable(
            f"The PACS {where} cannot be reached: check the host name and port in the PACS settings, "
            f"that the PACS is running, and that the network allows the connection.{tls}")
    reply = watch.reply
    if reply is None:
        tls = ("the PACS may want liverview's own certificate (TLS settings)" if node.tls is not None
               else "the PACS may expect TLS (“Use TLS” in the PACS settings)")
        if watch.idle_s() < 0.9 * node.timeouts.acse_s:
            return AssociationRejected(f"The PACS {where} closed the connection without accepting it: {tls}, or it "
                                       "does not accept this computer or AE title (its log says why).")
        return PacsTimeout(
            f"The PACS {where} accepted the connection but did not answer the association request within "
            f"{node.timeouts.acse_s:g} s: {tls}, it may be overloaded, or this may not be its DICOM port.")
    if reply.result_source == 1 and reply.diagnostic == _CALLED_AE_NOT_RECOGNISED:
        return CalledAERejected(
            f"The PACS {where} does not answer to the AE title '{node.called_ae}': "
            "check the PACS AE title in the PACS settings.")
    if reply.result_source == 1 and reply.diagnostic == _CALLING_AE_NOT_RECOGNISED:
        return CallingAEUnknown(
            f"The PACS {where} does not know liverview's AE title '{node.calling_ae}': ask the PACS "
            "administrator to register it (with this computer's address), or correct it in the PACS settings.")
    transient = " for now (it may be busy; try again in a minute)" if reply.result == 2 else ""
    return AssociationRejected(f"The PACS {where} refused the connection{transient}: {reply.reason_str}.")


def no_answer(node: PacsNode, operation: str, watch: AssociationWatch) -> PacsError:
    """The error for a request that got no final answer: the PACS went silent, or it closed the connection
    at once (Orthanc's way of refusing an AE title it does not know)."""
    if watch.idle_s() >= 0.9 * min(node.timeouts.dimse_s, node.timeouts.network_s):
        return PacsTimeout(f"The PACS {node.name} stopped answering the {operation} for {watch.idle_s():.0f} s. "
                           "Try again later, or ask the PACS administrator whether the PACS is overloaded.")
    return CallingAEUnknown(f"The PACS {node.name} closed the connection instead of answering the {operation}: it most "
                            f"likely does not allow liverview's AE title '{node.calling_ae}' to {operation}. Ask the "
                            "PACS administrator to register it with this computer's address.")


def collect_late_reply(assoc) -> None:
    """Hand the primitives still queued to the watch's handlers (a rejection among them).

    When the PACS rejects and closes at once, pynetdicom's transport can see the connection closed
    before its requestor reads the A-ASSOCIATE-RJ it has already queued; the requestor then gives up
    without reading it (about 1 in 15 rejections against Orthanc on a busy machine). Reading the queue
    fires EVT_ACSE_RECV for what is in it, as pynetdicom itself does before it reports an abort.
    """
    for _ in range(8):
        if assoc.dul.receive_pdu(wait=False) is None:
            return


@contextmanager
def open_association(node: PacsNode, contexts: Sequence[PresentationContext], *, handlers: Sequence[tuple] = (),
                     ext_neg: Sequence | None = None, ae: AE | None = None,
                     watch: AssociationWatch | None = None) -> Iterator:
    """Associate with `node` proposing `contexts`; released on exit, aborted if the body raised.

    Raises a :class:`PacsError` subclass when no association comes about.
    """
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"{len(contexts)} presentation contexts proposed; an association holds at most {MAX_CONTEXTS}")
    ae = ae or make_ae(node)
    watch = watch or AssociationWatch()
    ae.requested_contexts = list(contexts)
    tls = tls_context(node)
    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.called_ae, ext_neg=list(ext_neg or []) or None,
                             evt_handlers=[*watch.handlers(), *handlers],
                             tls_args=(tls, node.host) if tls is not None else None)
    except OSError as exc:  # a host name that does not resolve, a TLS handshake refused
        raise PacsUnreachable(f"The PACS {node.name} ({node.host}:{node.port}) cannot be reached: {exc.strerror or exc}. "
                              "Check the host name in the PACS settings.") from exc
    if not assoc.is_established:
        collect_late_reply(assoc)
        raise describe_failure(node, watch)
    log.debug("associated with %s", node.address)
    try:
        yield assoc
    except BaseException:
        assoc.abort()
        raise
    else:
        if assoc.is_established:
            assoc.release()
