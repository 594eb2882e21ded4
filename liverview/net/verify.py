"""Verification (C-ECHO): is the PACS there and does it accept us, in words."""
from __future__ import annotations

import time
from dataclasses import dataclass

from pynetdicom import build_context
from pynetdicom.sop_class import Verification

from liverview.net.association import AssociationWatch, no_answer, open_association
from liverview.net.errors import PacsRefused
from liverview.net.node import PacsNode
from liverview.net.status import SUCCESS, status_code


@dataclass(frozen=True)
class EchoResult:
    node: PacsNode
    round_trip_ms: float

    @property
    def message(self) -> str:
        return f"The PACS {self.node.name} ({self.node.address}) answered the echo in {self.round_trip_ms:.0f} ms."


def verify_node(node: PacsNode) -> EchoResult:
    """C-ECHO `node`; raises a PacsError subclass that says what is wrong."""
    start = time.perf_counter()
    watch = AssociationWatch()
    with open_association(node, [build_context(Verification)], watch=watch) as assoc:
        status = assoc.send_c_echo()
    code = status_code(status)
    if code is None:
        raise no_answer(node, "echo", watch)
    if code != SUCCESS:
        raise PacsRefused(f"The PACS {node.name} answered the echo with DICOM status 0x{code:04X}.")
    return EchoResult(node, (time.perf_counter() - start) * 1000)
