"""Lesions as a DICOM Segmentation (SEG, 1.2.840.10008.5.1.4.1.1.66.4), written with highdicom.

One BINARY segment per lesion: Segmented Property Category (0062,0003) = Morphologically Abnormal
Structure, Segmented Property Type (0062,000F) = the label's code (generic "Lesion" when the label
has none), Anatomic Region (0008,2218) = Liver, Segment Label = label name + lesion id, Tracking ID
= lesion id. Frames reference the CT slices they were drawn on by their original SOP Instance UIDs.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from liverview import __version__
from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.document import AnnotationDocument, Lesion
from liverview.annotations.export_common import (ExportError, ExportIdentity, check_document_matches, export_identity,
                                                  lesion_masks, resolve_label, withheld_warnings)
from liverview.atomic_write import write_bytes_atomic
from liverview.annotations.labels import LIVER, MORPHOLOGICALLY_ABNORMAL_STRUCTURE, CodedConcept, LabelTaxonomy
from liverview.annotations.seg_description import write_segment_description
from liverview.io.volume import Volume

if TYPE_CHECKING:
    import highdicom as hd

# highdicom is imported inside the functions: it takes a noticeable time to import, and modules
# that merely list the export formats (menus, the CLI's --help) should not pay for it.
log = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SERIES_DESCRIPTION = "liverview lesions"
SERIES_NUMBER = 901
#: Segmented Property Type for lesions whose label has no code (or no label yet).
GENERIC_LESION = CodedConcept("52988006", "SCT", "Lesion")


def _coded(concept: CodedConcept) -> hd.sr.CodedConcept:
    import highdicom as hd

    return hd.sr.CodedConcept(concept.value, concept.scheme, concept.meaning)


def read_source_datasets(volume: Volume) -> tuple[list[Dataset], list[int]]:
    """The series' datasets (headers only) for highdicom, and for each volume slice the index of its
    frame in the pixel array highdicom expects (source order: one file per slice, or the frames of
    one multi-frame file)."""
    frames = volume.info.frames
    paths = [f.path for f in frames]
    if len(set(paths)) == len(paths):
        datasets: list[Dataset] = []
        for z, path in enumerate(paths):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except (OSError, pydicom.errors.InvalidDicomError) as exc:
                raise ExportError(f"cannot re-read source image {path} for the SEG references: {exc}") from exc
            if str(ds.SOPInstanceUID) != volume.sop_instance_uids[z]:
                raise ExportError(f"{path} changed since the series was loaded (other SOP Instance UID); reload it")
            datasets.append(ds)
        return datasets, list(range(len(frames)))
    if len(set(paths)) == 1:
        # One enhanced multi-frame file: the SEG's frames follow the file's frame order.
        ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        return [ds], [f.frame for f in frames]
    raise ExportError("SEG export supports series stored as one file per slice or as one multi-frame file; "
                      "this series mixes multi-frame files")


def build_seg(volume: Volume, document: AnnotationDocument, taxonomy: LabelTaxonomy | None = None,
              pseudonymize: bool = True, reader: str | None = None,
              pseudonymizer: Pseudonymizer | None = None,
              source_datasets: Sequence[Dataset] | None = None) -> hd.seg.Segmentation:
    """The SEG as a `highdicom.seg.Segmentation` (not yet written). See `export_seg`."""
    import highdicom as hd

    check_document_matches(volume, document)
    taxonomy = taxonomy or LabelTaxonomy()
    items = lesion_masks(volume, document)
    if not items:
        raise ExportError("no lesion has an outline on this series; nothing to put into a SEG")
    if source_datasets is None:
        sources, frame_of_slice = read_source_datasets(volume)
    else:
        sources, frame_of_slice = list(source_datasets), list(range(volume.shape[0]))
    n_frames = int(sources[0].get("NumberOfFrames", 1)) if len(sources) == 1 and volume.shape[0] > 1 else len(sources)

    identity = export_identity(volume, pseudonymize, pseudonymizer)
    pixel_array = np.zeros((n_frames, volume.shape[1], volume.shape[2], len(items)), dtype=bool)
    descriptions = []
    readers = document.readers()
    several_readers = len(readers) > 1
    creator = reader or (readers[0] if len(readers) == 1 else None)
    for number, (lesion, mask) in enumerate(items, start=1):
        for z in np.flatnonzero(mask.any(axis=(1, 2))):
            pixel_array[frame_of_slice[z], :, :, number - 1] = mask[z]
        label = resolve_label(lesion.label, taxonomy, document)
        # Tracking UID: stable for a lesion across re-exports, not derivable from the source study.
        tracking_uid = pydicom.uid.generate_uid(entropy_srcs=[identity.study_uid, lesion.id])
        color = None
        if label.id is not None:
            label_def = next((d for d in list(taxonomy) + document.labels if d.id == label.id), None)
            if label_def is not None:
                color = hd.color.CIELabColor.from_rgb(*label_def.color)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{label.name}{_whose(lesion, identity, several_readers)} {lesion.id}"[:64],
            segmented_property_category=_coded(MORPHOLOGICALLY_ABNORMAL_STRUCTURE),
            segmented_property_type=_coded(label.code or GENERIC_LESION),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_uid=tracking_uid,
            tracking_id=lesion.id[:64],
            anatomic_regions=[_coded(LIVER)],
            display_color=color,
        )
        names = write_segment_description(label.id, _reader_named(lesion, identity, creator))
        if names is not None:
            description.SegmentDescription = names
        descriptions.append(description)

    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="liverview",
        manufacturer_model_name="liverview",
        software_versions=__version__,
        device_serial_number="0",
        content_label="LESIONS",
        content_description="liverview lesion outlines",
        series_description=SERIES_DESCRIPTION,
        omit_empty_frames=True,
    )
    if pseudonymize:
        p = pseudonymizer or Pseudonymizer.from_user_key()
        # highdicom copied the patient and study modules (and more) from the source; clean them here.
        # Every UID is remapped, references included, with the same map as the de-identified images
        # (`export_images`): the SEG belongs to the pseudonymised study and resolves against its images.
        p.deidentify_dataset(seg, uids="all")
        if seg.StudyInstanceUID != identity.study_uid:
            raise AssertionError("SEG study UID and export identity disagree")
        seg.SeriesDescription = SERIES_DESCRIPTION  # our own text, not the source's free text
    if creator:
        name = identity.reader_of(creator)
        # A single-component person name needs a trailing caret to be unambiguous (PS3.5 6.2.1.2).
        seg.ContentCreatorName = name if "^" in name else name + "^"
    elif "ContentCreatorName" not in seg:
        seg.ContentCreatorName = ""
    return seg


def _reader_named(lesion: Lesion, identity: ExportIdentity, creator: str | None) -> str | None:
    """The reader a segment's description names: the lesion's (a consensus lesion's is whoever outlined
    it), unless it is the Content Creator, who stands for the segments that name nobody."""
    return identity.reader_of(lesion.reader) if lesion.reader != creator else None


def _whose(lesion: Lesion, identity: ExportIdentity, several_readers: bool) -> str:
    """What a segment label says about its reader: "consensus", the reader (several readers'
    lesions in one SEG), or nothing (one reader, named as the content creator)."""
    if lesion.consensus is not None:
        return " consensus"
    return f" {identity.reader_of(lesion.reader)}" if several_readers else ""


def export_seg(volume: Volume, document: AnnotationDocument, out_path: str | os.PathLike[str],
               taxonomy: LabelTaxonomy | None = None, pseudonymize: bool = True, reader: str | None = None,
               pseudonymizer: Pseudonymizer | None = None) -> Path:
    """Write the lesions of `document` on `volume` as a DICOM SEG file at `out_path`.

    `reader` becomes (0070,0084) Content Creator's Name (default: the document's only reader).
    With `pseudonymize` the patient and study information is replaced as in `deid` and every UID is
    remapped, references included: the SEG belongs to the pseudonymised study, whose images
    `export_images.export_deidentified_images` writes with the same map. Without it the SEG belongs
    to the source study and references its images as they are.
    Lesions without any outline on the series are left out (logged). Raises `ExportError`.
    """
    with withheld_warnings():
        seg = build_seg(volume, document, taxonomy, pseudonymize, reader, pseudonymizer)
    out = Path(out_path)
    write_bytes_atomic(out, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
    log.info("wrote SEG with %d segment(s), %d frame(s) to %s", len(seg.SegmentSequence), seg.NumberOfFrames, out)
    return out


__all__ = ["GENERIC_LESION", "SEG_SOP_CLASS", "build_seg", "export_seg",
           "read_source_datasets"]
