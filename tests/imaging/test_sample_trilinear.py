"""`sample_trilinear` (the sampling under breathing alignment and every phase carried to another) against
trilinear interpolation written out point by point."""
from __future__ import annotations

import math

import numpy as np
import pytest

from liverview.imaging.align import sample_trilinear


def _by_hand(array: np.ndarray, point: np.ndarray) -> float:
    if any(c < 0 or c > n - 1 for c, n in zip(point, array.shape)):
        return math.nan
    low = [min(int(math.floor(c)), max(n - 2, 0)) for c, n in zip(point, array.shape)]
    frac = [c - b for c, b in zip(point, low)]
    total = 0.0
    for corner in np.ndindex(2, 2, 2):
        index = tuple(min(b + d, n - 1) for b, d, n in zip(low, corner, array.shape))
        weight = math.prod(f if d else 1 - f for f, d in zip(frac, corner))
        total += weight * float(array[index])
    return total


@pytest.mark.parametrize("shape, dtype", [((9, 40, 50), np.int16), ((1, 30, 20), np.float32), ((4, 6, 5), np.uint8)])
def test_values_are_trilinear_and_nan_outside(shape, dtype):
    rng = np.random.default_rng(3)
    array = rng.normal(0, 200, shape).clip(0 if dtype == np.uint8 else -1e9, 255 if dtype == np.uint8 else 1e9)
    array = array.astype(dtype)
    # Inside and outside, on whole indices and the last index exactly, over a small block and far apart.
    points = np.concatenate([rng.uniform(-1.5, np.asarray(shape) + 0.5, size=(300, 3)),
                             np.round(rng.uniform(0, np.asarray(shape) - 1, size=(20, 3))),
                             [np.asarray(shape, dtype=float) - 1, np.zeros(3)]])
    if shape[0] == 1:
        points[:, 0] = np.where(rng.random(len(points)) < 0.8, 0.0, points[:, 0])
    got = sample_trilinear(array, points)
    expected = np.array([_by_hand(array, p) for p in points], dtype=np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(expected)) and np.isnan(got).any() and (~np.isnan(got)).sum() > 50
    assert np.allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-6, atol=1e-3)
