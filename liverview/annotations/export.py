"""One entry point for every export, shared by the GUI's Export menu and `liverview-export`."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from liverview.annotations.consensus import summarize_consensus
from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.document import AnnotationDocument
from liverview.annotations.export_common import ExportError, export_identity, output_stem
from liverview.annotations.export_dataset import PhaseSource, export_dataset
from liverview.annotations.export_selection import (ExportReaders, ReaderScope, conflicting_findings, default_readers,
                                                    select_for_export)
from liverview.annotations.labels import LabelTaxonomy
from liverview.io.volume import Volume

#: format id -> what the user sees
EXPORT_FORMATS: dict[str, str] = {
    "seg": "DICOM SEG (one segment per lesion)",
    "sr": "DICOM SR measurement report (TID 1500)",
    "nifti": "NIfTI label map + JSON labels",
    "csv": "CSV lesion table",
    "dataset": "Training dataset (patches + lesions.jsonl)",
}


#: The formats whose pseudonymised export can bring the images, de-identified with the same UID map.
WITH_IMAGES_FORMATS = ("seg", "sr")


@dataclass(frozen=True)
class ExportResult:
    paths: list[Path]
    n_lesions: int
    #: What the reader should know about what was left out (one sentence each).
    notes: tuple[str, ...] = ()


def export_annotations(volume: Volume, document: AnnotationDocument, to: str, out_dir: Path,
                       taxonomy: LabelTaxonomy | None = None, pseudonymize: bool = True,
                       pseudonymizer: Pseudonymizer | None = None, reader: str | None = None,
                       labelled_only: bool = True, phase: str = "unknown",
                       other_phases: Sequence[PhaseSource] = (), readers: ExportReaders | None = None,
                       with_images: bool = False) -> ExportResult:
    """Write `document` on `volume` in format `to` (a key of EXPORT_FORMATS) into `out_dir`.

    File names come from the (pseudonymised unless asked otherwise) patient and series, so nothing
    identifying leaks through a name. Returns the files written (for "dataset": its index files) and
    the number of lesions exported. A training dataset records the series' contrast `phase` and holds
    each lesion as read on `other_phases` too. `readers` chooses whose lesions go out (default:
    the consensus once a label was adjudicated; see `export_selection`). A pseudonymised SEG or SR
    remaps every UID; `with_images` writes the source images de-identified with the same map beside
    it (folder NAME-images), so that the two form one consistent study.
    Raises `ExportError` with a user-facing reason.
    """
    if to not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {to!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    taxonomy = taxonomy or LabelTaxonomy()
    out_dir = Path(out_dir).resolve()
    sources = {Path(frame.path).resolve().parent for frame in volume.info.frames}
    if any(out_dir == folder or folder in out_dir.parents for folder in sources):
        raise ExportError(f"{out_dir} is inside the study's DICOM folder; liverview never writes there — "
                          "choose another folder")
    if pseudonymize and pseudonymizer is None:
        pseudonymizer = Pseudonymizer.from_user_key()
    choice = readers or default_readers(document, reader, to)
    notes: tuple[str, ...] = ()
    summary = None
    if to == "dataset" and choice.scope is not ReaderScope.READER:
        summary = summarize_consensus(document, volume)
        conflicts = conflicting_findings(document, summary, taxonomy)
        undecided = [text for text, decided in conflicts if not decided]
        if choice.scope is ReaderScope.ALL_READERS and conflicts:
            # Each reader's own label would go out, the decided one or not: one lesion, contradicting examples.
            raise ExportError(
                f"A training dataset takes each lesion as one example with one label, but readers labelled the same "
                f"finding differently: {'; '.join(text + (' (decided)' if decided else '') for text, decided in conflicts)}. "
                "Every reader's lesions go out with each reader's own label, decided or not: export the consensus "
                "(it carries the decided labels; decide the others in the consensus, Ctrl+K), or one reader's lesions.")
        if undecided:
            notes = (f"Left out, as the readers label them differently and nobody decided: {'; '.join(undecided)} "
                     "(decide them in the consensus, Ctrl+K).",)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / output_stem(export_identity(volume, pseudonymize, pseudonymizer))
    common: dict[str, Any] = dict(pseudonymize=pseudonymize, pseudonymizer=pseudonymizer)
    numbers = document.lesion_numbers()  # the app's L1, L2, … of the whole series, before readers are chosen
    try:
        document = select_for_export(document, volume, choice, summary)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    if choice.scope is ReaderScope.READER:
        reader = choice.reader
    n = len(document.lesions)
    images: list[Path] = []
    if with_images and pseudonymize and to in WITH_IMAGES_FORMATS:
        from liverview.annotations.export_images import export_deidentified_images

        images = export_deidentified_images(volume, stem.with_name(stem.name + "-images"),
                                            pseudonymizer or Pseudonymizer.from_user_key())
    if pseudonymize and to in WITH_IMAGES_FORMATS and not images:
        notes += ("The SEG or SR refers to its images by pseudonymised UIDs: other DICOM tools show it only on images "
                  "de-identified alike (export with the images), liverview on the original series with this "
                  "installation's pseudonymisation key.",)
    if to == "seg":
        from liverview.annotations.export_seg import export_seg

        return ExportResult([export_seg(volume, document, stem.with_name(stem.name + "-seg.dcm"), taxonomy, reader=reader,
                                        **common), *images], n, notes)
    if to == "sr":
        from liverview.annotations.export_sr import export_sr

        return ExportResult([export_sr(volume, document, stem.with_name(stem.name + "-sr.dcm"), taxonomy, reader=reader,
                                       **common), *images], n, notes)
    if to == "nifti":
        from liverview.annotations.export_nifti import export_nifti

        return ExportResult(list(export_nifti(volume, document, stem.with_name(stem.name + ".nii.gz"), taxonomy,
                                              numbers=numbers, **common)), n)
    if to == "csv":
        from liverview.annotations.export_nifti import export_csv

        return ExportResult([export_csv(volume, document, stem.with_name(stem.name + ".csv"), taxonomy, numbers=numbers,
                                        **common)], n)
    n = export_dataset(volume, document, out_dir, labelled_only=labelled_only, taxonomy=taxonomy, phase=phase,
                       other_phases=other_phases, **common)
    return ExportResult([out_dir / "lesions.jsonl", out_dir / "dataset.json"], n, notes)
