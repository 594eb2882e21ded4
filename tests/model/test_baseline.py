"""Classical baseline: hand-crafted features behave as their definitions say; the classifier learns."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from liverview.model.baseline import (evaluate_baseline, extract_features, feature_names, glcm_features,
                                      lbp_histogram, shape_features)
from liverview.model.data import KeySlice, load_records

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


def _disc(radius_px=20, inside=10.0, outside=100.0, blur=0.0, size=100):
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius_px**2
    hu = np.where(mask, inside, outside).astype(np.float32)
    if blur:
        hu = cv2.GaussianBlur(hu, (0, 0), blur)
    return KeySlice(np.rint(hu).astype(np.int16), mask, (0.8, 0.8), 0)


def test_feature_vector_is_finite_and_named():
    features = extract_features(_disc())
    assert features.shape == (len(feature_names()),) and np.isfinite(features).all()
    named = dict(zip(feature_names(), features))
    assert named["hu_mean"] == pytest.approx(10.0) and named["ring_mean"] == pytest.approx(100.0)
    assert named["contrast_to_ring"] == pytest.approx(-90.0)
    assert named["equiv_diameter_mm"] == pytest.approx(32.0, rel=0.05)  # 40 px at 0.8 mm


def test_glcm_and_lbp_of_a_flat_region():
    levels = np.full((20, 20), 7, dtype=np.int64)
    mask = np.ones((20, 20), bool)
    contrast, dissimilarity, homogeneity, energy, _, entropy = glcm_features(levels, mask, 1)
    assert (contrast, dissimilarity, homogeneity, energy, entropy) == pytest.approx((0, 0, 1, 1, 0))
    hist = lbp_histogram(np.full((20, 20), 5.0, np.float32), mask, 1)
    assert hist[8] == pytest.approx(1.0)  # every neighbour >= centre: uniform pattern with 8 ones
    # A checkerboard has maximal contrast at distance 1 (neighbours differ by the full range).
    board = (np.indices((20, 20)).sum(0) % 2 * 31).astype(np.int64)
    assert glcm_features(board, mask, 1)[0] > 400


def test_shape_and_edge_sharpness():
    circle = shape_features(_disc().mask)
    square = np.zeros((100, 100), bool)
    square[20:80, 40:60] = True
    rectangle = shape_features(square)
    assert circle[2] > 0.85 and rectangle[2] < circle[2]  # circularity
    assert rectangle[5] == pytest.approx(3.0, rel=0.1)  # elongation 60 x 20
    sharp = dict(zip(feature_names(), extract_features(_disc())))
    soft = dict(zip(feature_names(), extract_features(_disc(blur=3.0))))
    assert sharp["edge_grad_mean"] > 1.5 * soft["edge_grad_mean"]


def test_random_forest_learns_the_toy_classes(toy_dataset, toy_dataset_b):
    train = load_records([toy_dataset]).records
    test = load_records([toy_dataset_b]).records
    result = evaluate_baseline(train, test, CLASSES, seed=0)
    assert result.name == "baseline" and result.probs.shape == (12, 4)
    assert result.metrics["accuracy"] > 0.5  # chance is 0.25
    assert result.metrics["top_features"][0]["name"] in feature_names()
