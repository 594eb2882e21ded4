"""C-STORE: send DICOM objects (liverview's SEG and SR) to a PACS, with the answer per object."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom import build_context

from liverview.net.association import AssociationWatch, no_answer, open_association
from liverview.net.errors import PacsError
from liverview.net.node import PacsNode
from liverview.net.retrieve import TRANSFER_SYNTAXES
from liverview.net.status import SUCCESS, status_code
from liverview.progress import Progress, ShouldStop, check_stop

#: (0000,0900) C-STORE warnings: the PACS kept the object (PS3.4 B.2.3).
STORE_WARNINGS = (0x0107, 0x0116, 0xB000, 0xB006, 0xB007)


@dataclass(frozen=True)
class SendResult:
    """The PACS's answer for one object, in words."""

    path: Path
    accepted: bool
    message: str


def _label(ds) -> str:
    return f"{ds.get('Modality', '') or 'object'} “{ds.get('SeriesDescription', '') or Path(ds.filename or '').name}”"


def send_files(node: PacsNode, paths: Sequence[str | Path], progress: Progress | None = None,
               should_stop: ShouldStop | None = None) -> list[SendResult]:
    """Send each file over one association; a refused object does not stop the others."""
    datasets = []
    for path in paths:
        try:
            datasets.append((Path(path), pydicom.dcmread(path)))
        except (OSError, InvalidDicomError) as exc:
            raise PacsError(f"{path} cannot be sent: it is not a readable DICOM file ({exc}).") from exc
    classes = list(dict.fromkeys(str(ds.SOPClassUID) for _, ds in datasets))
    watch = AssociationWatch()
    results = []
    with open_association(node, [build_context(uid, TRANSFER_SYNTAXES) for uid in classes], watch=watch) as assoc:
        for i, (path, ds) in enumerate(datasets):
            check_stop(should_stop, "Sending")
            if progress is not None:
                progress(i / len(datasets), f"Sending {_label(ds)} to {node.name}")
            accepted_classes = {cx.abstract_syntax for cx in assoc.accepted_contexts}
            if str(ds.SOPClassUID) not in accepted_classes:
                results.append(SendResult(path, False, f"{_label(ds)}: the PACS {node.name} does not accept this kind "
                                                       "of object."))
                continue
            code = status_code(assoc.send_c_store(ds))
            if code is None:
                raise no_answer(node, "store", watch)
            if code == SUCCESS:
                results.append(SendResult(path, True, f"{_label(ds)}: stored on {node.name}."))
            elif code in STORE_WARNINGS:
                results.append(SendResult(path, True, f"{_label(ds)}: stored on {node.name} with a warning "
                                                      f"(status 0x{code:04X}; the PACS may have changed some values)."))
            else:
                results.append(SendResult(path, False, f"{_label(ds)}: refused by {node.name} (DICOM status "
                                                       f"0x{code:04X}); the PACS administrator can look it up in its log."))
    if progress is not None:
        progress(1.0, f"Sent to {node.name}")
    return results
