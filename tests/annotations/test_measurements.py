"""Measurements against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from liverview.annotations.document import Lesion, Roi
from liverview.annotations.measurements import measure_lesion, measure_roi
from liverview.imaging.measure import diameters_mm, mask_long_axis_mm, polygon_area_mm2, polygon_mask
from liverview.io import load_series


def test_long_axis_of_a_mask_from_edge_to_edge():
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:21, 5:46] = True  # 41 x 11 pixels: outer edges 41 columns and 11 rows apart
    assert mask_long_axis_mm(mask, (0.5, 0.8)) == pytest.approx(math.hypot(41 * 0.8, 11 * 0.5))
    one = np.zeros((5, 5), dtype=bool)
    one[2, 2] = True
    assert mask_long_axis_mm(one, (0.7, 0.7)) == pytest.approx(0.7 * math.sqrt(2))  # a pixel has a size
    two = mask.copy()
    two[30:33, 50:53] = True  # a second piece counts: it lengthens the longest diameter
    assert mask_long_axis_mm(two, (1.0, 1.0)) > mask_long_axis_mm(mask, (1.0, 1.0))
    assert mask_long_axis_mm(np.zeros((5, 5), dtype=bool), (1.0, 1.0)) == 0.0


def test_rectangle_area_and_diameters():
    rect = [(10, 20), (30, 20), (30, 30), (10, 30)]  # 20 x 10 pixels
    spacing = (0.5, 0.8)  # row (y) 0.5 mm, column (x) 0.8 mm -> 16 mm x 5 mm
    assert polygon_area_mm2(rect, spacing) == pytest.approx(16 * 5)
    long_axis, short_axis = diameters_mm(rect, spacing)
    assert long_axis == pytest.approx(math.hypot(16, 5))
    # Width of the rectangle across its diagonal: 2 * area / diagonal.
    assert short_axis == pytest.approx(2 * 16 * 5 / math.hypot(16, 5))


def test_circle_diameters_and_mask_area():
    theta = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    circle = np.column_stack([50 + 20 * np.cos(theta), 40 + 20 * np.sin(theta)])
    long_axis, short_axis = diameters_mm(circle, (1.0, 1.0))
    assert long_axis == pytest.approx(40, abs=0.01) and short_axis == pytest.approx(40, abs=0.05)
    mask = polygon_mask(circle, (100, 100))
    assert mask.sum() == pytest.approx(np.pi * 20 ** 2, rel=0.01)
    assert mask[40, 50] and not mask[40, 71]


def test_mask_uses_pixel_centres():
    square = [(1.5, 1.5), (4.5, 1.5), (4.5, 4.5), (1.5, 4.5)]  # covers pixel centres 2, 3, 4
    mask = polygon_mask(square, (8, 8))
    assert mask.sum() == 9 and mask[2:5, 2:5].all()


def test_lesion_on_real_ct(crlm_dir):
    volume = load_series(crlm_dir)
    square = [(200.5, 300.5), (210.5, 300.5), (210.5, 310.5), (200.5, 310.5)]  # 10 x 10 pixels
    rois = [Roi(slice_index=z, points_xy=square) for z in (19, 20, 21)]
    lesion = Lesion(reader="test", rois=rois)
    m = measure_lesion(volume, lesion)
    sy, sx = volume.spacing_mm[1:]
    assert m.n_slices == 3 and m.n_voxels == 300
    assert m.volume_ml == pytest.approx(300 * sy * sx * 5.0 / 1000)
    expected = volume.array[19:22, 301:311, 201:211].astype(float)
    assert m.mean == pytest.approx(expected.mean()) and m.max == expected.max()
    r = measure_roi(volume, rois[1])
    assert r.area_mm2 == pytest.approx(100 * sy * sx)
    assert r.sd == pytest.approx(volume.array[20, 301:311, 201:211].std())


def test_a_lesion_split_on_its_slice_measures_both_pieces(crlm_dir):
    """Walkthrough review: an eraser stroke through a lesion left two outlines on its slice; the area was
    one piece's while the volume counted both (183.2 mm² against 1.81 mL on 5 mm slices)."""
    volume = load_series(crlm_dir)
    left = [(200.5, 300.5), (210.5, 300.5), (210.5, 310.5), (200.5, 310.5)]  # 10 x 10 pixels
    right = [(215.5, 300.5), (220.5, 300.5), (220.5, 310.5), (215.5, 310.5)]  # 5 x 10 pixels
    lesion = Lesion(reader="test", rois=[Roi(slice_index=20, points_xy=left), Roi(slice_index=20, points_xy=right)])
    m = measure_lesion(volume, lesion)
    sy, sx = volume.spacing_mm[1:]
    assert m.area_mm2 == pytest.approx(150 * sy * sx)
    assert m.volume_ml == pytest.approx(m.area_mm2 * volume.spacing_mm[0] / 1000)
