"""The uncertainty the app shows beside every answer, and what it is worth on a labelled test set.

A lesion's uncertainty is read from its class probabilities (normalised entropy) and from the
flipped copies of its input (`bundle.FLIP_DIMS`): how far their probabilities spread and how many
agree on the top class. The app's answer panel and the evaluation report both go through
`uncertainty_level`, so the report's "accuracy when the app said low" is about exactly the label a
radiologist sees. numpy only (no torch): the copies come from `inference.predict_flips` or the training
loop's `predict_dataset`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from liverview.model.metrics import confusion_matrix, metrics_from_confusion

#: A Grad-CAM heatmap explains an answer only where its mass lies on the lesion: the outline is grown by
#: this much (mm) before the share inside is counted (`classify.Heatmap.share_inside`), and below
#: `HEATMAP_INSIDE_MIN` the app says the heatmap points elsewhere.
HEATMAP_MARGIN_MM = 5.0
HEATMAP_INSIDE_MIN = 0.5

#: Uncertainty bands on the normalised entropy (0 = certain, 1 = uniform) and the TTA spread.
ENTROPY_MODERATE, ENTROPY_HIGH = 0.25, 0.5
SPREAD_MODERATE, SPREAD_HIGH = 0.08, 0.2
#: Least share of the flipped copies that must agree with the answer's top class.
AGREEMENT_MODERATE, AGREEMENT_HIGH = 1.0, 0.75
LEVELS: tuple[str, ...] = ("low", "moderate", "high")


def normalised_entropy(probabilities: Sequence[float] | np.ndarray) -> float:
    """Shannon entropy divided by log(number of classes): 0 for a one-hot, 1 for a uniform vector."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    if p.size < 2:
        return 0.0
    return float(-(p * np.log(p)).sum() / math.log(p.size))


def answer_from_copies(copies: np.ndarray, flip_average: bool) -> np.ndarray:
    """The model's answer (N, C) from its copies (K, N, C), the first being the unflipped input: their mean
    for a flip-averaging model, else the first."""
    return copies.mean(axis=0) if flip_average else copies[0]


def copy_statistics(copies: np.ndarray, answer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(spread, agreement) per lesion: the largest SD of a class probability over the copies (K, N, C), and
    the share of copies whose top class is the answer's (N, C)."""
    spread = copies.std(axis=0).max(axis=1)
    agreement = (copies.argmax(axis=2) == answer.argmax(axis=1)).mean(axis=0)
    return spread, agreement


def uncertainty_level(entropy: float, spread: float = 0.0, agreement: float = 1.0) -> str:
    """'low', 'moderate' or 'high': the worst of the entropy, the copies' spread and their agreement."""
    if entropy >= ENTROPY_HIGH or spread >= SPREAD_HIGH or agreement < AGREEMENT_HIGH:
        return "high"
    if entropy >= ENTROPY_MODERATE or spread >= SPREAD_MODERATE or agreement < AGREEMENT_MODERATE:
        return "moderate"
    return "low"


def uncertainty_levels(copies: np.ndarray, flip_average: bool) -> list[str]:
    """The level the app would show for each of N lesions, from their copies (K, N, C)."""
    answer = answer_from_copies(copies, flip_average)
    spread, agreement = copy_statistics(copies, answer)
    return [uncertainty_level(normalised_entropy(p), float(s), float(a)) for p, s, a in zip(answer, spread, agreement)]


def metrics_by_uncertainty(y_true: Sequence[int], y_pred: Sequence[int], levels: Sequence[str],
                           classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per level, and for each level together with the more certain ones ("low + moderate"): how many
    lesions, the share of all (coverage), accuracy and macro-F1. Levels without lesions are kept (n 0),
    so a reader sees that the model never answered that way."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    levels = np.asarray(levels)
    unknown = sorted(set(levels.tolist()) - set(LEVELS))
    if unknown:
        raise ValueError(f"unknown uncertainty level(s) {unknown}; expected {LEVELS}")
    groups = [(level, levels == level) for level in LEVELS]
    groups += [(" + ".join(LEVELS[:i + 1]), np.isin(levels, LEVELS[:i + 1])) for i in range(1, len(LEVELS) - 1)]
    rows = []
    for name, chosen in groups:
        n = int(chosen.sum())
        row: dict[str, Any] = {"uncertainty": name, "n": n, "coverage": n / len(levels) if len(levels) else 0.0,
                               "accuracy": None, "macro_f1": None}
        if n:
            m = metrics_from_confusion(confusion_matrix(y_true[chosen], y_pred[chosen], len(classes)), classes)
            row.update(accuracy=m["accuracy"], macro_f1=m["macro_f1"])
        rows.append(row)
    return rows


def format_percent(share: float) -> str:
    """A probability or a share as a whole percentage that never claims certainty it does not have:
    0.9992 is ">99%", not "100%" (nor 0.0004 "0%"); only exactly 1 and 0 are 100% and 0%."""
    if 0.995 <= share < 1.0:
        return ">99%"
    if 0.0 < share < 0.005:
        return "<1%"
    return f"{share:.0%}"


def describe_measured_level(level: str, rows: Mapping[str, Mapping[str, Any]], simulated: bool,
                            read_on_phases: bool = False, macro_f1: str = "") -> str:
    """How often a model was right on its test split when it showed `level`; `rows` are its
    `metrics_by_uncertainty` rows by level (a phase reader's for the phases it read when `read_on_phases`).
    `macro_f1`: its macro-F1 on all those lesions, whatever the uncertainty, as text. "" when neither
    was measured."""
    row = rows.get(level)
    lesions = "simulated test lesions" if simulated else "test lesions"
    read = " read on these phases" if read_on_phases else ""
    if row and row.get("n"):
        right = round(row["accuracy"] * row["n"])
        text = (f"On its {lesions}{read}, answers shown with {level} uncertainty were right in {right} of "
                f"{row['n']} ({format_percent(right / row['n'])}).")
        text += f" At every uncertainty together, its macro-F1 on them: {macro_f1}" if macro_f1 else ""
    elif macro_f1:
        text = f"On its {lesions}{read}, its macro-F1: {macro_f1}"
    else:
        return ""
    # A model tested only on simulated lesions says so with its figure: "79%" on a real series otherwise
    # read as if that accuracy had been measured on real CT.
    return text + (" How often it is right on real CT has not been measured." if simulated else "")


__all__ = ["AGREEMENT_HIGH", "AGREEMENT_MODERATE", "ENTROPY_HIGH", "ENTROPY_MODERATE", "LEVELS", "SPREAD_HIGH",
           "SPREAD_MODERATE", "answer_from_copies", "copy_statistics", "describe_measured_level", "format_percent",
           "metrics_by_uncertainty", "normalised_entropy", "uncertainty_level", "uncertainty_levels"]
