"""`liverview-evaluate`: evaluate a model bundle on dataset folders and write the report.

    liverview-evaluate MODEL DATASET [DATASET ...] --out DIR [--split RUN/split.json --subset test] [--baseline]

Without --split every labelled lesion of the datasets is evaluated (e.g. an independent test set);
with it, only the chosen subset (and --baseline can train the classical baseline on its train part).
Exit status: 0 done, 1 error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from liverview.model.train_cli import ProgressBar, setup_logging

log = logging.getLogger("liverview.model.evaluate_cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liverview-evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  liverview-evaluate runs/first/bundle dataset/ --out evaluation/\n"
                                       "  liverview-evaluate runs/first/bundle dataset/ --out evaluation/ --split "
                                       "runs/first/split.json --baseline")
    p.add_argument("model", type=Path, help="model bundle folder (holding model.json and weights.pt)")
    p.add_argument("datasets", nargs="+", type=Path, help="dataset folders")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--split", type=Path, help="split.json of a training run: evaluate one subset of it")
    p.add_argument("--subset", default="test", choices=("train", "val", "test"),
                   help="which part of the --split run (default: test)")
    p.add_argument("--baseline", action="store_true", help="also fit and evaluate the classical baseline (needs --split)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=int, default=32, help="lesions per forward pass (default 32)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug log lines")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar; warnings and errors only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.baseline and args.split is None:
        parser.error("--baseline needs --split RUN/split.json: the baseline is fitted on the run's train part")
    remove_logging = setup_logging(-1 if args.quiet else args.verbose)
    try:
        return _evaluate(args)
    finally:
        remove_logging()


def _evaluate(args: argparse.Namespace) -> int:
    from liverview.model.bundle_format import BundleError
    from liverview.model.data import DatasetError
    from liverview.model.evaluate import evaluate_bundle

    try:
        summary = evaluate_bundle(args.model, args.datasets, args.out, split_path=args.split, subset=args.subset,
                                  baseline=args.baseline, device=args.device, batch_size=args.batch_size,
                                  progress=None if args.quiet else ProgressBar())
    except (BundleError, DatasetError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 1
    for result in summary["results"].values():
        log.info("%s: %d lesions, accuracy %.3f, macro-F1 %.3f", result["title"], result["n"], result["accuracy"],
                 result["macro_f1"])
    log.info("report: %s", Path(args.out) / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
