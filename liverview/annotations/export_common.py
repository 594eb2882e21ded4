"""What every export shares: who the patient is in the output (pseudonym or real), label names and
codes, per-lesion masks, and atomic writes of binary files."""
from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.document import AnnotationDocument, Lesion
from liverview.annotations.labels import CodedConcept, LabelDef, LabelTaxonomy
from liverview.annotations.measurements import lesion_mask
from liverview.io.volume import Volume
from liverview.log_setup import withhold_quoted

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """An export cannot be written; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class ExportIdentity:
    """How the patient, study, series and readers appear in an export.

    With pseudonymisation `patient` is the pseudonym, `patient_name` and `patient_birth_date` are
    None and the UIDs are remapped; without it they are the source's own values.
    """

    pseudonymized: bool
    patient: str
    patient_name: str | None
    patient_birth_date: str | None
    study_uid: str
    series_uid: str
    reader_of: Callable[[str], str]
    #: How any other UID of the study (another series read with it) appears in the export.
    remap_uid: Callable[[str], str]

    def source_fields(self) -> dict[str, str | bool | None]:
        """The identification block written into JSON sidecars, CSV rows and dataset lines."""
        return {"patient": self.patient, "patient_name": self.patient_name,
                "patient_birth_date": self.patient_birth_date, "study_uid": self.study_uid,
                "series_uid": self.series_uid, "pseudonymized": self.pseudonymized}


def volume_patient_identity(volume: Volume) -> str:
    """The value the pseudonym is computed from; the same rule as `deid.patient_identity` for datasets."""
    info = volume.info
    for value in (info.identity.patient_id, info.identity.patient_name, info.study_uid):
        if value and str(value).strip():
            return str(value).strip()
    return "unknown"


def export_identity(volume: Volume, pseudonymize: bool = True,
                    pseudonymizer: Pseudonymizer | None = None) -> ExportIdentity:
    """The identity block for exports of `volume`; loads (or creates) the user key when needed."""
    info = volume.info
    if not pseudonymize:
        return ExportIdentity(False, info.identity.patient_id, info.identity.patient_name, info.identity.patient_birth_date,
                              info.study_uid, info.series_uid, lambda reader: reader, lambda uid: uid)
    p = pseudonymizer or Pseudonymizer.from_user_key()
    return ExportIdentity(True, p.patient_pseudonym(volume_patient_identity(volume)), None, None,
                          p.remap_uid(info.study_uid), p.remap_uid(info.series_uid), p.reader_pseudonym, p.remap_uid)


@dataclass(frozen=True)
class LabelInfo:
    """A lesion's label as exports write it: taxonomy id, display name, code (any may be empty)."""

    id: str | None
    name: str
    code: CodedConcept | None

    def code_dict(self) -> dict[str, str] | None:
        if self.code is None:
            return None
        return {"value": self.code.value, "scheme": self.code.scheme, "meaning": self.code.meaning}


def resolve_label(label_id: str | None, taxonomy: LabelTaxonomy | None,
                  document: AnnotationDocument | None = None) -> LabelInfo:
    """Look the label up in the taxonomy, then in the labels the document carries with it (a file
    from another site may use labels this installation does not have)."""
    if label_id is None:
        return LabelInfo(None, "unlabelled", None)
    candidates: list[LabelDef] = list(taxonomy or LabelTaxonomy())
    if document is not None:
        candidates += document.labels
    for label in candidates:
        if label.id == label_id:
            return LabelInfo(label.id, label.name, label.code)
    return LabelInfo(label_id, label_id, None)


def lesion_masks(volume: Volume, document: AnnotationDocument,
                 labelled_only: bool = False) -> list[tuple[Lesion, np.ndarray]]:
    """(lesion, 3-D bool mask) in document order, leaving out lesions with no voxel (logged)."""
    result = []
    for lesion in document.lesions:
        if labelled_only and lesion.label is None:
            continue
        mask = lesion_mask(volume, lesion)
        if not mask.any():
            log.warning("lesion %s has no outline inside the series; left out of the export", lesion.id)
            continue
        result.append((lesion, mask))
    return result


@contextmanager
def withheld_warnings() -> Iterator[None]:
    """Run a DICOM writer with its warnings logged (to the log file, at INFO), their quoted values withheld:
    highdicom quotes the patient's name when it finds fault with it, and that must reach no console or log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        # For the log file: these are remarks on the source's values (a one-component name), not on the export.
        log.info("while writing DICOM: %s", withhold_quoted(str(warning.message)))


def check_document_matches(volume: Volume, document: AnnotationDocument) -> None:
    """Refuse to export outlines onto a series they were not drawn on."""
    if document.series_instance_uid and document.series_instance_uid != volume.series_uid:
        raise ExportError(f"the annotations belong to series {document.series_instance_uid}, but the loaded series "
                          f"is {volume.series_uid}; open the series the annotations were drawn on")


def output_stem(identity: ExportIdentity) -> str:
    """A short file-name stem that never contains patient data: a hash of the output series UID."""
    return "lesions-" + hashlib.sha256(identity.series_uid.encode()).hexdigest()[:8]


__all__ = ["ExportError", "ExportIdentity", "LabelInfo", "check_document_matches", "export_identity",
           "lesion_masks", "output_stem", "resolve_label", "volume_patient_identity", "withheld_warnings"]
