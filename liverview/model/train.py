"""Training: categorical cross-entropy, Adam, a learning-rate schedule, early stopping, best-model
checkpointing, fixed seeds, resumable runs; on CPU, one GPU, or several processes with torchrun +
DistributedDataParallel (gloo on CPU, NCCL on GPU). Only rank 0 writes files.

A run folder holds::

    config.json          TrainConfig (datasets, architecture, preprocessing, ...)
    split.json           the train/val/test split (lesion uids, grouped by patient)
    history.json         one entry per epoch (losses, accuracies, macro-F1, learning rate, speed)
    run.json             status (running / finished / cancelled), ranks that took part, timing
    initial_weights.json the bundle a fine-tuning run (`init_from`) started from
    checkpoints/last.pt  everything needed to resume (model, optimizer, scheduler, weight average,
                         early-stopping state)
    checkpoints/best.pt  the state_dict of the best epoch so far (by the monitored validation metric;
                         with `ema_decay`, of the averaged weights, which are what is validated)
    report/              evaluation of the best model on the test split (+ the classical baseline)
    bundle/              the model bundle (weights.pt, model.json, MODEL_CARD.md)

`train_model(config, run_dir, progress, should_stop)` starts a run; `resume_training(run_dir, ...)`
continues one from its last completed epoch (a finished run only redoes its report and bundle).
"""
from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from liverview.atomic_write import write_bytes_atomic
from liverview.progress import Cancelled, Progress, ShouldStop
from liverview.model.baseline import evaluate_baseline
from liverview.model.bundle_format import BundleError, cpu_state, write_json
from liverview.model.bundle_writer import save_bundle
from liverview.model.data import DEFAULT_CLASSES, LesionDataset, LoadedRecords, load_records
from liverview.model.domain import domain_from_records
from liverview.model.evaluation_result import EvaluationResult
from liverview.model.inference import FLIP_DIMS, load_bundle, resolve_device
from liverview.model.metrics import compute_metrics, log_loss
from liverview.model.network import DEFAULT_ARCHITECTURE, build_network, find_class_head, get_architecture
from liverview.model.report import write_report
from liverview.model.split import DEFAULT_FRACTIONS, Split, check_split_matches, find_group_leaks, split_records
from liverview.model.transforms import PreprocessConfig, build_preprocess
from liverview.model.uncertainty import answer_from_copies, uncertainty_levels

log = logging.getLogger(__name__)


MONITORS = ("val_macro_f1", "val_loss")
#: Part of the progress bar for the epochs; the rest is the final evaluation, report and bundle.
TRAINING_SHARE = 0.95
SCHEDULES = ("plateau", "cosine", "none")
#: Training and validation run NHWC: on the 2-core CPU oneDNN's depthwise and 1x1 convolutions train
#: MobileNetV3-Small and -Large about 1.6x faster that way (83 -> 134 and 23 -> 36 images/s, batch 32;
#: benchmarks/bench_model.py).
MEMORY_FORMAT = torch.channels_last


class TrainingError(Exception):
    """A run cannot start or continue; the message says why and what to do."""



#: New models read the key slice and one slice on each side (docs/model.md: 2.5-D input); a bundle or
#: a saved run that does not say so reads the key slice alone (the `PreprocessConfig` default).
TRAINING_NEIGHBOUR_SLICES = 1
#: In the run folder: the bundle a fine-tuning run started from (name, version, SHA-256, classes).
INITIAL_WEIGHTS_FILE = "initial_weights.json"


@dataclass
class TrainConfig:
    """Everything a run depends on (saved as config.json; the seed makes it reproducible)."""

    datasets: list[str]
    architecture: str = DEFAULT_ARCHITECTURE
    # Datasets whose lesions only train (never validate or test): e.g. simulated lesions beside real ones.
    training_only_datasets: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "plateau"
    lr_factor: float = 0.5  # plateau: multiply the LR by this ...
    lr_patience: int = 3  # ... after this many epochs without a lower validation loss
    min_lr: float = 1e-6
    # Exponential moving average of the weights (0 = off): validation, the best checkpoint and the bundle
    # use the averaged weights, which do not swing with the last few noisy steps as the raw ones do.
    ema_decay: float = 0.0
    patience: int = 12  # early stopping: epochs without improvement of `monitor`
    monitor: str = "val_macro_f1"
    class_weights: bool = True
    label_smoothing: float = 0.0
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    num_workers: int = 0
    threads: int | None = None
    device: str = "auto"
    steps_per_epoch: int | None = None  # cap on optimizer steps per epoch (smoke runs, benchmarks)
    baseline: bool = True
    # The bundle answers with the mean over the input and its flips; the test metrics are measured so.
    # Validation during training (early stopping, best epoch) stays one pass per lesion, for speed.
    flip_average: bool = True
    # A clinic's own model must not pass for the bundled one ("liver-lesion-classifier 1.4.0") in the
    # app: its name says it was trained here, its version when ("" = the UTC time the training ended).
    name: str = "locally-trained-lesion-classifier"
    version: str = ""
    # A model bundle whose weights the network starts from (fine-tuning, e.g. the bundled model on a
    # clinic's own lesions) instead of a random initialisation; its architecture and input must match.
    init_from: str | None = None
    # Multiphase models (preprocess.phases): the probability of leaving each phase of a training lesion
    # out (at least one stays), so the network learns to read any subset, a single phase included.
    phase_dropout: float = 0.0
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(
        neighbour_slices=TRAINING_NEIGHBOUR_SLICES))

    def __post_init__(self) -> None:
        get_architecture(self.architecture)  # raises for unknown names
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not 0.0 <= self.phase_dropout < 1.0:
            raise ValueError("phase_dropout must be in [0, 1)")
        self.fractions = tuple(float(f) for f in self.fractions)  # type: ignore[assignment]
        self.datasets = [str(d) for d in self.datasets]
        self.training_only_datasets = [str(d) for d in self.training_only_datasets]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        data["fractions"] = list(self.fractions)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("preprocess"), dict):
            values["preprocess"] = PreprocessConfig.from_dict(values["preprocess"])
        return cls(**values)


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # finished
    stopped_by: str  # "early stopping", "max epochs"
    epochs_run: int
    best_epoch: int
    history: list[dict[str, Any]]
    test_metrics: dict[str, Any] | None
    bundle_dir: Path | None
    report_dir: Path | None


# ------------------------------------------------------------------------------------------------
# processes and devices
# ------------------------------------------------------------------------------------------------


@dataclass
class DistContext:
    """Where this process stands: rank, world size, device. World size 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL for GPUs, gloo for CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world <= 1:
        return DistContext(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def configure_threads(config: TrainConfig, ctx: DistContext) -> int:
    """Intra-op threads: as configured, else the cores shared evenly between the local processes
    (1 per process for 2 processes on a 2-core machine: oversubscription makes every process slower)."""
    if config.threads:
        threads = int(config.threads)
    elif ctx.distributed and ctx.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        threads = max(1, (os.cpu_count() or 1) // max(local, 1))
    else:
        return torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------


def _save_torch_atomic(obj: Any, path: Path) -> None:
    write_bytes_atomic(path, lambda tmp: torch.save(obj, tmp))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise TrainingError(f"{run_dir} is not a training run (no config.json); give the --out folder of a run")
    return TrainConfig.from_dict(_read_json(path))


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------


def train_model(config: TrainConfig, run_dir: str | Path, progress: Progress | None = None,
                should_stop: ShouldStop | None = None) -> TrainResult:
    """Start a new run in `run_dir` (which must not hold a run already: use `resume_training`)."""
    return _run(config, Path(run_dir), resume=False, progress=progress, should_stop=should_stop)


def resume_training(run_dir: str | Path, progress: Progress | None = None, should_stop: ShouldStop | None = None,
                    overrides: dict[str, Any] | None = None) -> TrainResult:
    """Continue a run from its last completed epoch. `overrides` may change settings that do not alter
    the data or the model (epochs, patience, num_workers, threads, device, baseline)."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    allowed = {"epochs", "patience", "num_workers", "threads", "device", "baseline", "steps_per_epoch",
               "flip_average"}
    for key, value in (overrides or {}).items():
        if key not in allowed:
            raise TrainingError(f"--resume cannot change {key!r} (it would change the model or the data)")
        setattr(config, key, value)
    return _run(config, run_dir, resume=True, progress=progress, should_stop=should_stop)


@dataclass
class _State:
    epoch: int = -1  # last completed epoch
    best_key: list[float] = field(default_factory=list)
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stopped_by: str = ""


def _score_key(monitor: str, metrics: dict[str, float]) -> list[float]:
    """Larger is better. Macro-F1 ties (frequent on small validation sets) go to the lower loss."""
    if monitor == "val_macro_f1":
        return [round(metrics["val_macro_f1"], 6), -metrics["val_loss"]]
    return [-metrics["val_loss"]]


def _improved(key: list[float], best: list[float], monitor: str) -> bool:
    if not best:
        return True
    if monitor == "val_loss":
        return key[0] > best[0] + 1e-4
    return key > best


def _run(config: TrainConfig, run_dir: Path, resume: bool, progress: Progress | None,
         should_stop: ShouldStop | None) -> TrainResult:
    ctx = init_distributed(config.device)
    try:
        exists = (run_dir / "config.json").exists()
        if ctx.distributed:
            dist.barrier()  # every rank has looked before rank 0 writes config.json
        if exists and not resume:
            raise TrainingError(f"{run_dir} already holds a training run; continue it with --resume {run_dir} "
                                f"or choose another --out folder")
        return _run_in_context(config, run_dir, resume, progress, should_stop, ctx)
    finally:
        if ctx.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _run_in_context(config: TrainConfig, run_dir: Path, resume: bool, progress: Progress | None,
                    should_stop: ShouldStop | None, ctx: DistContext) -> TrainResult:
    threads = configure_threads(config, ctx)
    log.info("rank %d/%d started on %s (pid %d, host %s, %d intra-op thread(s), backend %s)", ctx.rank,
             ctx.world_size, ctx.device, os.getpid(), socket.gethostname(), threads, ctx.backend or "none")
    report = progress if (progress is not None and ctx.is_main) else (lambda f, m: None)
    checkpoints = run_dir / "checkpoints"
    if ctx.is_main:
        checkpoints.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)

    loaded = load_records(config.datasets, config.classes, training_only=config.training_only_datasets)
    split_path = run_dir / "split.json"
    if resume:
        if not split_path.is_file():
            raise TrainingError(f"{run_dir} has no split.json; it cannot be resumed")
        split = Split.load(split_path)
        problems = check_split_matches(split, loaded.records)
        if problems:
            raise TrainingError(f"the datasets changed since the run started: {'; '.join(problems)}. Start a new run")
    else:
        # Every rank computes the same deterministic split: no need to ship it around.
        split = split_records(loaded.records, config.seed, config.fractions)
        leaks = find_group_leaks(split)
        if leaks:  # cannot happen by construction; checked because a leak would invalidate the report
            raise TrainingError(f"split leaks groups across subsets: {leaks[:3]}")
        if ctx.is_main:
            write_json(run_dir / "config.json", config.to_dict())
            split.save(split_path)
    by_uid = {r.uid: r for r in loaded.records}
    train_records = [by_uid[u] for u in split.train]
    val_records = [by_uid[u] for u in split.val]
    if not train_records:
        raise TrainingError("the training split is empty; the datasets hold too few patients")
    counts = split.class_counts()
    if ctx.is_main:
        log.info("split: train %d (%d from training-only datasets), val %d, test %d lesions (%s)", len(split.train),
                 len(split.training_only), len(split.val), len(split.test), json.dumps(counts))
        if not val_records:
            log.warning("the validation split is empty (too few patients): early stopping and the best epoch "
                        "follow the training loss and accuracy instead")

    preprocess = build_preprocess(config.preprocess)
    train_ds = LesionDataset(train_records, config.classes, preprocess, train=True, seed=config.seed,
                             phase_dropout=config.phase_dropout)
    val_ds = LesionDataset(val_records, config.classes, preprocess, train=False)

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = build_network(config.architecture, len(config.classes), config.preprocess.channels)
    if config.init_from and not resume:
        start = load_initial_weights(model, config)
        if ctx.is_main:
            write_json(run_dir / INITIAL_WEIGHTS_FILE, start)
            log.info("starting from the weights of %s %s (%s); classes new to it: %s", start["name"],
                     start["version"], start["path"], ", ".join(start["new_classes"]) or "none")
    model = model.to(ctx.device, memory_format=MEMORY_FORMAT)
    net = model
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    weights = None
    if config.class_weights:
        n = np.bincount(train_ds.labels, minlength=len(config.classes)).astype(np.float64)
        w = np.where(n > 0, n.sum() / np.maximum(n, 1) / max((n > 0).sum(), 1), 0.0)
        weights = torch.tensor(w, dtype=torch.float32, device=ctx.device)
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _make_scheduler(config, optimizer)
    ema = _make_ema(config, net)

    state = _State()
    if resume:
        state = _load_checkpoint(checkpoints / "last.pt", net, optimizer, scheduler, ema, run_dir)
        if state.finished and state.bad_epochs < config.patience and state.epoch + 1 < config.epochs:
            # A finished run resumed with more --epochs or a larger --patience goes on.
            state.finished, state.stopped_by = False, ""
        if ctx.is_main:
            log.info("resuming after epoch %d (best epoch %d)", state.epoch + 1, state.best_epoch + 1)

    sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    per_rank = len(sampler)
    loader = DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        pin_memory=ctx.device.type == "cuda", drop_last=per_rank > config.batch_size,
                        persistent_workers=config.num_workers > 0)
    steps = len(loader) if config.steps_per_epoch is None else min(len(loader), config.steps_per_epoch)
    if ctx.is_main:
        _write_run_json(run_dir, "running", config, ctx, threads, state)
    try:
        rank_samples = _train_epochs(config, run_dir, ctx, model, net, ema, loader, sampler, train_ds, val_ds,
                                     criterion, optimizer, scheduler, state, steps, report, should_stop)
    except Cancelled:
        if ctx.is_main:
            _write_run_json(run_dir, "cancelled", config, ctx, threads, state)
        raise
    if not state.finished:
        # Resumed with a larger --epochs that is already reached, or epochs == 0 left.
        state.finished, state.stopped_by = True, state.stopped_by or "max epochs"
    ranks = _gather_rank_info(ctx, rank_samples, threads)
    if not ctx.is_main:
        # Keep the process group up until rank 0 has written the report and bundle: a rank that tears
        # down its gloo connections while rank 0 still holds them aborts (std::terminate).
        dist.barrier()
        return TrainResult(run_dir, "finished", state.stopped_by, state.epoch + 1, state.best_epoch + 1,
                           state.history, None, None, None)
    try:
        _save_checkpoint(checkpoints / "last.pt", net, optimizer, scheduler, ema, state)
        report(TRAINING_SHARE, "evaluating the best model on the test split")
        result = finish_run(config, run_dir, split, loaded, state, ctx, net)
        _write_run_json(run_dir, "finished", config, ctx, threads, state, ranks)
    finally:
        if ctx.distributed:
            dist.barrier()
    report(1.0, "done")
    return result


def _train_epochs(config: TrainConfig, run_dir: Path, ctx: DistContext, model: nn.Module, net: nn.Module,
                  ema: AveragedModel | None, loader: DataLoader, sampler: DistributedSampler,
                  train_ds: LesionDataset, val_ds: LesionDataset,
                  criterion: nn.Module, optimizer: torch.optim.Optimizer, scheduler, state: _State, steps: int,
                  report: Progress, should_stop: ShouldStop | None) -> int:
    """The epoch loop; updates `state` and the checkpoints. Returns the samples this rank trained on."""
    checkpoints = run_dir / "checkpoints"
    judged = net if ema is None else ema.module  # the weights validation and best.pt are about
    rank_samples = 0
    for epoch in range(state.epoch + 1, config.epochs):
        if state.finished:
            break
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, samples
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            x = x.to(ctx.device, non_blocking=True, memory_format=MEMORY_FORMAT)
            y = y.to(ctx.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = criterion(logits, y)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(net)
            totals += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)],
                                   dtype=torch.float64)
            rank_samples += len(y)
            report(TRAINING_SHARE * (epoch + (step + 1) / max(steps, 1)) / config.epochs,
                   f"epoch {epoch + 1}/{config.epochs} step {step + 1}/{steps} loss {loss.item():.4f}")
            if not ctx.distributed and should_stop is not None and should_stop():
                raise Cancelled(f"training stopped during epoch {epoch + 1}; resume with --resume {run_dir}")
        elapsed = time.perf_counter() - started
        if ctx.distributed:
            reduced = totals.to(ctx.device)  # NCCL reduces device tensors only; gloo takes CPU ones
            dist.all_reduce(reduced)
            totals = reduced.cpu()
        train_loss = float(totals[0] / max(totals[2], 1))
        train_acc = float(totals[1] / max(totals[2], 1))

        val_probs = _predict_sharded(judged, val_ds, ctx, config.batch_size)
        val_metrics = compute_metrics(val_ds.labels, val_probs, config.classes) if len(val_ds) else None
        val_loss = log_loss(val_probs, val_ds.labels) if len(val_ds) else None
        val_f1 = val_metrics["macro_f1"] if val_metrics else None
        entry = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
                 "val_accuracy": val_metrics["accuracy"] if val_metrics else None, "val_macro_f1": val_f1,
                 "lr": optimizer.param_groups[0]["lr"], "seconds": elapsed,
                 "images_per_second": float(totals[2]) / elapsed if elapsed > 0 else None,
                 "world_size": ctx.world_size}
        # Without a validation split the training numbers stand in for the choice of the best epoch (the
        # history and the report say there was none, instead of calling them validation results).
        judged_loss = train_loss if val_loss is None else val_loss
        judged_f1 = train_acc if val_f1 is None else val_f1
        if config.lr_schedule == "plateau":
            scheduler.step(judged_loss)
        elif scheduler is not None:
            scheduler.step()
        key = _score_key(config.monitor, {"val_macro_f1": judged_f1, "val_loss": judged_loss})
        improved = _improved(key, state.best_key, config.monitor)
        entry["improved"] = improved
        if improved:
            state.best_key, state.best_epoch, state.bad_epochs = key, epoch, 0
        else:
            state.bad_epochs += 1
        state.history.append(entry)
        state.epoch = epoch
        if state.bad_epochs >= config.patience:
            state.finished, state.stopped_by = True, "early stopping"
        elif epoch + 1 >= config.epochs:
            state.finished, state.stopped_by = True, "max epochs"
        if ctx.is_main:
            judged_by = (f"val loss {val_loss:.4f} acc {entry['val_accuracy']:.3f} macro-F1 {val_f1:.3f}"
                         if val_loss is not None and val_f1 is not None else "no validation split")
            log.info("epoch %d/%d: train loss %.4f acc %.3f | %s | lr %.2e | %.1f img/s%s",
                     epoch + 1, config.epochs, train_loss, train_acc, judged_by, entry["lr"],
                     entry["images_per_second"] or 0.0, " *" if improved else "")
            if improved:
                _save_torch_atomic(cpu_state(judged), checkpoints / "best.pt")
            _save_checkpoint(checkpoints / "last.pt", net, optimizer, scheduler, ema, state)
            write_json(run_dir / "history.json", state.history)
        stop = should_stop() if (should_stop is not None and ctx.is_main) else False
        if ctx.distributed:
            flag = torch.tensor([1 if stop else 0], dtype=torch.int64, device=ctx.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop and not state.finished:
            raise Cancelled(f"training stopped after epoch {epoch + 1}; resume with --resume {run_dir}")
    return rank_samples


def _make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.lr_factor,
                                                          patience=config.lr_patience, min_lr=config.min_lr)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    return None


def load_initial_weights(net: nn.Module, config: TrainConfig) -> dict[str, Any]:
    """Copy the weights of the bundle `config.init_from` into the freshly built `net` and return what
    the run records about them. The bundle is verified as the app verifies it (SHA-256) and must have
    the run's architecture and network input (preprocessing apart from augmentation). The class head
    follows the class ids: a class the bundle knows keeps its row, a new one keeps its fresh row."""
    try:
        start = load_bundle(str(config.init_from), "cpu")
    except BundleError as exc:
        raise TrainingError(f"cannot start from {config.init_from}: {exc}") from exc
    if start.info["architecture"] != config.architecture:
        raise TrainingError(f"{start.path} is a {start.info['architecture']}, not a {config.architecture}: only a "
                            f"{start.info['architecture']} can start from it")
    theirs, ours = _network_input(start.preprocess_config), _network_input(config.preprocess)
    differing = sorted(k for k in theirs if theirs[k] != ours.get(k))
    if differing:
        bundle_reads = ", ".join(f"{k} {theirs[k]!r}" for k in differing)
        run_reads = ", ".join(f"{k} {ours.get(k)!r}" for k in differing)
        raise TrainingError(f"{start.path} reads its input differently ({bundle_reads} against {run_reads}); a "
                            f"network continues only on the input it learnt from: train with the bundle's "
                            f"preprocessing")
    head = find_class_head(net)
    state = dict(start.model.state_dict())
    fresh = net.state_dict()
    for key in (f"{head}.weight", f"{head}.bias"):
        if key not in state:
            continue
        rows = fresh[key].clone()
        for i, name in enumerate(config.classes):
            if name in start.classes:
                rows[i] = state[key][start.classes.index(name)]
        state[key] = rows
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise TrainingError(f"the weights of {start.path} do not fit this network: {exc}") from exc
    return {"name": start.name, "version": start.version, "sha256": start.info.get("sha256"),
            "path": str(start.path), "classes": list(start.classes),
            "new_classes": [c for c in config.classes if c not in start.classes]}


def _network_input(preprocess: PreprocessConfig) -> dict[str, Any]:
    """What the network's input depends on: the preprocessing without the training-only augmentation."""
    data = preprocess.to_dict()
    data.pop("augment", None)
    return data


def _make_ema(config: TrainConfig, net: nn.Module) -> AveragedModel | None:
    if not config.ema_decay:
        return None
    # use_buffers: BatchNorm's running statistics are averaged with the weights they belong to.
    return AveragedModel(net, multi_avg_fn=_warming_ema(config.ema_decay), use_buffers=True)


def _warming_ema(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's
    ExponentialMovingAverage with num_updates). Why: a plain EMA starts as a copy of the random initial
    weights and at 0.998 still holds 41 % of them after 5 epochs; validated, such an average answers
    one class for everything and early stopping would judge the wrong weights."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1.0 + n) / (10.0 + n)))(averaged, current, num_averaged)
    return update


def _save_checkpoint(path: Path, net: nn.Module, optimizer, scheduler, ema: AveragedModel | None,
                     state: _State) -> None:
    _save_torch_atomic({
        "format": "liverview.checkpoint", "version": 1, "epoch": state.epoch,
        "model": cpu_state(net), "ema": cpu_state(ema) if ema is not None else None,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "best_key": list(state.best_key), "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
        "finished": state.finished, "stopped_by": state.stopped_by, "torch_rng": torch.get_rng_state(),
    }, path)


def _load_checkpoint(path: Path, net: nn.Module, optimizer, scheduler, ema: AveragedModel | None,
                     run_dir: Path) -> _State:
    if not path.is_file():
        raise TrainingError(f"{path} is missing: the run stopped before its first epoch ended; start it again")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"{path} cannot be read ({exc}); the checkpoint is damaged") from exc
    net.load_state_dict(ckpt["model"])
    if ema is not None:
        ema.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["torch_rng"])
    history_path = run_dir / "history.json"
    history = _read_json(history_path) if history_path.is_file() else []
    history = [h for h in history if h["epoch"] <= ckpt["epoch"] + 1]
    return _State(epoch=int(ckpt["epoch"]), best_key=list(ckpt["best_key"]), best_epoch=int(ckpt["best_epoch"]),
                  bad_epochs=int(ckpt["bad_epochs"]), history=history, finished=bool(ckpt["finished"]),
                  stopped_by=str(ckpt.get("stopped_by", "")))


def _predict_sharded(model: nn.Module, dataset: LesionDataset, ctx: DistContext, batch_size: int) -> np.ndarray:
    """Softmax probabilities for the whole dataset; with several ranks each predicts every world_size-th
    item and the shards are gathered, so every rank gets the full (N, C) array."""
    net = _unwrap(model)
    if ctx.distributed:
        # Each rank updated its own BatchNorm statistics since the last forward: use rank 0's everywhere.
        for buffer in net.buffers():
            dist.broadcast(buffer.data, 0)
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    probs = predict_dataset(net, dataset, ctx.device, batch_size, indices)[0]
    if not ctx.distributed:
        return probs
    shards: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(shards, (indices, probs))
    out = np.zeros((len(dataset), len(dataset.classes)), dtype=np.float32)
    for shard_indices, shard_probs in shards:
        if len(shard_indices):
            out[shard_indices] = shard_probs
    return out


def phase_subsets(phases: Sequence[str]) -> list[tuple[str, ...]]:
    """The phase combinations a multiphase model is measured on: each phase alone, every pair with the
    portal-venous phase, the three without the delayed one, and all of them (in the model's order)."""
    pv = "portal_venous"
    subsets: list[tuple[str, ...]] = [(p,) for p in phases]
    subsets += [tuple(q for q in phases if q in (p, pv)) for p in phases if p != pv and pv in phases]
    if len(phases) > 3 and "delayed" in phases:
        subsets.append(tuple(p for p in phases if p != "delayed"))
    if len(phases) > 1:
        subsets.append(tuple(phases))
    return list(dict.fromkeys(subsets))


def evaluate_phase_subsets(net: nn.Module, dataset: LesionDataset, config: TrainConfig,
                           device: torch.device) -> list[dict[str, Any]]:
    """Test metrics of a multiphase model per phase combination (`phase_subsets`): the lesions read on
    those phases only, the rest marked missing, answered as the app answers (flip average). `dataset` is
    the test split's (read once); its `read_phases` is left as it was."""
    rows = []
    everything = dataset.read_phases
    for subset in phase_subsets(config.preprocess.phases):
        held = dataset.holding(subset)
        if not held:
            continue
        dataset.read_phases = subset
        copies = predict_dataset(net, dataset, device, config.batch_size, indices=held, views=FLIP_DIMS)
        metrics = compute_metrics(dataset.labels[held], answer_from_copies(copies, config.flip_average), config.classes)
        rows.append({"phases": list(subset), "n": len(held), "accuracy": metrics["accuracy"],
                     "macro_f1": metrics["macro_f1"]})
        log.info("test, phases %s: macro-F1 %.3f on %d lesions", "+".join(subset), metrics["macro_f1"], len(held))
    dataset.read_phases = everything
    return rows


def predict_dataset(net: nn.Module, dataset: LesionDataset, device: torch.device, batch_size: int = 32,
                    indices: Sequence[int] | None = None,
                    views: Sequence[tuple[int, ...]] = ((),)) -> np.ndarray:
    """Softmax probabilities (len(views), len(indices), C) of a bare network, eval mode, no gradients: one
    copy per view, a view being the dims to flip (() = the input as given; `FLIP_DIMS` = every copy
    `inference.predict_flips` makes)."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    out = np.zeros((len(views), len(indices), len(dataset.classes)), dtype=np.float32)
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            x = torch.stack([dataset[i][0] for i in chunk]).to(device, memory_format=MEMORY_FORMAT)
            for k, dims in enumerate(views):
                view = torch.flip(x, dims) if dims else x
                out[k, start:start + len(chunk)] = torch.softmax(net(view).float(), dim=1).cpu().numpy()
    net.train(was_training)
    return out


def _gather_rank_info(ctx: DistContext, samples: int, threads: int) -> list[dict[str, Any]]:
    mine = {"rank": ctx.rank, "pid": os.getpid(), "host": socket.gethostname(), "device": str(ctx.device),
            "threads": threads, "samples_trained": samples}
    if not ctx.distributed:
        return [mine]
    everyone: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(everyone, mine)
    return list(everyone)


def _write_run_json(run_dir: Path, status: str, config: TrainConfig, ctx: DistContext, threads: int, state: _State,
                    ranks: list[dict[str, Any]] | None = None) -> None:
    path = run_dir / "run.json"
    previous = _read_json(path) if path.is_file() else {}
    data = {**previous, "status": status, "world_size": ctx.world_size, "backend": ctx.backend,
            "device": str(ctx.device), "threads_per_process": threads, "epochs_completed": state.epoch + 1,
            "best_epoch": state.best_epoch + 1, "stopped_by": state.stopped_by, "torch_version": torch.__version__,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    data.setdefault("started", data["updated"])
    if ranks is not None:
        data["ranks"] = ranks
    write_json(path, data)


def _training_data_summary(loaded: LoadedRecords, split: Split, classes: Sequence[str]) -> dict[str, Any]:
    simulated = all(r.simulated for r in loaded.records)
    descriptions = list(dict.fromkeys(d.get("description") for d in loaded.datasets if d.get("description")))
    return {"datasets": loaded.datasets, "n_lesions": len(loaded.records), "n_skipped": len(loaded.skipped),
            "class_counts": loaded.class_counts(classes), "split_counts": split.class_counts(),
            **({"n_training_only": len(split.training_only)} if split.training_only else {}),
            "n_groups": len(set(split.groups.values())), "simulated": simulated,
            "description": "; ".join(descriptions) if descriptions else
            ("Simulated lesions (liverview.synth)." if simulated else "Lesions exported from liverview.")}


def finish_run(config: TrainConfig, run_dir: Path, split: Split, loaded: LoadedRecords, state: _State,
               ctx: DistContext, net: nn.Module) -> TrainResult:
    """Rank 0, after the last epoch: best weights -> test-split evaluation (+ baseline) -> report + bundle."""
    best = run_dir / "checkpoints" / "best.pt"
    if best.is_file():
        net.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    net.to(ctx.device)
    by_uid = {r.uid: r for r in loaded.records}
    test_records = [by_uid[u] for u in split.test]
    preprocess = build_preprocess(config.preprocess)
    results: dict[str, EvaluationResult] = {}
    if test_records:
        test_ds = LesionDataset(test_records, config.classes, preprocess, train=False)
        # Every flipped copy, as the app makes them: the answer and the uncertainty the app would show.
        copies = predict_dataset(net, test_ds, ctx.device, config.batch_size, views=FLIP_DIMS)
        results["cnn"] = EvaluationResult("cnn", f"CNN ({config.architecture})", [r.uid for r in test_records],
                                          test_ds.labels, answer_from_copies(copies, config.flip_average),
                                          config.classes, uncertainty=uncertainty_levels(copies, config.flip_average))
    else:
        log.warning("the test split is empty: no test metrics (the datasets hold too few patients)")
    if config.baseline and test_records:
        try:
            results["baseline"] = evaluate_baseline([by_uid[u] for u in split.train], test_records, config.classes,
                                                    seed=config.seed)
        except ImportError as exc:
            log.warning("classical baseline skipped: %s (install the 'train' extra)", exc)
    test_metrics = results["cnn"].metrics if "cnn" in results else None
    bundle_metrics: dict[str, Any] = dict(test_metrics or {})
    bundle_metrics.pop("reliability", None)
    if test_records and config.preprocess.phases:
        bundle_metrics["by_phases"] = evaluate_phase_subsets(net, test_ds, config, ctx.device)
    if "baseline" in results:
        b = results["baseline"].metrics
        bundle_metrics["baseline"] = {"classifier": results["baseline"].title, "accuracy": b["accuracy"],
                                      "macro_f1": b["macro_f1"]}
    if test_metrics:
        bundle_metrics["split"] = "test"
    training = {"architecture": config.architecture, "epochs_run": state.epoch + 1, "best_epoch": state.best_epoch + 1,
                "stopped_by": state.stopped_by, "seed": config.seed, "batch_size": config.batch_size, "lr": config.lr,
                "optimizer": "Adam", "loss": "categorical cross-entropy" + (" (class-weighted)" if config.class_weights
                                                                           else ""),
                "lr_schedule": config.lr_schedule, "monitor": config.monitor, "patience": config.patience,
                **({"weight_average": f"exponential moving average, decay {config.ema_decay} per step"}
                   if config.ema_decay else {}),
                "world_size": ctx.world_size, "device": str(ctx.device), "run_dir": str(run_dir.resolve())}
    if (run_dir / INITIAL_WEIGHTS_FILE).is_file():
        training["initial_weights"] = _read_json(run_dir / INITIAL_WEIGHTS_FILE)
    data_summary = _training_data_summary(loaded, split, config.classes)
    notes = ["Trained on simulated lesions only: the simulator's idea of each class, not real radiology."] \
        if data_summary["simulated"] else []
    bundle_dir = save_bundle(run_dir / "bundle", net, architecture=config.architecture, classes=config.classes,
                             preprocess_config=config.preprocess, metrics=bundle_metrics, training_data=data_summary,
                             training=training, name=config.name,
                             version=config.version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M"),
                             history=state.history,
                             card_notes=notes, flip_average=config.flip_average,
                             training_domain=domain_from_records(
                                 [by_uid[u] for u in split.train], config.preprocess.phases).to_dict())
    report_dir = write_report(run_dir / "report", results, history=state.history, context={
        "title": f"Training run {run_dir.name}", "model": config.architecture, "split": split.class_counts(),
        "training": training, "datasets": [d["path"] for d in loaded.datasets],
        "preprocessing": config.preprocess.to_dict(), "bundle": str(bundle_dir)})
    return TrainResult(run_dir, "finished", state.stopped_by, state.epoch + 1, state.best_epoch + 1, state.history,
                       test_metrics, bundle_dir, report_dir)


__all__ = ["DistContext", "INITIAL_WEIGHTS_FILE", "MONITORS", "SCHEDULES", "TrainConfig", "TrainResult",
           "TrainingError", "configure_threads", "finish_run", "init_distributed",
           "load_initial_weights", "load_run_config", "predict_dataset", "resume_training", "seed_everything",
           "train_model"]
