"""DICOM SEG segments as liverview lesions: one lesion per segment, outlines traced from the masks."""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from liverview.annotations.deid import PseudonymKeyError, Pseudonymizer
from liverview.annotations.document import AnnotationDocument, Lesion, Roi
from liverview.annotations.labels import LabelTaxonomy
from liverview.annotations.seg_description import read_segment_description
from liverview.imaging.outline import mask_to_polygons
from liverview.io.seg_import import SegImport, SegSegment, import_seg
from liverview.io.volume import Volume

log = logging.getLogger(__name__)

#: A lesion id as `Lesion` makes them ("L" and 8 hex digits), as liverview writes it into a segment's
#: (0062,0021) Tracking ID.
_LESION_ID = re.compile(r"^L[0-9a-f]{8}$")


@dataclass
class SegDocumentImport:
    """A SEG turned into an annotation document, with how its frames were matched and the warnings."""

    document: AnnotationDocument
    method: str
    warnings: list[str] = field(default_factory=list)


def label_for_segment(segment: SegSegment, taxonomy: LabelTaxonomy) -> str | None:
    """The taxonomy id for a segment: liverview's own Segment Description first, then the
    Segmented Property Type code value, else None (the reader labels it)."""
    named = read_segment_description(segment.description).label
    if named is not None and named in taxonomy:
        return named
    if segment.property_type is not None and segment.property_type.value:
        for label in taxonomy:
            if label.code is not None and label.code.value == segment.property_type.value:
                return label.id
    return None


def document_from_seg(seg_import: SegImport, volume: Volume, taxonomy: LabelTaxonomy | None = None) -> AnnotationDocument:
    """One lesion per non-empty segment: label from the codes, note = Segment Label, ROIs = outer
    outlines per slice (kind "seg"), reader = ``SEG: <Content Creator's Name or Manufacturer>``.

    A segment liverview wrote comes back as the lesion it was: its reader is the one its description
    names, else the Content Creator (who is then its reader), and its id is its Tracking ID, so the
    lesions a reader sent to the PACS come back as the same lesions, and merging them into a store that
    has them adds nothing."""
    taxonomy = taxonomy or LabelTaxonomy()
    document = AnnotationDocument(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid,
                                  source=f"DICOM SEG {seg_import.sop_instance_uid}".strip())
    ours = seg_import.manufacturer == "liverview"
    creator = seg_import.creator if ours else f"SEG: {seg_import.creator}"
    for segment in seg_import.segments:
        rois = []
        for z in segment.slices:
            for outline in mask_to_polygons(segment.planes[z]):
                rois.append(Roi(slice_index=z, points_xy=outline, kind="seg",
                                sop_instance_uid=volume.sop_instance_uids[z]))
        if not rois:
            continue
        named = read_segment_description(segment.description).reader if ours else None
        lesion = Lesion(reader=named or creator, label=label_for_segment(segment, taxonomy), note=segment.label,
                        rois=rois)
        if ours and _LESION_ID.match(segment.tracking_id):
            lesion.id = segment.tracking_id
        document.lesions.append(lesion)
    return document


def own_pseudonymizer() -> Pseudonymizer | None:
    """This installation's pseudonymizer, or None when its key cannot be used."""
    try:
        return Pseudonymizer.from_user_key()
    except (PseudonymKeyError, OSError):
        return None


def import_seg_document(seg_path: str | os.PathLike[str], volume: Volume, taxonomy: LabelTaxonomy | None = None,
                        known_readers: Iterable[str] = ()) -> SegDocumentImport:
    """`import_seg` followed by `document_from_seg`; raises `SegImportError` when it cannot be placed.
    A SEG this installation exported pseudonymised from `volume` is placed through its UID map, and
    its lesions go back to whichever of `known_readers` (the study's readers, the user) its reader
    pseudonyms stand for: a reader importing their own export got "reader-31512e" instead of their name."""
    own = own_pseudonymizer()
    result = import_seg(seg_path, volume, uid_alias=own.remap_uid if own is not None else None)
    document = document_from_seg(result, volume, taxonomy)
    if own is not None and result.manufacturer == "liverview":
        names = {own.reader_pseudonym(name): name for name in known_readers if name.strip()}
        for lesion in document.lesions:
            lesion.reader = names.get(lesion.reader, lesion.reader)
    return SegDocumentImport(document, result.method, list(result.warnings))


__all__ = ["SegDocumentImport", "document_from_seg", "import_seg_document", "label_for_segment"]
