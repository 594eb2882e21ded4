"""`liverview-train`: train the lesion classifier on exported datasets; writes report + model bundle.

    liverview-train DATASET [DATASET ...] --out RUN [options]
    liverview-train --resume RUN [--epochs N]
    torchrun --standalone --nproc_per_node 2 -m liverview.model.train_cli DATASET --out RUN

Exit status: 0 finished, 1 error (the message says what to do), 130 stopped (resume with --resume).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from liverview.annotations.dataset_format import MARGIN_Z_SLICES

log = logging.getLogger("liverview.model.train_cli")


def setup_logging(verbosity: int = 0, log_file: Path | None = None) -> Callable[[], None]:
    """Rank-tagged log lines on stderr (and in `log_file` on rank 0). Returns a function that removes
    the handlers again (the CLIs call it on exit, so repeated in-process calls do not pile them up)."""
    rank = os.environ.get("RANK")
    tag = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    fmt = logging.Formatter(f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(level)
    added: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        added.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in added:
        handler.setFormatter(fmt)
        root.addHandler(handler)

    def remove() -> None:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)

    return remove


class ProgressBar:
    """A one-line bar on a terminal; a log line every 10 % otherwise (CI logs, torchrun)."""

    def __init__(self, stream=sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_decile = -1
        self.started = time.monotonic()

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.tty:
            filled = int(round(fraction * self.width))
            elapsed = time.monotonic() - self.started
            eta = elapsed / fraction - elapsed if fraction > 0.01 else float("nan")
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {fraction:6.1%} "
                              f"eta {eta / 60:4.1f} min  {message[:70]:<70}")
            if fraction >= 1.0:
                self.stream.write("\n")
            self.stream.flush()
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            log.info("%3.0f%% %s", fraction * 100, message)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liverview-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n"
                                       "  liverview-train dataset/ --out runs/first     runs/first/bundle is then a model for "
                                       "File > Load model...\n"
                                       "  liverview-train dataset/ --out runs/tuned --init-from bundled --epochs 20\n"
                                       "  liverview-train --resume runs/first --epochs 40\n\n"
                                       + __doc__.split("\n\n")[-1].strip())
    p.add_argument("datasets", nargs="*", type=Path, help="dataset folders (training-dataset export / liverview-synth)")
    p.add_argument("--train-only", type=Path, action="append", metavar="DATASET",
                   help="a dataset whose lesions only train, never validate or test (repeatable): e.g. simulated "
                        "lesions added to your own, so the reported metrics stay those on your own cases")
    p.add_argument("--out", type=Path, help="run folder to create (checkpoints, report, bundle)")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in RUN from its last completed epoch")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields (command-line options override it)")
    p.add_argument("--init-from", type=Path, metavar="BUNDLE",
                   help="start from the weights of this model bundle (fine-tuning; 'bundled' = the model liverview "
                        "ships) instead of random ones; the run takes its architecture and input preprocessing")
    p.add_argument("--arch", help="architecture: mobilenet_v3_small (default), resnet18, mobilenet_v3_large, "
                                  "efficientnet_b0, tiny_cnn (tests only)")
    p.add_argument("--epochs", type=int, help="most epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, help="lesions per optimizer step")
    p.add_argument("--lr", type=float, help="Adam's learning rate")
    p.add_argument("--weight-decay", type=float, help="Adam's weight decay (L2 penalty)")
    p.add_argument("--lr-schedule", choices=("plateau", "cosine", "none"))
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay per step (e.g. 0.998) "
                        "and validate, checkpoint and bundle it; 0 (default) = off")
    p.add_argument("--patience", type=int, help="early stopping: epochs without improvement")
    p.add_argument("--monitor", choices=("val_macro_f1", "val_loss"))
    p.add_argument("--seed", type=int, help="seed of the split, the augmentation and the initial weights")
    p.add_argument("--input-size", type=int, help="network input size in pixels (default 224)")
    p.add_argument("--neighbour-slices", type=int, choices=range(MARGIN_Z_SLICES + 1), metavar="N",
                   help="slices on each side of the key slice the network also reads (2.5-D input; default 1; "
                        f"at most the training export's margin, {MARGIN_Z_SLICES})")
    p.add_argument("--phases", metavar="P1,P2,...",
                   help="contrast phases the network reads, e.g. non_contrast,arterial,portal_venous,delayed "
                        "(a multiphase dataset, liverview-synth --phases); default: the key series alone")
    p.add_argument("--phase-dropout", type=float, metavar="P",
                   help="multiphase: leave each phase of a training lesion out with this probability (default 0)")
    p.add_argument("--denoise", choices=("none", "bilateral", "nlmeans"), help="noise reduction before the crop")
    p.add_argument("--clahe", action="store_true", default=None, help="contrast enhancement (CLAHE) of each channel")
    p.add_argument("--no-augment", action="store_true", help="switch training augmentation off (for comparisons)")
    p.add_argument("--no-class-weights", action="store_true", help="plain (unweighted) cross-entropy")
    p.add_argument("--no-baseline", action="store_true", help="skip the classical baseline in the report")
    p.add_argument("--no-flip-average", action="store_true",
                   help="the bundle answers with one pass per lesion, not the mean over the lesion and its flips")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--threads", type=int, help="intra-op threads per process (default: cores / local processes)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--steps-per-epoch", type=int, help="cap optimizer steps per epoch (smoke runs)")
    p.add_argument("--name", help="model name written into the bundle (default: locally-trained-lesion-classifier)")
    p.add_argument("--model-version", dest="model_version",
                   help="model version written into the bundle (default: when the training ended, YYYY.MM.DD.HHMM UTC)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _config_from_args(args: argparse.Namespace):
    from liverview.model.train import TRAINING_NEIGHBOUR_SLICES, TrainConfig
    from liverview.model.transforms import AugmentConfig, PreprocessConfig

    base = json.loads(args.config.read_text(encoding="utf-8")) if args.config else {}
    if args.datasets:
        base["datasets"] = [str(d) for d in args.datasets]
    if args.train_only:
        base["training_only_datasets"] = [str(d) for d in args.train_only]
    mapping = {"arch": "architecture", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
               "weight_decay": "weight_decay", "lr_schedule": "lr_schedule", "ema": "ema_decay",
               "patience": "patience", "monitor": "monitor", "seed": "seed", "workers": "num_workers",
               "threads": "threads", "device": "device", "steps_per_epoch": "steps_per_epoch", "name": "name",
               "model_version": "version", "phase_dropout": "phase_dropout"}
    if args.init_from:
        _start_from_bundle(base, args.init_from)
    for arg, key in mapping.items():
        value = getattr(args, arg)
        if value is not None:
            base[key] = value
    if args.no_baseline:
        base["baseline"] = False
    if args.no_flip_average:
        base["flip_average"] = False
    if args.no_class_weights:
        base["class_weights"] = False
    pre = dict(base.get("preprocess") or {})
    if args.input_size:
        pre["size"] = args.input_size
    if args.neighbour_slices is not None:
        pre["neighbour_slices"] = args.neighbour_slices
    pre.setdefault("neighbour_slices", TRAINING_NEIGHBOUR_SLICES)
    if args.phases:
        pre["phases"] = [p.strip() for p in args.phases.split(",") if p.strip()]
    if args.denoise:
        pre["denoise"] = args.denoise
    if args.clahe:
        pre["clahe"] = True
    if args.no_augment:
        pre["augment"] = asdict(AugmentConfig(rotation_deg=0, zoom=0, shift=0, hflip=False, vflip=False, hu_offset=0,
                                              hu_scale=0, noise_hu=0, gamma=0))
    base["preprocess"] = PreprocessConfig.from_dict(pre)
    return TrainConfig.from_dict(base)


def _start_from_bundle(base: dict, bundle: Path) -> None:
    """`base` (TrainConfig fields) starts from `bundle`'s weights, with its architecture and network input
    unless the config file sets them (a conflict is then refused by `load_initial_weights`)."""
    from liverview.model.bundle_format import BundleError, read_bundle_info
    from liverview.paths import default_model_path

    path = default_model_path() if str(bundle) == "bundled" else bundle
    try:
        _, info = read_bundle_info(path)
    except BundleError as exc:
        raise ValueError(f"--init-from: {exc}") from exc
    base["init_from"] = str(path)
    base.setdefault("architecture", info["architecture"])
    if "preprocess" not in base:
        base["preprocess"] = {k: v for k, v in (info.get("preprocessing") or {}).items() if k != "augment"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.resume) == bool(args.out):
        parser.error("give either --out RUN (new run) or --resume RUN")
    if args.out and not args.datasets:
        parser.error("give at least one dataset folder")
    run_dir: Path = args.resume or args.out
    is_main = os.environ.get("RANK", "0") == "0"
    remove_logging = setup_logging(-1 if args.quiet else args.verbose, run_dir / "train.log" if is_main else None)
    try:
        return _train(args, run_dir, is_main)
    finally:
        remove_logging()


def _train(args: argparse.Namespace, run_dir: Path, is_main: bool) -> int:
    from liverview.model.data import DatasetError
    from liverview.model.train import TrainingError, resume_training, train_model
    from liverview.progress import Cancelled
    from liverview.model.report import too_few_to_tell

    stop_requested = {"flag": False}

    def on_interrupt(signum, frame):  # first Ctrl+C: stop cleanly after this step; second: abort
        if stop_requested["flag"]:
            raise KeyboardInterrupt
        stop_requested["flag"] = True
        log.warning("stopping after the current step (Ctrl+C again to abort)")

    # Signal handlers can only be installed from the main thread (main() may run elsewhere, e.g. in tests).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if in_main_thread else None
    progress = ProgressBar() if not args.quiet else None
    try:
        if args.resume:
            overrides = {k: v for k, v in {"epochs": args.epochs, "patience": args.patience,
                                           "num_workers": args.workers, "threads": args.threads,
                                           "device": args.device, "steps_per_epoch": args.steps_per_epoch}.items()
                         if v is not None}
            if args.no_baseline:
                overrides["baseline"] = False
            if args.no_flip_average:
                overrides["flip_average"] = False
            result = resume_training(args.resume, progress, lambda: stop_requested["flag"], overrides)
        else:
            config = _config_from_args(args)
            result = train_model(config, args.out, progress, lambda: stop_requested["flag"])
    except Cancelled as exc:
        log.warning("%s", exc)
        return 130
    except (TrainingError, DatasetError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    if is_main and result.test_metrics is not None:
        m = result.test_metrics
        log.info("finished (%s) after %d epochs, best epoch %d: test accuracy %.3f, macro-F1 %.3f", result.stopped_by,
                 result.epochs_run, result.best_epoch, m["accuracy"], m["macro_f1"])
        if warning := too_few_to_tell(m):
            log.warning("the test split: %s", warning)
    if is_main:
        log.info("report: %s  bundle: %s", result.report_dir and result.report_dir / "report.md", result.bundle_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
