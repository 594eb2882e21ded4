"""liverview-export: write a study's lesion annotations as DICOM SEG, DICOM SR, NIfTI, CSV or a
training dataset, without the GUI.

    liverview-export STUDY --annotations FILE --to seg|sr|nifti|csv|dataset --out DIR
                     [--series UID] [--no-pseudonymize] [--key FILE] [--reader NAME] [--all-lesions]

STUDY is anything `scan_paths` opens (folder, zip, DICOMDIR, files). FILE is a liverview annotation
JSON file or a DICOM SEG (one lesion per segment). The series is --series, else the one the
annotations name (the JSON's series_instance_uid, or the series the SEG references / shares its
Frame of Reference with). Exit status 0 on success, 1 on any error (the message says why).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from liverview.annotations.document import AnnotationDocument, AnnotationFormatError
from liverview.annotations.deid import PseudonymKeyError, Pseudonymizer
from liverview.annotations.export import EXPORT_FORMATS, export_annotations
from liverview.annotations.export_common import ExportError
from liverview.annotations.labels import LabelTaxonomy
from liverview.io import LoadCancelled, SeriesInfo, SourceError, load_series, scan_paths
from liverview.io.seg_import import SegImportError, is_seg_file



class CliError(Exception):
    """A failure reported to the user as one line; exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liverview-export",
        description="Export lesion annotations of a CT/MR study as DICOM SEG, DICOM SR (TID 1500), NIfTI label "
                    "map, CSV table or training dataset. Exports are pseudonymised unless --no-pseudonymize.")
    parser.add_argument("study", help="folder, zip file, DICOMDIR or DICOM file(s) of the study")
    parser.add_argument("--annotations", required=True, metavar="FILE",
                        help="liverview annotation JSON file, or a DICOM SEG")
    parser.add_argument("--to", required=True, choices=list(EXPORT_FORMATS), help="export format")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (a dataset folder for --to dataset)")
    parser.add_argument("--series", metavar="UID", help="Series Instance UID to use (default: the annotated series)")
    parser.add_argument("--no-pseudonymize", dest="pseudonymize", action="store_false",
                        help="keep patient name, ID, birth date, UIDs and reader names (for use inside the clinic)")
    parser.add_argument("--key", metavar="FILE", type=Path,
                        help="pseudonymisation key file to use instead of this user's (share one across workstations)")
    parser.add_argument("--reader", metavar="NAME", help="content creator for SEG/SR (default: the only reader)")
    parser.add_argument("--all-lesions", action="store_true",
                        help="dataset: include lesions without a label (default: labelled lesions only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def _read_annotation_json(path: Path) -> AnnotationDocument:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: neither a DICOM SEG nor a liverview annotation JSON file (not UTF-8 text)") from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: neither a DICOM SEG nor a liverview annotation JSON file ({exc})") from exc
    try:
        return AnnotationDocument.from_dict(data)
    except AnnotationFormatError as exc:
        raise CliError(f"{path}: {exc}") from exc


def _pick_series(scan, wanted: str | None, fallback_for: str | None = None) -> SeriesInfo:
    if wanted:
        for info in scan.series:
            if info.series_uid == wanted:
                return info
        found = ", ".join(f"{i.series_uid} ({i.describe()})" for i in scan.series) or "none"
        raise CliError(f"series {wanted} is not in the study (series found: {found})")
    if fallback_for:
        candidates = [i for i in scan.series if i.frame_of_reference_uid == fallback_for]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise CliError("several series share the SEG's Frame of Reference; choose one with --series UID: "
                           + ", ".join(f"{i.series_uid} ({i.describe()})" for i in candidates))
    if len(scan.series) == 1:
        return scan.series[0]
    raise CliError("cannot tell which series the annotations belong to; give --series UID (series found: "
                   + ", ".join(f"{i.series_uid} ({i.describe()})" for i in scan.series) + ")")


def _seg_series_hint(path: Path) -> tuple[list[str], str]:
    """(Referenced Series Instance UIDs, Frame of Reference UID) named by a SEG, header only."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    series = [str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])]
    return [s for s in series if s], str(ds.get("FrameOfReferenceUID", ""))


def run(args: argparse.Namespace) -> list[Path]:
    """Do the export described by parsed `args`; returns the files written (or the dataset folder)."""
    annotations = Path(args.annotations)
    if not annotations.is_file():
        raise CliError(f"{annotations}: annotation file not found")
    try:
        scan = scan_paths(args.study)
    except SourceError as exc:
        raise CliError(str(exc)) from exc
    if not scan.series:
        reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in scan.skipped[:3])
        raise CliError(f"{args.study}: no image series found" + (f" ({reasons})" if reasons else ""))

    seg_input = is_seg_file(annotations)
    if seg_input:
        referenced, frame_of_reference = _seg_series_hint(annotations)
        wanted = args.series or next((s for s in referenced if any(i.series_uid == s for i in scan.series)), None)
        info = _pick_series(scan, wanted, frame_of_reference)
    else:
        document = _read_annotation_json(annotations)
        info = _pick_series(scan, args.series or document.series_instance_uid)
    volume = load_series(info)
    for warning in volume.warnings:
        print(f"note: {warning}", file=sys.stderr)

    taxonomy = LabelTaxonomy()
    if seg_input:
        from liverview.annotations.seg_lesions import import_seg_document

        imported = import_seg_document(annotations, volume, taxonomy)
        document = imported.document
        print(f"read {len(document.lesions)} lesion(s) from the SEG (frames matched by {imported.method})")
        for warning in imported.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    elif document.series_instance_uid and document.series_instance_uid != volume.series_uid:
        raise CliError(f"the annotations belong to series {document.series_instance_uid}, not {volume.series_uid}")

    pseudonymizer = None
    if args.pseudonymize:
        pseudonymizer = Pseudonymizer.from_user_key(args.key) if args.key else Pseudonymizer.from_user_key()
    result = export_annotations(volume, document, args.to, Path(args.out), taxonomy, args.pseudonymize,
                                pseudonymizer, reader=args.reader, labelled_only=not args.all_lesions)
    if args.to == "dataset":
        print(f"added {result.n_lesions} lesion(s) to the dataset")
    return result.paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        written = run(args)
    except (CliError, ExportError, SegImportError, PseudonymKeyError, LookupError, LoadCancelled) as exc:
        print(f"liverview-export: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"liverview-export: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    if args.pseudonymize:
        print("(pseudonymised: patient name, ID and birth date removed, dates shifted, study UID remapped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
