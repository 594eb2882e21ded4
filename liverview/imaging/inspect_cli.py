"""`liverview-inspect PATH [--json] [--load]`: what liverview finds in a folder, zip, DICOMDIR or files.

Uses exactly the scan/load code of the GUI, so a support person can reproduce what a user sees.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from liverview.log_setup import setup_cli_logging
from liverview.processes import exit_without_teardown
from liverview.io.series import ScanResult, SeriesInfo, scan_paths
from liverview.io.sources import SourceError
from liverview.io.pixels import FrameDecodeError
from liverview.io.process_pool import shut_down
from liverview.io.volume import Volume, allocate_volume, fill_volume, read_slice

if TYPE_CHECKING:
    from liverview.imaging.contrast_phase import Enhancement, EnhancementSampler


def describe_series(info: SeriesInfo, volume: Volume | None, identifiers: bool = False) -> dict:
    """One series as the JSON object documented in the README; the patient's name and ID only with
    `identifiers`."""
    warnings = list(volume.warnings if volume is not None else info.warnings)
    entry: dict[str, Any] = {
        "key": info.key,
        "series_uid": info.series_uid,
        "study_uid": info.study_uid,
        "modality": info.modality,
        "description": info.identity.series_description,
        "series_number": info.identity.series_number,
        "study_date": info.identity.study_date,
        "plane": info.plane,
        "n_images": info.n_images,
        "shape": list(info.shape),
        "spacing_mm": [round(v, 4) for v in info.spacing_mm],
        "slice_thickness_mm": info.slice_thickness_mm,
        "is_hu": volume.is_hu if volume is not None else info.is_ct,
        "hu_range": None,
        "hu_range_from": None,
        "warnings": warnings,
        "failed": [],
    }
    if identifiers:
        entry["patient_name"], entry["patient_id"] = info.identity.patient_name, info.identity.patient_id
    if volume is not None and volume.loaded.any():
        entry["hu_range"] = list(volume.value_range())
        entry["hu_range_from"] = "all slices"
        entry["failed"] = [{"path": f.path, "reason": f.reason} for f in volume.failed]
    return entry


class _PhaseSampling:
    """The contrast phase's sampled slices, outlined as they arrive while the workers decode the rest.
    The detector (and OpenCV) is imported at the first slice, when the workers are already decoding,
    not before the load starts on one core."""

    def __init__(self, info: SeriesInfo) -> None:
        self.info = info
        self.sampler: EnhancementSampler | None = None

    def __call__(self, volume: Volume, z: int) -> None:
        if self.sampler is None:
            from liverview.imaging.contrast_phase import EnhancementSampler

            self.sampler = EnhancementSampler(self.info)
        self.sampler.add(z, volume.array[z])


def inspect_paths(paths: Sequence[str], load: bool, identifiers: bool = False) -> dict:
    """Scan `paths`; read every series' pixels with `load`, otherwise only its middle slice (for a
    quick value range, labelled as such) and the slices the contrast-phase detector samples. The
    patients' names and IDs only with `identifiers`."""
    scan: ScanResult = scan_paths(list(paths))
    series = []
    arrays: dict[str, np.ndarray] = {}
    measured: dict[str, Enhancement | None] = {}
    for info in scan.series:
        if load:
            sampling = _PhaseSampling(info)
            volume = fill_volume(allocate_volume(info), on_slice=sampling)
            arrays[info.key] = volume.array
            if sampling.sampler is not None and sampling.sampler.complete:
                measured[info.key] = sampling.sampler.result()
            series.append(describe_series(info, volume, identifiers))
            continue
        entry = describe_series(info, None, identifiers)
        try:
            middle = read_slice(info, info.n_images // 2)
            entry["hu_range"], entry["hu_range_from"] = [int(middle.min()), int(middle.max())], "middle slice"
        except FrameDecodeError as exc:
            entry["warnings"].append(f"middle slice cannot be decoded: {exc}")
        series.append(entry)
    from liverview.imaging.contrast_phase import detect_series_phases

    phases = detect_series_phases(scan.series, arrays, measured=measured)
    for info, entry in zip(scan.series, series):
        entry["contrast_phase"] = phases[info.key].phase.value
        entry["contrast_phase_evidence"] = phases[info.key].evidence()
    return {
        "paths": list(paths),
        "n_files": scan.n_files,
        "series": series,
        "skipped": [{"path": s.path, "reason": s.reason} for s in scan.skipped],
    }


def format_report(report: dict) -> str:
    lines: list[str] = []
    for s in report["series"]:
        z, y, x = s["shape"]
        sz, sy, sx = s["spacing_mm"]
        values = "HU" if s["is_hu"] else "values"
        rng = f"{values} {s['hu_range'][0]}..{s['hu_range'][1]} ({s['hu_range_from']})" if s["hu_range"] else f"{values} unknown"
        patient = f"{s['patient_name'] or '(no name)'} [{s['patient_id']}]  " if "patient_name" in s else ""
        lines.append(f"{patient}{s['study_date'] or '(no date)'}  "
                     f"{s['modality'] or '??'}  #{s['series_number'] if s['series_number'] is not None else '-'}  "
                     f"{s['description'] or '(no description)'}")
        lines.append(f"    {s['n_images']} image(s), {x}x{y}x{z} ({s['plane']}), spacing {sx:.3g} x {sy:.3g} x {sz:.3g} mm, {rng}")
        lines.append(f"    contrast phase: {s['contrast_phase']} ({s['contrast_phase_evidence']['summary']})")
        lines.append(f"    series {s['series_uid']}")
        lines.extend(f"    warning: {w}" for w in s["warnings"])
        lines.extend(f"    failed: {f['path']}: {f['reason']}" for f in s["failed"])
    lines.append(f"{len(report['series'])} series from {report['n_files']} file(s); {len(report['skipped'])} skipped")
    lines.extend(f"  skipped: {s['path']}: {s['reason']}" for s in report["skipped"])
    if any("patient_name" not in s for s in report["series"]):
        lines.append("patient names and IDs withheld (--identifiers shows them)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="liverview-inspect", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  liverview-inspect /media/cdrom                       every series, and every skipped file with its reason\n"
               "  liverview-inspect study.zip --json --load > report.json   for a support ticket (no names or IDs)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="folder, zip, DICOMDIR or DICOM file(s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--load", action="store_true", help="read the pixels of every series (HU range over all slices)")
    parser.add_argument("--identifiers", action="store_true",
                        help="also print each series' patient name and ID (withheld by default: this output "
                             "ends up in support tickets and e-mails)")
    args = parser.parse_args(argv)
    remove_logging = setup_cli_logging()
    try:
        report = inspect_paths(args.paths, load=args.load, identifiers=args.identifiers)
    except SourceError as exc:  # its message names each path with its reason
        print(f"liverview-inspect: cannot read {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"liverview-inspect: cannot read {' '.join(args.paths)}: {exc}", file=sys.stderr)
        return 2
    finally:
        remove_logging()
    if args.json:
        json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(format_report(report))
    # The others were reported; a script must still learn that one of its PATHs was not there.
    missing = [path for path in args.paths if not os.path.exists(path)]
    if missing:
        print(f"liverview-inspect: cannot read {', '.join(missing)}: does not exist", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """The `liverview-inspect` command: `main`, then out without the interpreter's teardown. The workers
    are stopped first: they share our stdout, and a caller reading it to the end (a pipe) would wait for
    them."""
    try:
        code = main()
    except BrokenPipeError:
        # Whoever read our output stopped (`| head`): it has what it wanted. The status a tool killed by
        # SIGPIPE gives, without Python's traceback.
        code = 128 + 13
    shut_down(wait=True)
    exit_without_teardown(code)


if __name__ == "__main__":
    run()
