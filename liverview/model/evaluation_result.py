"""What one evaluation found: one model's predictions on one set of lesions, with their metrics.

Made by the evaluations (the CNN's in `train` and `evaluate`, the classical `baseline`) and read by
the report (`report.write_report`); nothing here computes a prediction or writes a file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liverview.model.metrics import compute_metrics
from liverview.model.uncertainty import metrics_by_uncertainty


@dataclass
class EvaluationResult:
    """Predictions of one model on one set of lesions, with their metrics."""

    name: str  # file-name safe key: "cnn", "baseline"
    title: str
    uids: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    classes: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    #: Per lesion, the uncertainty the app would show with this answer (`uncertainty.uncertainty_levels`);
    #: None for a model the app does not run (the baseline).
    uncertainty: list[str] | None = None

    def __post_init__(self) -> None:
        self.y_true = np.asarray(self.y_true, dtype=np.int64)
        self.probs = np.asarray(self.probs, dtype=np.float64).reshape(len(self.y_true), len(self.classes))
        self.classes = list(self.classes)
        if self.uncertainty is not None and len(self.uncertainty) != len(self.y_true):
            raise ValueError(f"{len(self.uncertainty)} uncertainty levels for {len(self.y_true)} lesions")
        if not self.metrics:
            self.metrics = compute_metrics(self.y_true, self.probs, self.classes)
            if self.uncertainty is not None:
                self.metrics["by_uncertainty"] = metrics_by_uncertainty(self.y_true, self.probs.argmax(axis=1),
                                                                        self.uncertainty, self.classes)


__all__ = ["EvaluationResult"]
