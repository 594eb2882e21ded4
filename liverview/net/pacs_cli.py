"""liverview-pacs: talk to a PACS from the command line.

    liverview-pacs --pacs HOST:PORT[:CALLED_AET] [--calling-aet AET] echo
    liverview-pacs ... find [--patient-name PATTERN] [--patient-id ID] [--accession N]
                            [--date YYYYMMDD[-YYYYMMDD]] [--modality CT] [--json]
    liverview-pacs ... get STUDY_UID --out DIR [--series UID] [--move --port N]
    liverview-pacs ... send FILE...

`get` stores complete series under DIR/studies/<study uid>/<series uid>/ (a series that did not arrive
completely leaves nothing there). Exit status 0 on success; 1 with a sentence on stderr saying what
went wrong; 130 when interrupted.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from liverview.io.sources import SourceError, collect_files
from liverview.log_setup import setup_cli_logging
from liverview.net.cache import RetrieveCache
from liverview.net.errors import PacsError, PacsTimeout, PartialRetrieve
from liverview.net.node import DEFAULT_CALLING_AE, PacsNode, RetrieveMethod, parse_pacs_address
from liverview.net.query import StudyQuery, find_series, find_studies
from liverview.net.retrieve import retrieve_study
from liverview.net.send import send_files
from liverview.net.verify import verify_node
from liverview.progress import Cancelled

_DATE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liverview-pacs", description="Verify, query, retrieve from and send to a PACS.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  liverview-pacs --pacs pacs.hospital.org:104:PACS echo\n"
               "  liverview-pacs --pacs pacs.hospital.org:104:PACS find --patient-name 'DOE^J*' --date 20261207\n"
               "  liverview-pacs --pacs pacs.hospital.org:104:PACS get STUDY_UID --out retrieved/\n"
               "  liverview-pacs --pacs pacs.hospital.org:104:PACS send exports/*-seg.dcm")
    parser.add_argument("--pacs", required=True, metavar="HOST:PORT[:CALLED_AET]",
                        help="the PACS (its AE title defaults to ANY-SCP)")
    parser.add_argument("--calling-aet", default=DEFAULT_CALLING_AE, metavar="AET",
                        help=f"liverview's AE title, as registered on the PACS (default {DEFAULT_CALLING_AE})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("echo", help="C-ECHO: exit 0 when the PACS answers")
    find = commands.add_parser("find", help="C-FIND studies")
    find.add_argument("--patient-name", default="", metavar="PATTERN", help="with * and ? wildcards, e.g. 'DOE^J*'")
    find.add_argument("--patient-id", default="", metavar="ID", help="exact Patient ID")
    find.add_argument("--accession", default="", metavar="N", help="accession number")
    find.add_argument("--date", default="", metavar="YYYYMMDD[-YYYYMMDD]", help="study date or range")
    find.add_argument("--modality", default="", metavar="CT", help="a modality in the study")
    find.add_argument("--json", action="store_true", help='print {"studies": [...]} as JSON')
    get = commands.add_parser("get", help="retrieve a study (or one series) into DIR")
    get.add_argument("study_uid", metavar="STUDY_UID", help="the Study Instance UID, as `find` prints it")
    get.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder the study's files are written to")
    get.add_argument("--series", metavar="UID", help="only this series")
    get.add_argument("--move", action="store_true", help="C-MOVE instead of C-GET (the PACS must know --calling-aet)")
    get.add_argument("--port", type=int, default=11113, metavar="N", help="C-MOVE: port liverview listens on")
    send = commands.add_parser("send", help="C-STORE files: exit 0 when every object was accepted")
    send.add_argument("files", nargs="+", type=Path, metavar="FILE",
                      help="DICOM files or folders of them (e.g. an export's SEG and SR)")
    return parser


def run_find(node: PacsNode, args: argparse.Namespace) -> int:
    if not _DATE.match(args.date):
        raise ValueError(f"--date {args.date!r} is not YYYYMMDD or YYYYMMDD-YYYYMMDD")
    studies = find_studies(node, StudyQuery(patient_name=args.patient_name, patient_id=args.patient_id,
                                            accession_number=args.accession, study_date=args.date,
                                            modality=args.modality))
    if args.json:
        print(json.dumps({"studies": [s.to_json() for s in studies]}, indent=1))
        return 0
    for s in studies:
        print(f"{s.study_date or '--------'}  {s.patient_name.replace('^', ' ') or '(no name)'}  ID {s.patient_id or '-'}  "
              f"acc {s.accession_number or '-'}  {'/'.join(s.modalities) or '-'}  {s.study_description or '-'}  "
              f"{s.n_series if s.n_series is not None else '?'} series, "
              f"{s.n_instances if s.n_instances is not None else '?'} images  {s.study_uid}")
    print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}", file=sys.stderr)
    return 0


def run_get(node: PacsNode, args: argparse.Namespace) -> int:
    if args.move:
        node = node.with_changes(retrieve_method=RetrieveMethod.MOVE, move_port=args.port)
    series = find_series(node, args.study_uid)
    if args.series:
        series = [s for s in series if s.series_uid == args.series]
        if not series:
            raise PacsError(f"The PACS {node.name} has no series {args.series} in study {args.study_uid}.")
    if not series:
        raise PacsError(f"The PACS {node.name} has no study {args.study_uid}.")
    expected = sum(s.n_instances or 0 for s in series)
    cache = RetrieveCache(args.out, limit_bytes=2**62)
    try:
        result = retrieve_study(node, args.study_uid, cache, series=series)
    except PacsError as exc:
        stored = sum(len(list(p.iterdir())) for p in _published(cache, args.study_uid, series))
        received = exc.received if isinstance(exc, (PartialRetrieve, PacsTimeout)) else 0
        print(f"stored {stored} of {expected} images ({received} more arrived but their series was incomplete)",
              file=sys.stderr)
        raise
    for match, path in result.series:
        print(f"{path}  {len(list(path.iterdir()))} images  {match.modality} {match.series_description}")
    print(f"stored {result.n_images} of {expected} images in {len(result.series)} series")
    return 0 if result.n_images >= expected else 1


def _published(cache: RetrieveCache, study_uid: str, series) -> list[Path]:
    return [p for s in series if (p := cache.series_dir(study_uid, s.series_uid)) is not None]


def run_send(node: PacsNode, args: argparse.Namespace) -> int:
    found = collect_files(args.files)  # a folder (an export's), a zip or a DICOMDIR as the app opens them
    for skipped in found.skipped:
        print(f"not sent: {skipped.path}: {skipped.reason}", file=sys.stderr)
    if not found.paths:
        raise ValueError("no files to send")
    results = send_files(node, [Path(path) for path in found.paths])
    for result in results:
        print(result.message, file=sys.stdout if result.accepted else sys.stderr)
    return 0 if all(r.accepted for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    remove_logging = setup_cli_logging()
    try:
        node = parse_pacs_address(args.pacs, args.calling_aet)
        if args.command == "echo":
            print(verify_node(node).message)
            return 0
        return {"find": run_find, "get": run_get, "send": run_send}[args.command](node, args)
    except (PacsError, ValueError, SourceError) as exc:
        print(f"liverview-pacs: {exc}", file=sys.stderr)
        if "PACS settings" in str(exc):  # the app's words, shared with the window's PACS dialog
            print("liverview-pacs: here, the PACS settings are --pacs HOST:PORT[:CALLED_AET] and --calling-aet AET",
                  file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("liverview-pacs: cancelled; incomplete series were not kept", file=sys.stderr)
        return 130
    finally:
        remove_logging()


if __name__ == "__main__":
    sys.exit(main())
