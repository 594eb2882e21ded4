"""The classical baseline of the published method: hand-crafted features + a standard classifier.

Features are computed on the same key slice and ROI as the CNN's input (`load_key_slice`), resampled
to square pixels of `PIXEL_MM` so that texture distances mean the same in every series:

- intensity: histogram statistics of the HU inside the ROI (mean, sd, percentiles, skewness,
  kurtosis, entropy), the surrounding ring (3 mm outside) and their contrast, and periphery-minus-
  core (rim and nodular enhancement vs. a dark centre);
- texture: grey-level co-occurrence matrix (GLCM; 32 levels over -50..250 HU, distances 1 and 3 px,
  4 directions averaged: contrast, dissimilarity, homogeneity, energy, correlation, entropy) and
  uniform local binary patterns (LBP, 8 neighbours, radius 1 and 2: 10-bin histograms), all in numpy;
- shape from the mask with OpenCV contours: area, perimeter, circularity, solidity, extent,
  elongation, equivalent diameter;
- edge sharpness: HU gradient (Sobel, HU/mm) on the ROI boundary, absolute and relative to the
  lesion-ring contrast.

The classifier is scikit-learn's random forest (the `train` extra; imported lazily so the app does
not need scikit-learn).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from liverview.model.data import KeySlice, LesionRecord, load_key_slice
from liverview.model.evaluation_result import EvaluationResult

log = logging.getLogger(__name__)

PIXEL_MM = 0.8
GLCM_LEVELS = 32
GLCM_RANGE_HU = (-50.0, 250.0)
GLCM_DISTANCES = (1, 3)
LBP_RADII = (1, 2)
RING_MM = 3.0


def _resample(item: KeySlice, pixel_mm: float = PIXEL_MM, context_px: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """HU (float32) and mask of the ROI's neighbourhood at `pixel_mm` square pixels."""
    mask = item.mask
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1 = max(0, ys[0] - context_px), min(mask.shape[0], ys[-1] + 1 + context_px)
    x0, x1 = max(0, xs[0] - context_px), min(mask.shape[1], xs[-1] + 1 + context_px)
    hu = item.hu[y0:y1, x0:x1].astype(np.float32)
    m = mask[y0:y1, x0:x1].astype(np.uint8)
    sy, sx = item.spacing_yx
    size = (max(2, int(round(hu.shape[1] * sx / pixel_mm))), max(2, int(round(hu.shape[0] * sy / pixel_mm))))
    hu_r = cv2.resize(hu, size, interpolation=cv2.INTER_LINEAR)
    m_r = cv2.resize(m, size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if not m_r.any():  # a lesion smaller than one resampled pixel
        m_r[m_r.shape[0] // 2, m_r.shape[1] // 2] = True
    return hu_r, m_r


def _moments(values: np.ndarray) -> list[float]:
    if values.size == 0:
        return [0.0] * 12
    mean, sd = float(values.mean()), float(values.std())
    z = (values - mean) / sd if sd > 0 else np.zeros_like(values)
    hist, _ = np.histogram(values, bins=24, range=(-100, 300))
    p = hist[hist > 0] / max(hist.sum(), 1)
    pct = np.percentile(values, [5, 10, 25, 50, 75, 90, 95])
    return [mean, sd, *pct.tolist(), float((z**3).mean()), float((z**4).mean() - 3), float(-(p * np.log2(p)).sum())]


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(round(radius_px)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def glcm_features(levels: np.ndarray, mask: np.ndarray, distance: int, n_levels: int = GLCM_LEVELS) -> list[float]:
    """Symmetric, normalised GLCM over the 4 directions (0, 45, 90, 135 deg) of pixel pairs with both
    ends in `mask`, averaged: contrast, dissimilarity, homogeneity, energy (ASM), correlation, entropy."""
    feats = []
    h, w = levels.shape
    i_idx, j_idx = np.meshgrid(np.arange(n_levels), np.arange(n_levels), indexing="ij")
    for dy, dx in ((0, distance), (-distance, distance), (-distance, 0), (-distance, -distance)):
        ya, yb = max(0, -dy), h - max(0, dy)
        xa, xb = max(0, -dx), w - max(0, dx)
        a = levels[ya:yb, xa:xb]
        b = levels[ya + dy:yb + dy, xa + dx:xb + dx]
        ok = mask[ya:yb, xa:xb] & mask[ya + dy:yb + dy, xa + dx:xb + dx]
        counts = np.bincount(a[ok] * n_levels + b[ok], minlength=n_levels * n_levels).reshape(n_levels, n_levels)
        glcm = (counts + counts.T).astype(np.float64)
        total = glcm.sum()
        if total == 0:
            feats.append([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
            continue
        p = glcm / total
        diff = i_idx - j_idx
        mu_i = (i_idx * p).sum()
        sd_i = np.sqrt(((i_idx - mu_i) ** 2 * p).sum())
        correlation = float(((i_idx - mu_i) * (j_idx - mu_i) * p).sum() / (sd_i**2)) if sd_i > 0 else 1.0
        nz = p[p > 0]
        feats.append([float((diff**2 * p).sum()), float((np.abs(diff) * p).sum()), float((p / (1 + diff**2)).sum()),
                      float((p**2).sum()), correlation, float(-(nz * np.log2(nz)).sum())])
    return np.mean(feats, axis=0).tolist()


def _uniform_lbp_table(neighbours: int = 8) -> np.ndarray:
    """Code -> bin: uniform patterns (<= 2 transitions) by their number of ones (0..P), the rest P + 1."""
    table = np.empty(2**neighbours, dtype=np.int64)
    for code in range(2**neighbours):
        bits = [(code >> k) & 1 for k in range(neighbours)]
        transitions = sum(bits[k] != bits[(k + 1) % neighbours] for k in range(neighbours))
        table[code] = sum(bits) if transitions <= 2 else neighbours + 1
    return table


_LBP_TABLE = _uniform_lbp_table()


def lbp_histogram(image: np.ndarray, mask: np.ndarray, radius: int) -> list[float]:
    """Normalised 10-bin histogram of uniform LBP codes (8 neighbours at `radius`, bilinear) inside `mask`."""
    h, w = image.shape
    padded = cv2.copyMakeBorder(image.astype(np.float32), radius + 1, radius + 1, radius + 1, radius + 1,
                                cv2.BORDER_REFLECT)
    codes = np.zeros((h, w), dtype=np.int64)
    centre = image.astype(np.float32)
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    for k in range(8):
        angle = 2 * np.pi * k / 8
        map_x = grid_x + radius + 1 + np.float32(radius * np.cos(angle))
        map_y = grid_y + radius + 1 - np.float32(radius * np.sin(angle))
        neighbour = cv2.remap(padded, map_x, map_y, cv2.INTER_LINEAR)
        codes |= (neighbour >= centre).astype(np.int64) << k
    bins = _LBP_TABLE[codes[mask]]
    hist = np.bincount(bins, minlength=10).astype(np.float64)
    return (hist / max(hist.sum(), 1)).tolist()


def shape_features(mask: np.ndarray, pixel_mm: float = PIXEL_MM) -> list[float]:
    """Area (mm2), perimeter (mm), circularity, solidity, extent, elongation, equivalent diameter (mm)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return [0.0] * 7
    contour = max(contours, key=cv2.contourArea)
    area_px = float(mask.sum())
    perimeter_px = max(cv2.arcLength(contour, True), 1.0)
    hull_area = max(cv2.contourArea(cv2.convexHull(contour)), 1.0)
    (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
    x, y, w, h = cv2.boundingRect(contour)
    elongation = float(max(rw, rh) / max(min(rw, rh), 1.0))
    return [area_px * pixel_mm**2, perimeter_px * pixel_mm, float(4 * np.pi * area_px / perimeter_px**2),
            float(min(area_px / hull_area, 1.5)), float(area_px / max(w * h, 1)), elongation,
            float(2 * np.sqrt(area_px / np.pi) * pixel_mm)]


def extract_features(item: KeySlice) -> np.ndarray:
    """The feature vector (float64) of one lesion's key slice; `feature_names()` names the entries."""
    hu, mask = _resample(item)
    inside = hu[mask]
    ring = cv2.dilate(mask.astype(np.uint8), _disk(RING_MM / PIXEL_MM)).astype(bool) & ~mask
    ring_values = hu[ring] if ring.any() else inside
    core = cv2.erode(mask.astype(np.uint8), _disk(max(1.0, np.sqrt(mask.sum() / np.pi) * 0.4))).astype(bool)
    periphery = mask & ~core
    core_mean = float(hu[core].mean()) if core.any() else float(inside.mean())
    peri_mean = float(hu[periphery].mean()) if periphery.any() else float(inside.mean())
    intensity = _moments(inside) + [float(ring_values.mean()), float(ring_values.std()),
                                    float(inside.mean() - ring_values.mean()), peri_mean - core_mean,
                                    float(hu[periphery].std()) if periphery.any() else 0.0]
    lo, hi = GLCM_RANGE_HU
    levels = np.clip(((hu - lo) / (hi - lo) * GLCM_LEVELS).astype(np.int64), 0, GLCM_LEVELS - 1)
    texture: list[float] = []
    for d in GLCM_DISTANCES:
        texture += glcm_features(levels, mask, d)
    smooth = cv2.GaussianBlur(hu, (0, 0), 0.7)  # LBP on raw CT noise would only measure the noise
    for r in LBP_RADII:
        texture += lbp_histogram(smooth, mask, r)
    gy = cv2.Sobel(hu, cv2.CV_32F, 0, 1, ksize=3) / (8.0 * PIXEL_MM)
    gx = cv2.Sobel(hu, cv2.CV_32F, 1, 0, ksize=3) / (8.0 * PIXEL_MM)
    grad = np.hypot(gx, gy)
    edge = (cv2.dilate(mask.astype(np.uint8), _disk(1)).astype(bool) & ~cv2.erode(mask.astype(np.uint8),
                                                                                   _disk(1)).astype(bool))
    edge_values = grad[edge] if edge.any() else np.zeros(1)
    contrast = abs(float(inside.mean() - ring_values.mean())) + 1.0
    edges = [float(edge_values.mean()), float(np.median(edge_values)), float(np.percentile(edge_values, 90)),
             float(edge_values.mean() / contrast), float(grad[mask].mean())]
    return np.asarray(intensity + texture + shape_features(mask) + edges, dtype=np.float64)


def feature_names() -> list[str]:
    names = ["hu_mean", "hu_sd", *[f"hu_p{p}" for p in (5, 10, 25, 50, 75, 90, 95)], "hu_skew", "hu_kurtosis",
             "hu_entropy", "ring_mean", "ring_sd", "contrast_to_ring", "periphery_minus_core", "periphery_sd"]
    for d in GLCM_DISTANCES:
        names += [f"glcm{d}_{n}" for n in ("contrast", "dissimilarity", "homogeneity", "energy", "correlation",
                                           "entropy")]
    for r in LBP_RADII:
        names += [f"lbp{r}_bin{b}" for b in range(10)]
    names += ["area_mm2", "perimeter_mm", "circularity", "solidity", "extent", "elongation", "equiv_diameter_mm"]
    names += ["edge_grad_mean", "edge_grad_median", "edge_grad_p90", "edge_sharpness_rel", "inside_grad_mean"]
    return names


def extract_feature_matrix(records: Sequence[LesionRecord]) -> np.ndarray:
    return np.stack([extract_features(load_key_slice(r)) for r in records]) if records else np.zeros((0, len(feature_names())))


def train_baseline(records: Sequence[LesionRecord], classes: Sequence[str], seed: int = 0, n_estimators: int = 300):
    """A fitted scikit-learn random forest (balanced class weights) on the records' features."""
    from sklearn.ensemble import RandomForestClassifier

    x = extract_feature_matrix(records)
    y = np.array([list(classes).index(r.label) for r in records])
    clf = RandomForestClassifier(n_estimators=n_estimators, class_weight="balanced", random_state=seed, n_jobs=1,
                                 min_samples_leaf=1)
    clf.fit(x, y)
    return clf


def predict_baseline(clf, records: Sequence[LesionRecord], num_classes: int) -> np.ndarray:
    """(N, num_classes) probabilities; classes absent from the training data get 0."""
    x = extract_feature_matrix(records)
    probs = np.zeros((len(records), num_classes))
    if len(records):
        probs[:, clf.classes_] = clf.predict_proba(x)
    return probs


def evaluate_baseline(train_records: Sequence[LesionRecord], test_records: Sequence[LesionRecord],
                      classes: Sequence[str], seed: int = 0) -> EvaluationResult:
    """Fit on `train_records`, predict `test_records`: an `EvaluationResult` named "baseline"."""
    clf = train_baseline(train_records, classes, seed)
    probs = predict_baseline(clf, test_records, len(classes))
    y = np.array([list(classes).index(r.label) for r in test_records])
    result = EvaluationResult("baseline", "Baseline (hand-crafted features + random forest)",
                              [r.uid for r in test_records], y, probs, classes)
    importances = sorted(zip(feature_names(), clf.feature_importances_), key=lambda t: -t[1])[:10]
    result.metrics["top_features"] = [{"name": n, "importance": float(v)} for n, v in importances]
    return result


__all__ = ["evaluate_baseline", "extract_feature_matrix", "extract_features", "feature_names", "glcm_features",
           "lbp_histogram", "predict_baseline", "shape_features", "train_baseline"]
