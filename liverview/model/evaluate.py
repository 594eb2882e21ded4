"""`evaluate_bundle`: a model bundle's evaluation on dataset folders, written as a report.

Loads the bundle, answers every chosen lesion as the app answers (the flipped copies, the answer and
the uncertainty shown with it), optionally fits the classical baseline on the split's training part,
and writes the report (`report.write_report`) that `liverview-evaluate` points to.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverview.model.baseline import evaluate_baseline
from liverview.model.bundle_format import HISTORY_FILE
from liverview.model.data import LesionDataset, load_records
from liverview.model.evaluation_result import EvaluationResult
from liverview.model.inference import FLIP_DIMS, load_bundle, predict_flips
from liverview.model.report import write_report
from liverview.model.split import Split
from liverview.model.uncertainty import answer_from_copies, uncertainty_levels
from liverview.progress import Progress, ShouldStop

log = logging.getLogger(__name__)


def evaluate_bundle(bundle: str | Path, datasets: Sequence[str | Path], out_dir: str | Path, *,
                    split_path: str | Path | None = None, subset: str = "test", baseline: bool = False,
                    device: str = "cpu", batch_size: int = 32, progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> dict[str, Any]:
    """Evaluate a model bundle on dataset folders (all labelled lesions, or one subset of a saved
    split) and write the report into `out_dir`. Returns the metrics summary (metrics.json)."""
    loaded = load_bundle(bundle, device)
    records = load_records(datasets, loaded.classes)
    chosen = records.records
    train_records = []
    if split_path is not None:
        split = Split.load(split_path)
        by_uid = {r.uid: r for r in records.records}
        wanted = split.subset(subset)
        missing = [u for u in wanted if u not in by_uid]
        if missing:
            log.warning("%d lesion(s) of the %s split are not in these datasets (first %s)", len(missing), subset,
                        missing[0])
        chosen = [by_uid[u] for u in wanted if u in by_uid]
        train_records = [by_uid[u] for u in split.train if u in by_uid]
    if not chosen:
        raise ValueError("no lesions to evaluate")
    dataset = LesionDataset(chosen, loaded.classes, loaded.preprocess, train=False)
    copies = np.zeros((len(FLIP_DIMS), len(dataset), len(loaded.classes)), dtype=np.float32)
    for start in range(0, len(dataset), batch_size):
        if should_stop is not None and should_stop():
            raise InterruptedError("evaluation cancelled")
        stop = min(start + batch_size, len(dataset))
        copies[:, start:stop] = predict_flips(loaded, [dataset[i][0] for i in range(start, stop)])
        if progress is not None:
            progress(stop / len(dataset), f"predicting {stop}/{len(dataset)} lesions")
    # The copies the app makes for every answer: the answer itself and the uncertainty shown with it.
    results = {"cnn": EvaluationResult("cnn", f"CNN ({loaded.info['architecture']})", [r.uid for r in chosen],
                                       dataset.labels, answer_from_copies(copies, loaded.flip_average),
                                       loaded.classes, uncertainty=uncertainty_levels(copies, loaded.flip_average))}
    if baseline:
        if not train_records:
            log.warning("the baseline needs the training lesions: give --split with the run's split.json")
        else:
            results["baseline"] = evaluate_baseline(train_records, chosen, loaded.classes)
    history = None
    history_path = loaded.path / HISTORY_FILE
    if history_path.is_file():
        history = json.loads(history_path.read_text(encoding="utf-8"))
    context = {"title": f"Evaluation of {loaded.name} {loaded.version}".strip(), "model": loaded.info["architecture"],
               "bundle": str(loaded.path), "datasets": [str(Path(d).resolve()) for d in datasets],
               "subset": subset if split_path is not None else "all labelled lesions",
               "preprocessing": loaded.preprocess_config.to_dict()}
    warning = trained_on(loaded.info, records.datasets, split_path is not None and subset != "train")
    if warning:
        log.warning("%s", warning)
        context["warning"] = warning
    out = write_report(out_dir, results, history, context)
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def trained_on(info: dict[str, Any], evaluated: Sequence[dict[str, Any]], held_out_subset: bool) -> str:
    """Why these datasets do not measure the model on new lesions, or "": a dataset the bundle records as
    its training data (the same folder, or the same export moved: its creation time, to the second, and
    its number of lesions), evaluated whole, or as a training-only dataset whose every lesion trained
    it, even within a held-out subset of a split."""
    trained = (info.get("training_data") or {}).get("datasets") or []

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        moved = bool(a.get("created")) and (a.get("created"), a.get("n_used")) == (b.get("created"), b.get("n_used"))
        return moved or a.get("path") == b.get("path")

    hits = [(e, t) for e in evaluated for t in trained if same(e, t)]
    overlapping = [e["path"] for e, t in hits if not held_out_subset or t.get("role") == "training only"]
    if not overlapping:
        return ""
    return (f"{', '.join(dict.fromkeys(overlapping))} trained this model: these figures say how well it fits "
            "lesions it learnt from, not how it does on new ones (give the run's split.json with --split and "
            "--subset test, or a dataset it never saw)")


__all__ = ["evaluate_bundle", "trained_on"]
