"""The uncertainty levels the app shows, and the report's metrics per level (hand-computed cases)."""
from __future__ import annotations

import numpy as np
import pytest

from liverview.model.report import uncertainty_table
from liverview.model.uncertainty import (answer_from_copies, copy_statistics, metrics_by_uncertainty,
                                         normalised_entropy, uncertainty_level, uncertainty_levels)

CLASSES = ["a", "b", "c"]


def test_entropy_bounds():
    assert normalised_entropy([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.0, abs=1e-9)
    assert normalised_entropy([0.25] * 4) == pytest.approx(1.0)
    assert 0.0 < normalised_entropy([0.7, 0.1, 0.1, 0.1]) < 1.0


@pytest.mark.parametrize("entropy, spread, agreement, level", [
    (0.0, 0.0, 1.0, "low"),
    (0.2499, 0.0799, 1.0, "low"),
    (0.25, 0.0, 1.0, "moderate"),          # each measure alone can raise the level
    (0.0, 0.08, 1.0, "moderate"),
    (0.0, 0.0, 0.75, "moderate"),          # one flipped copy of four disagrees
    (0.5, 0.0, 1.0, "high"),
    (0.0, 0.2, 1.0, "high"),
    (0.0, 0.0, 0.5, "high"),               # two of four disagree
    (0.3, 0.1, 0.5, "high"),               # the worst measure decides
])
def test_level_is_the_worst_of_entropy_spread_and_agreement(entropy, spread, agreement, level):
    assert uncertainty_level(entropy, spread, agreement) == level


def test_copies_give_the_answer_spread_and_agreement():
    # Two lesions, four copies each (input as given first).
    copies = np.array([[[0.98, 0.01, 0.01], [0.2, 0.7, 0.1]],
                       [[0.98, 0.01, 0.01], [0.6, 0.3, 0.1]],
                       [[0.98, 0.01, 0.01], [0.2, 0.7, 0.1]],
                       [[0.98, 0.01, 0.01], [0.2, 0.7, 0.1]]])
    np.testing.assert_allclose(answer_from_copies(copies, flip_average=False), copies[0])
    answer = answer_from_copies(copies, flip_average=True)
    np.testing.assert_allclose(answer[1], [0.3, 0.6, 0.1])
    spread, agreement = copy_statistics(copies, answer)
    np.testing.assert_allclose(spread, [0.0, np.std([0.2, 0.6, 0.2, 0.2])])
    np.testing.assert_allclose(agreement, [1.0, 0.75])
    # Lesion 1: entropy of (0.3, 0.6, 0.1) is 0.82 of the maximum -> high.
    assert uncertainty_levels(copies, flip_average=True) == ["low", "high"]


def test_metrics_per_level_and_cumulative():
    y_true = [0, 1, 2, 0, 1, 2, 0]
    y_pred = [0, 1, 2, 1, 1, 0, 0]
    levels = ["low", "low", "low", "moderate", "moderate", "high", "moderate"]
    rows = {r["uncertainty"]: r for r in metrics_by_uncertainty(y_true, y_pred, levels, CLASSES)}
    assert list(rows) == ["low", "moderate", "high", "low + moderate"]
    assert rows["low"]["n"] == 3 and rows["low"]["accuracy"] == 1.0 and rows["low"]["macro_f1"] == 1.0
    assert rows["moderate"]["n"] == 3 and rows["moderate"]["accuracy"] == pytest.approx(2 / 3)
    # moderate: a -> b once, b right, a right: F1 a = 2/3, b = 2/3, c absent -> macro 2/3.
    assert rows["moderate"]["macro_f1"] == pytest.approx(2 / 3)
    assert rows["high"]["n"] == 1 and rows["high"]["accuracy"] == 0.0
    assert rows["low + moderate"]["n"] == 6 and rows["low + moderate"]["accuracy"] == pytest.approx(5 / 6)
    assert rows["low + moderate"]["coverage"] == pytest.approx(6 / 7)


def test_a_level_without_lesions_is_kept_and_unknown_levels_refused():
    rows = metrics_by_uncertainty([0, 1], [0, 1], ["low", "low"], CLASSES)
    high = next(r for r in rows if r["uncertainty"] == "high")
    assert high["n"] == 0 and high["accuracy"] is None and high["coverage"] == 0.0
    assert "| high | 0 | 0.0% | n/a | n/a |" in uncertainty_table(rows)
    with pytest.raises(ValueError, match="unknown uncertainty level"):
        metrics_by_uncertainty([0], [0], ["certain"], CLASSES)
