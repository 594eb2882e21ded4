"""DIMSE status codes (PS3.7 Annex C, PS3.4 C.4) turned into words and errors."""
from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from liverview.net.errors import CallingAEUnknown, MoveDestinationUnknown, PacsError, PacsRefused, PacsTimeout
from liverview.net.node import PacsNode

log = logging.getLogger(__name__)

SUCCESS = 0x0000
CANCELLED = 0xFE00
PENDING = (0xFF00, 0xFF01)
WARNING_SUB_OPERATIONS = 0xB000
MOVE_DESTINATION_UNKNOWN = 0xA801
REFUSED_NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = (0xA700, 0xA701, 0xA702)


def status_code(status: Dataset) -> int | None:
    """(0000,0900) Status, or None when the PACS sent no answer (timeout or lost connection)."""
    return int(status.Status) if "Status" in status else None


def is_pending(code: int | None) -> bool:
    return code in PENDING


def refusal(node: PacsNode, operation: str, status: Dataset) -> PacsError:
    """The error for a final failure `status` of `operation` ("search", "retrieve", "send", …)."""
    code = status_code(status)
    # The comment may quote the query (patient names): debug level only.
    log.debug("%s on %s failed with 0x%04X: %s", operation, node.address, code or 0, status.get("ErrorComment", ""))
    where = f"the PACS {node.name}"
    if code == REFUSED_NOT_AUTHORIZED:
        return CallingAEUnknown(
            f"{where.capitalize()} does not allow liverview's AE title '{node.calling_ae}' to {operation}: "
            "ask the PACS administrator to register it with this computer's address.")
    if code in OUT_OF_RESOURCES:
        return PacsRefused(f"{where.capitalize()} is out of resources for this {operation}; try again later "
                           "or narrow the search.")
    if code is None:
        return PacsTimeout(f"{where.capitalize()} did not answer the {operation} in time.")
    return PacsRefused(f"{where.capitalize()} could not {operation} (DICOM status 0x{code:04X}); "
                       "the PACS administrator can look it up in the PACS's log.")


def move_destination_unknown(node: PacsNode) -> MoveDestinationUnknown:
    return MoveDestinationUnknown(
        f"The PACS {node.name} does not know where to send the images: ask the PACS administrator to register "
        f"liverview's AE title '{node.calling_ae}' with this computer's address and port {node.move_port} "
        "as a move destination, or switch this node to C-GET in the PACS settings.")
