"""Open a study together with its annotations (liverview JSON or DICOM SEG), for the command-line tools.

The series is the one asked for, else the one the annotations name: the JSON's
series_instance_uid, or the series a SEG references / shares its Frame of Reference with.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from liverview.annotations.document import AnnotationDocument, AnnotationFormatError
from liverview.annotations.export_dataset import PhaseSource
from liverview.annotations.labels import LabelTaxonomy
from liverview.imaging.contrast_phase import ContrastPhase, PhaseDecision, detect_series_phases, reader_decision
from liverview.io import ScanResult, SeriesInfo, SourceError, load_series, scan_paths
from liverview.io.seg_import import is_seg_file
from liverview.io.volume import Volume


class AnnotatedStudyError(Exception):
    """The study or its annotations cannot be opened; the message says which file and why."""


@dataclass
class AnnotatedStudy:
    volume: Volume
    document: AnnotationDocument
    #: Things the user should know (series warnings, how SEG frames were matched).
    notes: list[str] = field(default_factory=list)
    seg_method: str | None = None
    #: Every series found with it (the study's other phases among them).
    scan: ScanResult | None = None


def read_annotation_json(path: Path) -> AnnotationDocument:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise AnnotatedStudyError(f"{path}: neither a DICOM SEG nor a liverview annotation JSON file "
                                  "(not UTF-8 text)") from exc
    except json.JSONDecodeError as exc:
        raise AnnotatedStudyError(f"{path}: neither a DICOM SEG nor a liverview annotation JSON file ({exc})") from exc
    except RecursionError as exc:  # nested deeper than Python's parser goes, as no annotation file is
        raise AnnotatedStudyError(f"{path}: not a liverview annotation file (nested too deeply)") from exc
    try:
        return AnnotationDocument.from_dict(data)
    except AnnotationFormatError as exc:
        raise AnnotatedStudyError(f"{path}: {exc}") from exc


def pick_annotated_series(scan, wanted: str | None, fallback_for: str | None = None) -> SeriesInfo:
    if wanted:
        for info in scan.series:
            if info.series_uid == wanted:
                return info
        found = ", ".join(f"{i.series_uid} ({i.describe()})" for i in scan.series) or "none"
        raise AnnotatedStudyError(f"series {wanted} is not in the study (series found: {found})")
    if fallback_for:
        candidates = [i for i in scan.series if i.frame_of_reference_uid == fallback_for]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise AnnotatedStudyError("several series share the SEG's Frame of Reference; choose one with --series "
                                      "UID: " + ", ".join(f"{i.series_uid} ({i.describe()})" for i in candidates))
    if len(scan.series) == 1:
        return scan.series[0]
    raise AnnotatedStudyError("cannot tell which series the annotations belong to; give --series UID (series found: "
                              + ", ".join(f"{i.series_uid} ({i.describe()})" for i in scan.series) + ")")


def _seg_series_hint(path: Path) -> tuple[list[str], str]:
    """(Referenced Series Instance UIDs, Frame of Reference UID) named by a SEG, header only."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    series = [str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])]
    return [s for s in series if s], str(ds.get("FrameOfReferenceUID", ""))


def open_annotated_study(study: str | Path, annotations: str | Path, series_uid: str | None = None,
                         taxonomy: LabelTaxonomy | None = None) -> AnnotatedStudy:
    """Load the annotated series of `study` and the annotations as a document (a SEG becomes one lesion
    per segment). Raises `AnnotatedStudyError` (and SegImportError for a SEG that does not fit)."""
    annotations = Path(annotations)
    if annotations.is_dir():
        raise AnnotatedStudyError(f"{annotations}: is a folder; give the annotation file (liverview JSON or DICOM SEG)")
    if annotations.exists() and not annotations.is_file():
        raise AnnotatedStudyError(f"{annotations}: not a regular file (a pipe, device or socket); give the annotation file")
    if not annotations.is_file():
        raise AnnotatedStudyError(f"{annotations}: annotation file not found")
    try:
        scan = scan_paths(study)
    except SourceError as exc:
        raise AnnotatedStudyError(str(exc)) from exc
    if not scan.series:
        reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in scan.skipped[:3])
        raise AnnotatedStudyError(f"{study}: no image series found" + (f" ({reasons})" if reasons else ""))

    seg_input = is_seg_file(annotations)
    document = None
    if seg_input:
        referenced, frame_of_reference = _seg_series_hint(annotations)
        wanted = series_uid or next((s for s in referenced if any(i.series_uid == s for i in scan.series)), None)
        info = pick_annotated_series(scan, wanted, frame_of_reference)
    else:
        document = read_annotation_json(annotations)
        info = pick_annotated_series(scan, series_uid or document.series_instance_uid)
    volume = load_series(info)
    result = AnnotatedStudy(volume, document, notes=list(volume.warnings), scan=scan)  # type: ignore[arg-type]
    if seg_input:
        from liverview.annotations.seg_lesions import import_seg_document

        imported = import_seg_document(annotations, volume, taxonomy or LabelTaxonomy())
        result.document = imported.document
        result.seg_method = imported.method
        result.notes += list(imported.warnings)
    elif document is not None and document.series_instance_uid and document.series_instance_uid != volume.series_uid:
        raise AnnotatedStudyError(f"the annotations belong to series {document.series_instance_uid}, "
                                  f"not {volume.series_uid}")
    result.notes += place_outlines_by_image(volume, result.document)
    result.notes += outlines_outside(volume, result.document)
    result.notes += unknown_labels(result.document, taxonomy or LabelTaxonomy())
    if not result.document.lesions:
        result.notes.append(f"{annotations.name} holds no lesions")
    return result


def unknown_labels(document: AnnotationDocument, taxonomy: LabelTaxonomy) -> list[str]:
    """A note per label that is none of the taxonomy's classes (a typo, another site's label)."""
    numbers = document.lesion_numbers()
    return [f"lesion {numbers[lesion.id]}'s label {lesion.label!r} is none of the classes "
            f"({', '.join(taxonomy.ids())}): it is kept as written" for lesion in document.lesions
            if lesion.label is not None and lesion.label not in taxonomy]


def place_outlines_by_image(volume: Volume, document: AnnotationDocument) -> list[str]:
    """Put each outline on the slice of the image it names (its SOP Instance UID), not on its slice number
    alone: a series that lost images since it was outlined (every other slice left out) shows other
    anatomy at that number. Outlines on images the series no longer holds are left out, with a note;
    when none of the named images is in the series, nothing can be told and the numbers stay."""
    index_of = {uid: z for z, uid in enumerate(volume.sop_instance_uids)}
    rois = [roi for lesion in document.lesions for roi in lesion.rois if roi.sop_instance_uid]
    if not any(roi.sop_instance_uid in index_of for roi in rois):
        return []
    numbers = document.lesion_numbers()
    notes, moved = [], 0
    for lesion in document.lesions:
        gone = [roi for roi in lesion.rois if roi.sop_instance_uid and roi.sop_instance_uid not in index_of]
        for roi in lesion.rois:
            if roi.sop_instance_uid in index_of and index_of[roi.sop_instance_uid] != roi.slice_index:
                roi.slice_index, moved = index_of[roi.sop_instance_uid], moved + 1
        if gone:
            lesion.rois = [roi for roi in lesion.rois if roi not in gone]
            notes.append(f"lesion {numbers.get(lesion.id, lesion.id)}: {len(gone)} outline(s) lie on images this "
                         f"series does not hold (slice {', '.join(str(r.slice_index) for r in gone[:5])} when "
                         "outlined): " + ("left out" if lesion.rois else "the lesion is left out"))
    kept = [lesion for lesion in document.lesions if lesion.rois]
    if len(kept) < len(document.lesions):
        document.lesions = kept
    if moved:
        notes.append(f"{moved} outline(s) placed on the slice of the image they were drawn on, not on their "
                     "slice number: this series' slices are numbered differently from when they were outlined")
    return notes


def outlines_outside(volume: Volume, document: AnnotationDocument) -> list[str]:
    """A note per lesion with outlines on no slice of the series (a slice index beyond it): they are
    left out of measurements and exports, which must not happen unsaid."""
    n = volume.array.shape[0]
    numbers = document.lesion_numbers()
    notes = []
    for lesion in document.lesions:
        outside = sorted({roi.slice_index for roi in lesion.rois if not 0 <= roi.slice_index < n})
        if outside:
            notes.append(f"lesion {numbers.get(lesion.id, lesion.id)} has {len(outside)} outline slice(s) outside "
                         f"the series' {n} slices (index {', '.join(map(str, outside[:5]))}): left out")
    return notes


def study_phases(opened: AnnotatedStudy) -> tuple[list[SeriesInfo], dict[str, PhaseDecision]]:
    """The annotated series and the study's other series of its Frame of Reference (CT, same plane), each
    with its contrast phase (by series key); the annotated series' phase is the reader's when the
    annotations set one."""
    volume, document = opened.volume, opened.document
    study = [volume.info, *(info for info in (opened.scan.series if opened.scan else [])
                            if volume.info.shares_space_with(info))]
    phases = detect_series_phases(study, {volume.info.key: volume.array})
    correction = document.contrast_phase if document is not None else None
    if correction is not None:
        phases[volume.info.key] = reader_decision(ContrastPhase(correction.phase), correction.reader,
                                                  phases[volume.info.key])
    return study, phases


def other_phase_sources(opened: AnnotatedStudy, study: list[SeriesInfo], phases: dict[str, PhaseDecision],
                        wanted: Callable[[str], bool]) -> list[PhaseSource]:
    """The study's other series whose phase is `wanted`, loaded, as sources to read the lesions on."""
    return [PhaseSource(phases[info.key].phase.value, load_series(info), phases[info.key].decided_by.value)
            for info in study if info.key != opened.volume.info.key and wanted(phases[info.key].phase.value)]


__all__ = ["AnnotatedStudy", "AnnotatedStudyError", "open_annotated_study", "other_phase_sources",
           "pick_annotated_series", "read_annotation_json", "study_phases"]
