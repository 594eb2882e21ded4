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
import sys
from pathlib import Path

from liverview.log_setup import CliFailed, run_cli_job
from liverview.annotations.annotated_study import (AnnotatedStudyError, open_annotated_study, other_phase_sources,
                                                   study_phases)
from liverview.annotations.deid import PseudonymKeyError, Pseudonymizer
from liverview.annotations.export import EXPORT_FORMATS, export_annotations
from liverview.annotations.dataset_format import read_manifest
from liverview.annotations.export_common import ExportError
from liverview.annotations.export_selection import ReaderScope, default_readers, parse_readers
from liverview.annotations.labels import LabelTaxonomy
from liverview.progress import Cancelled
from liverview.io.seg_import import SegImportError



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liverview-export",
        description="Export lesion annotations of a CT/MR study as DICOM SEG, DICOM SR (TID 1500), NIfTI label "
                    "map, CSV table or training dataset. Exports are pseudonymised unless --no-pseudonymize.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  liverview-export /data/study --annotations annotations.json --to seg --out exports/\n"
               "  liverview-export /data/study --annotations annotations.json --to dataset --out dataset/ "
               "--key /shared/pseudonym.key")
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
    parser.add_argument("--with-images", action="store_true",
                        help="seg/sr, pseudonymised: also write the study's images, de-identified with the same UID "
                             "map, so that the export is one consistent de-identified study")
    parser.add_argument("--reader", metavar="NAME",
                        help="content creator for SEG/SR when the lesions going out are not one reader's (the "
                             "consensus, several readers, or none named); one reader's lesions name that reader")
    parser.add_argument("--readers", metavar="WHO", type=parse_readers,
                        help="whose lesions: 'consensus' (one per finding, adjudicated labels), 'all' (every reader's, "
                             "each named), or a reader's name (default: consensus once a label was adjudicated, "
                             "else every reader's)")
    parser.add_argument("--all-lesions", action="store_true",
                        help="dataset: include lesions without a label (default: labelled lesions only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def run(args: argparse.Namespace) -> list[Path]:
    """Do the export described by parsed `args`; returns the files written (or the dataset folder)."""
    taxonomy = LabelTaxonomy()
    opened = open_annotated_study(args.study, args.annotations, args.series, taxonomy)
    volume, document = opened.volume, opened.document
    if opened.seg_method is not None:
        print(f"read {len(document.lesions)} lesion(s) from the SEG (frames matched by {opened.seg_method})")
    for note in opened.notes:
        print(f"note: {note}", file=sys.stderr)

    pseudonymizer = None
    if args.pseudonymize:
        pseudonymizer = Pseudonymizer.from_key_file(args.key) if args.key else Pseudonymizer.from_user_key()
    phase, others = "unknown", []
    if args.to == "dataset":
        study, phases = study_phases(opened)
        phase = phases[volume.info.key].phase.value
        others = other_phase_sources(opened, study, phases, lambda found: found != "unknown")
        if others:
            print(f"each lesion is also read on the study's {', '.join(o.phase for o in others)} series")
    choice = args.readers or default_readers(document, args.reader, args.to)
    if args.reader and choice.scope is ReaderScope.READER and choice.reader != args.reader:
        print(f"note: --reader {args.reader} not used: the lesions going out are {choice.reader}'s, and the export "
              "names their reader", file=sys.stderr)
    result = export_annotations(volume, document, args.to, Path(args.out), taxonomy, args.pseudonymize,
                                pseudonymizer, reader=args.reader, labelled_only=not args.all_lesions,
                                phase=phase, other_phases=others, readers=args.readers,
                                with_images=args.with_images)
    if args.to == "dataset":
        # A lesion exported before replaces its entry, so the folder's own count says what it holds.
        total = (read_manifest(Path(args.out)) or {}).get("n_lesions", "?")
        replaced = " (a lesion exported before replaces its earlier entry)" if result.n_lesions else ""
        print(f"wrote {result.n_lesions} lesion(s) to the dataset, which now holds {total}{replaced}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return result.paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = run_cli_job("liverview-export", args.verbose, lambda: run(args),
                              (AnnotatedStudyError, ExportError, SegImportError, PseudonymKeyError, LookupError,
                               Cancelled))
    except CliFailed:
        return 1
    for path in written:
        print(f"wrote {path}")
    if args.pseudonymize:
        print("(pseudonymised: patient name, ID and birth date removed, dates shifted, UIDs remapped)")
    else:
        print("liverview-export: warning: not pseudonymised (--no-pseudonymize): the files carry the patient's name, "
              "ID, birth date and the original UIDs; keep them inside the clinic", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
