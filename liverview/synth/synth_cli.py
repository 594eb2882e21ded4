"""``liverview-synth``: write a training dataset of simulated liver lesions.

    liverview-synth OUT --lesions-per-class N [--seed S] [--patients P] [--workers W]
                    [--ct-series DIR --liver-mask FILE [--liver-label liver]]

OUT receives the app's training-dataset format (dataset.json, lesions.jsonl, patches/*.npz; see
docs/dataset-format.md) with N lesions of each class, reader "simulator", one patient pseudonym per
simulated patient, and each line's simulator parameters under ``synth`` (docs/synth.md). With
``--ct-series`` the lesions are inserted into the liver of that real series instead of phantoms;
the liver comes from ``--liver-mask``: a liverview annotation file with outlines labelled "liver",
a DICOM SEG with a liver segment, or a NumPy mask of the series' shape.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from liverview.annotations.export_common import ExportError
from liverview.log_setup import describe_os_error
from liverview.progress import Cancelled
from liverview.synth.simulator import DEFAULT_CONFIG, SimulatorConfig, load_liver_mask, write_simulated_dataset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liverview-synth",
        description="Simulate liver lesions (benign cyst, hemangioma, HCC, metastasis) in portal-venous CT and "
        "write them as a liverview training dataset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  liverview-synth simulated/ -n 1000 --seed 1\n"
               "  liverview-synth simulated-4phase/ -n 300 --phases non_contrast,arterial,portal_venous,delayed",
    )
    parser.add_argument("out", type=Path, help="dataset folder to write (created; an existing liverview dataset is "
                                                "added to)")
    parser.add_argument("--lesions-per-class", "-n", type=int, required=True, metavar="N",
                        help="lesions of each class (the classes are balanced)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives the same data (default 0)")
    parser.add_argument("--patients", type=int, default=None, metavar="P",
                        help="spread the lesions over P patients (default: 2-6 lesions per patient)")
    parser.add_argument("--workers", type=int, default=None, metavar="W",
                        help="processes simulating patients (default: the number of CPUs); the output does not "
                             "depend on it")
    parser.add_argument("--min-diameter", type=float, default=DEFAULT_CONFIG.diameter_mm[0], metavar="MM",
                        help=f"smallest lesion diameter in mm (default {DEFAULT_CONFIG.diameter_mm[0]:g})")
    parser.add_argument("--max-diameter", type=float, default=DEFAULT_CONFIG.diameter_mm[1], metavar="MM",
                        help=f"largest lesion diameter in mm (default {DEFAULT_CONFIG.diameter_mm[1]:g})")
    low, high = DEFAULT_CONFIG.noise_sigma_hu
    parser.add_argument("--noise-sd", type=float, nargs=2, default=DEFAULT_CONFIG.noise_sigma_hu,
                        metavar=("LOW", "HIGH"),
                        help=f"image noise SD in HU of the phantom patients, drawn per patient from LOW..HIGH "
                             f"(default {low:g} {high:g}); LOW = HIGH fixes it. With the same seed the lesions are "
                             f"the same whatever the noise, so a model can be tested on them at another noise")
    parser.add_argument("--phases", default=",".join(DEFAULT_CONFIG.phases), metavar="P1,P2,...",
                        help="contrast phases each phantom patient is rendered in, e.g. "
                             "non_contrast,arterial,portal_venous,delayed (must include portal_venous; default "
                             "portal_venous alone); every lesion's patch then holds each phase (docs/synth.md)")
    real = parser.add_argument_group("lesions in a real CT series")
    real.add_argument("--ct-series", type=Path, metavar="DIR",
                      help="folder (or zip / DICOMDIR) with the CT series to insert lesions into")
    real.add_argument("--series-uid", help="which series of --ct-series (default: the one with the most images)")
    real.add_argument("--liver-mask", type=Path, metavar="FILE",
                      help="the series' liver: liverview annotation JSON, DICOM SEG, or .npy/.npz mask")
    real.add_argument("--liver-label", action="append", metavar="TEXT",
                      help="label / note / segment name that marks the liver (default: liver; repeatable)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    return parser


class _ProgressPrinter:
    """One line per noticeable step on stderr (not more than about twice a second)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if self.quiet or (now - self.last < 0.5 and fraction < 1.0):
            return
        self.last = now
        print(f"[{100.0 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 done, 1 error, 130 interrupted)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    name = "liverview-synth"
    if args.lesions_per_class < 1:
        print(f"{name}: --lesions-per-class must be at least 1", file=sys.stderr)
        return 1
    if (args.ct_series is None) != (args.liver_mask is None):
        print(f"{name}: --ct-series and --liver-mask go together (the lesions need the series' liver)",
              file=sys.stderr)
        return 1
    try:
        config = SimulatorConfig(diameter_mm=(args.min_diameter, args.max_diameter),
                                 noise_sigma_hu=tuple(args.noise_sd),
                                 phases=tuple(p.strip() for p in args.phases.split(",") if p.strip()))
    except ValueError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    progress = _ProgressPrinter(args.quiet)
    volume = mask = None
    if args.ct_series is not None:
        from liverview.io import load_series
        from liverview.io.seg_import import SegImportError

        try:
            volume = load_series(args.ct_series, series_uid=args.series_uid)
        except (LookupError, OSError, ValueError) as exc:
            print(f"{name}: cannot load a series from {args.ct_series}: {exc}", file=sys.stderr)
            return 1
        try:
            mask = load_liver_mask(args.liver_mask, volume, tuple(args.liver_label or ("liver",)))
        except (OSError, ValueError, SegImportError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        if not args.quiet:
            print(f"Series {volume.shape[0]} x {volume.shape[1]} x {volume.shape[2]}, liver mask "
                  f"{int(mask.sum())} voxels on {int(mask.any(axis=(1, 2)).sum())} slices", file=sys.stderr)
    workers = args.workers if args.workers is not None else max(1, os.cpu_count() or 1)
    try:
        summary = write_simulated_dataset(
            args.out, args.lesions_per_class, args.seed, patients=args.patients, config=config, ct_volume=volume,
            liver_mask=mask, workers=workers, progress=progress,
        )
    except KeyboardInterrupt:
        print(f"{name}: interrupted; the patients finished so far are in {args.out}", file=sys.stderr)
        return 130
    except Cancelled:
        print(f"{name}: cancelled; the patients finished so far are in {args.out}", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"{name}: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except (ExportError, ValueError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except BrokenProcessPool as exc:
        print(f"{name}: a worker process stopped ({exc}); the patients finished so far are in {args.out}; "
              f"run with --workers 1 to see the error", file=sys.stderr)
        return 1
    counts = ", ".join(f"{label} {count}" for label, count in summary.per_class.items())
    print(f"Wrote {summary.n_lesions} lesions ({counts}) of {summary.n_patients} patient{'s' if summary.n_patients != 1 else ''} to {summary.out_dir} "
          f"in {summary.seconds:.1f} s ({summary.lesions_per_second:.1f} lesions/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
