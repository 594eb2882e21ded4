"""Lesion annotations (Qt-free): label taxonomy, ROI/lesion document, undoable autosaving store,
measurements, agreement statistics, exports and imports."""
from __future__ import annotations

from liverview.annotations.document import (AIResult, Adjudication, AnnotationDocument, AnnotationFormatError,
                                            Lesion, Roi)
from liverview.annotations.labels import BUILTIN_LABELS, CodedConcept, Confidence, LabelDef, LabelTaxonomy, LesionClass
from liverview.annotations.store import AnnotationStore, ChangeEvent, OpenReport

__all__ = [
    "AIResult", "Adjudication", "AnnotationDocument", "AnnotationFormatError", "AnnotationStore", "BUILTIN_LABELS",
    "ChangeEvent", "CodedConcept", "Confidence", "LabelDef", "LabelTaxonomy", "Lesion", "LesionClass", "OpenReport", "Roi",
]
