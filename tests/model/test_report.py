"""The evaluation report and the model card say what their figures are worth."""
from __future__ import annotations

import warnings

import numpy as np

from liverview.model.evaluation_result import EvaluationResult
from liverview.model.model_card import render_model_card
from liverview.model.report import write_report

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


def result_of(y_true, predicted):
    probs = np.full((len(y_true), len(CLASSES)), 0.1)
    probs[np.arange(len(y_true)), predicted] = 0.7
    return EvaluationResult("cnn", "CNN", [f"u{i}" for i in range(len(y_true))], y_true, probs, CLASSES)


def test_a_test_split_of_one_lesion_is_flagged_and_draws_without_warnings(tmp_path):
    """liverview-train on a small export: "test accuracy 0.000, macro-F1 0.000" from one test lesion, stated
    as a result, and matplotlib's "No artists with labels found to put in legend" twice."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = write_report(tmp_path / "one", {"cnn": result_of([2], [1])})
    assert not [w for w in caught if "legend" in str(w.message)]
    assert "**CNN: only 1 test lesion(s): these figures say almost nothing.**" in (out / "report.md").read_text()


def test_a_thin_class_is_named_and_a_sound_split_is_not_flagged(tmp_path):
    rng = np.random.default_rng(3)
    y_true = np.repeat(np.arange(4), [10, 10, 10, 3])
    text = (write_report(tmp_path / "thin", {"cnn": result_of(y_true, rng.integers(0, 4, len(y_true)))})
            / "report.md").read_text()
    assert "fewer than 5 test lesions of metastasis" in text
    sound = np.repeat(np.arange(4), 10)
    text = (write_report(tmp_path / "sound", {"cnn": result_of(sound, sound)}) / "report.md").read_text()
    assert "say almost nothing" not in text and "say little" not in text


def test_the_model_card_names_the_phases_the_model_was_trained_on():
    """A model trained on arterial lesions too was described as reading portal-venous slices."""
    info = {"name": "m", "version": "1", "classes": CLASSES, "training_domain": {"phases": ["arterial", "portal_venous"]}}
    assert "contrast-enhanced CT slice (arterial or portal-venous phase)" in render_model_card(info)
    info["training_domain"] = {"phases": ["portal_venous"]}
    assert "contrast-enhanced CT slice (portal-venous phase)" in render_model_card(info)
    del info["training_domain"]
    assert "(contrast phase not recorded in its training data)" in render_model_card(info)
