"""Metrics against hand-computed confusion matrices, cross-checked with scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest

from liverview.model.metrics import (compute_metrics, confusion_matrix, expected_calibration_error,
                                     macro_f1_interval, metrics_from_confusion, roc_auc_binary, roc_curve_binary)

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


def test_hand_computed_confusion_matrix():
    # truth:      0 0 0 1 1 2 2 2 3 3
    # prediction: 0 0 1 1 2 2 2 0 3 1
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 0, 3, 1]
    cm = confusion_matrix(y_true, y_pred, 4)
    assert cm.tolist() == [[2, 1, 0, 0],
                           [0, 1, 1, 0],
                           [1, 0, 2, 0],
                           [0, 1, 0, 1]]
    m = metrics_from_confusion(cm, CLASSES)
    assert m["accuracy"] == pytest.approx(6 / 10)
    # class 0: tp 2, predicted 3, true 3 -> P 2/3, R 2/3; class 1: tp 1, predicted 3, true 2 -> P 1/3, R 1/2
    # class 2: tp 2, predicted 3, true 3 -> P 2/3, R 2/3; class 3: tp 1, predicted 1, true 2 -> P 1, R 1/2
    expected = {"benign_cyst": (2 / 3, 2 / 3), "hemangioma": (1 / 3, 1 / 2), "hcc": (2 / 3, 2 / 3),
                "metastasis": (1.0, 1 / 2)}
    f1s = []
    for name, (p, r) in expected.items():
        assert m["per_class"][name]["precision"] == pytest.approx(p)
        assert m["per_class"][name]["recall"] == pytest.approx(r)
        f1s.append(2 * p * r / (p + r))
        assert m["per_class"][name]["f1"] == pytest.approx(f1s[-1])
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))  # (2/3 + 0.4 + 2/3 + 2/3) / 4 = 0.6
    assert m["macro_f1"] == pytest.approx(0.6)
    assert m["per_class"]["hemangioma"]["support"] == 2


def test_perfect_and_degenerate_cases():
    m = metrics_from_confusion(np.diag([3, 2, 4, 1]), CLASSES)
    assert m["accuracy"] == m["macro_f1"] == 1.0
    # Everything predicted as class 0: no NaN, zero precision for classes never predicted.
    cm = np.array([[2, 0, 0, 0], [3, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    m = metrics_from_confusion(cm, CLASSES)
    assert m["per_class"]["hemangioma"]["precision"] == 0.0 and m["per_class"]["hemangioma"]["f1"] == 0.0
    # hcc is absent from truth and predictions: left out of the macro average (as scikit-learn does).
    p0, r0 = 2 / 6, 1.0
    assert m["macro_f1"] == pytest.approx((2 * p0 * r0 / (p0 + r0)) / 3)


def test_against_scikit_learn_on_random_predictions():
    from sklearn import metrics as sk  # the dev extra installs it: a missing one is a failure, not a skip
    rng = np.random.default_rng(0)
    for trial in range(5):
        y = rng.integers(0, 4, 200)
        logits = rng.normal(size=(200, 4)) + 1.5 * np.eye(4)[y] * trial / 2
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        probs = np.round(probs, 2)  # ties in the scores exercise the AUC's tie handling
        probs /= probs.sum(1, keepdims=True)
        pred = probs.argmax(1)
        m = compute_metrics(y, probs, CLASSES)
        assert m["confusion_matrix"] == sk.confusion_matrix(y, pred, labels=range(4)).tolist()
        assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
        assert m["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))
        assert m["macro_precision"] == pytest.approx(sk.precision_score(y, pred, average="macro", zero_division=0))
        assert m["macro_recall"] == pytest.approx(sk.recall_score(y, pred, average="macro", zero_division=0))
        assert m["weighted_f1"] == pytest.approx(sk.f1_score(y, pred, average="weighted", zero_division=0))
        for i, name in enumerate(CLASSES):
            assert m["roc_auc"][name] == pytest.approx(sk.roc_auc_score(y == i, probs[:, i]))
        assert m["macro_roc_auc"] == pytest.approx(sk.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
        assert m["log_loss"] == pytest.approx(sk.log_loss(y, probs, labels=range(4)), rel=1e-6)
        fpr, tpr, _ = roc_curve_binary(probs[:, 0], y == 0)
        assert np.trapezoid(tpr, fpr) == pytest.approx(m["roc_auc"]["benign_cyst"])


def test_auc_by_hand_with_ties():
    # positives 0.9, 0.5; negatives 0.5, 0.1 -> pairs: (0.9>0.5) 1, (0.9>0.1) 1, (0.5=0.5) 0.5, (0.5>0.1) 1
    assert roc_auc_binary([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(3.5 / 4)
    assert roc_auc_binary([0.3, 0.2], [True, True]) is None


def test_expected_calibration_error_by_hand():
    # Two bins used (of 10): confidences 0.95, 0.95 (one right, one wrong) and 0.65 (right).
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65]])
    y = np.array([0, 1, 1])
    # bin (0.9, 1.0]: n 2, accuracy 0.5, confidence 0.95 -> 2/3 * 0.45; bin (0.6, 0.7]: n 1, 1.0 vs 0.65 -> 1/3 * 0.35
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(2 / 3 * 0.45 + 1 / 3 * 0.35)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == pytest.approx(0.0)


def test_macro_f1_interval_resamples_whole_patients():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, 120)
    predicted = np.where(rng.random(120) < 0.8, truth, (truth + 1) % 4)
    point = metrics_from_confusion(confusion_matrix(truth, predicted, 4), list("abcd"))["macro_f1"]
    lo, hi = macro_f1_interval(truth, predicted, [f"p{i}" for i in range(120)], 4, resamples=400)
    assert lo < point < hi and hi - lo > 0.05
    # One patient: every resample draws the same lesions, so nothing varies.
    assert macro_f1_interval(truth, predicted, ["p"] * 120, 4, resamples=50) == (point, point)
    assert macro_f1_interval(truth, truth, [f"p{i}" for i in range(120)], 4, resamples=50) == (1.0, 1.0)
