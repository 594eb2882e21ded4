"""Classification metrics in plain numpy (no scikit-learn needed, so the app can compute them too).

Conventions (the same as scikit-learn's defaults, which the tests cross-check):
- ``confusion[i, j]`` counts lesions of true class i predicted as class j.
- precision, recall and F1 of a class with no predictions / no true lesions are 0 (never NaN).
- macro averages run over the classes that occur in the truth or in the predictions (a class the
  test set lacks and the model never predicts says nothing about the model and is left out).
- one-vs-rest ROC AUC is the Mann-Whitney statistic with tied scores counted as half (= the area
  under the trapezoidal ROC curve); a class without positives or without negatives has no AUC (None).
- expected calibration error uses equal-width bins of the top-class confidence:
  ECE = sum_b (n_b / N) |accuracy_b - confidence_b|.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = truth, columns = prediction."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def metrics_from_confusion(confusion: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro and support-weighted averages."""
    cm = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)
    total = cm.sum()
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i]), "predicted": int(predicted[i])}
                 for i, name in enumerate(classes)}
    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0
    with_support = support > 0
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "balanced_accuracy": float(recall[with_support].mean()) if with_support.any() else 0.0,
        "macro_precision": macro(precision), "macro_recall": macro(recall), "macro_f1": macro(f1),
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def macro_f1_interval(y_true: Sequence[int], y_pred: Sequence[int], groups: Sequence[str], num_classes: int,
                      resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro-F1, resampling whole groups (patients) with
    replacement: lesions of one patient share an anatomy and a scan, so they are not independent."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    names, group_of = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    members = [np.flatnonzero(group_of == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    scores = np.empty(resamples)
    for k in range(resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        scores[k] = metrics_from_confusion(confusion_matrix(t[rows], p[rows], num_classes),
                                           [str(c) for c in range(num_classes)])["macro_f1"]
    tail = (1.0 - level) / 2.0
    return float(np.quantile(scores, tail)), float(np.quantile(scores, 1.0 - tail))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    unique_start = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    unique_end = np.r_[unique_start[1:], len(values)]
    mean_rank = (unique_start + unique_end + 1) / 2.0  # mean of start+1 .. end
    ranks_sorted = np.repeat(mean_rank, unique_end - unique_start)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def roc_auc_binary(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve for `scores` of the positive class; None without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve_binary(scores: Sequence[float], positive: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), from (0, 0) to (1, 1), one point per
    distinct score (thresholds descending; the first is +inf)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.array([], dtype=int)
    tps = np.cumsum(pos)[last_of_run]
    fps = np.cumsum(~pos)[last_of_run]
    n_pos, n_neg = max(int(pos.sum()), 1), max(int((~pos).sum()), 1)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr, tpr, thresholds


def roc_auc_ovr(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """One-vs-rest AUC per class and their unweighted mean over the classes that have one."""
    t = np.asarray(y_true, dtype=np.int64)
    per_class = {name: roc_auc_binary(probs[:, i], t == i) for i, name in enumerate(classes)}
    values = [v for v in per_class.values() if v is not None]
    return {"per_class": per_class, "macro": float(np.mean(values)) if values else None}


def reliability_bins(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 10) -> dict[str, list]:
    """Per equal-width confidence bin: edges, count, mean confidence, accuracy (None when empty)."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(y_true, dtype=np.int64)
    confidence = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (p.argmax(axis=1) == t) if len(p) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lower, upper]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    out: dict[str, list] = {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": [],
                            "confidence": [], "accuracy": []}
    for b in range(n_bins):
        in_bin = index == b
        n = int(in_bin.sum())
        out["count"].append(n)
        out["confidence"].append(float(confidence[in_bin].mean()) if n else None)
        out["accuracy"].append(float(correct[in_bin].mean()) if n else None)
    return out


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 10) -> float:
    bins = reliability_bins(probs, y_true, n_bins)
    total = sum(bins["count"])
    if total == 0:
        return 0.0
    return float(sum(n / total * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"])
                     if n))


def log_loss(probs: np.ndarray, y_true: Sequence[int], eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (the categorical cross-entropy)."""
    t = np.asarray(y_true, dtype=np.int64)
    if len(t) == 0:
        return 0.0
    return float(-np.mean(np.log(np.clip(np.asarray(probs)[np.arange(len(t)), t], eps, 1.0))))


def compute_metrics(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str], n_bins: int = 10) -> dict[str, Any]:
    """Every metric of the report for class probabilities `probs` (N, C) against labels `y_true`."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1, len(classes))
    t = np.asarray(y_true, dtype=np.int64)
    pred = p.argmax(axis=1) if len(p) else np.zeros(0, dtype=np.int64)
    result = metrics_from_confusion(confusion_matrix(t, pred, len(classes)), classes)
    auc = roc_auc_ovr(t, p, classes)
    result["roc_auc"] = auc["per_class"]
    result["macro_roc_auc"] = auc["macro"]
    result["ece"] = expected_calibration_error(p, t, n_bins)
    result["reliability"] = reliability_bins(p, t, n_bins)
    result["log_loss"] = log_loss(p, t)
    result["classes"] = list(classes)
    return result


__all__ = ["compute_metrics", "confusion_matrix", "expected_calibration_error", "log_loss", "macro_f1_interval",
           "metrics_from_confusion", "reliability_bins", "roc_auc_binary", "roc_auc_ovr", "roc_curve_binary"]
