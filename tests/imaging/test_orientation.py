"""Orientation letters and reformat flips on the real CT series: what the reader sees at each edge of
each view must be where the patient is (LPS patient coordinates from the DICOM geometry)."""
from __future__ import annotations

import numpy as np
import pytest

from liverview.imaging.orientation import (direction_letters, reading_number, reading_position_mm, reading_sign,
                                           view_axes)
from liverview.io import load_series


@pytest.fixture(scope="module", params=["crlm", "hcc"])
def volume(request, crlm_dir, hcc_dir):
    return load_series(crlm_dir if request.param == "crlm" else hcc_dir)


def screen_image_patient(volume, axes, row: int, col: int) -> np.ndarray:
    """Patient position (LPS mm) of screen pixel (row, col) in the middle slice of a view."""
    index = np.zeros(3)
    index[axes.slice_axis] = volume.shape[axes.slice_axis] // 2
    rows = volume.shape[axes.row_axis]
    index[axes.row_axis] = rows - 1 - row if axes.flip_rows else row
    index[axes.col_axis] = col
    return volume.index_to_patient(*index)


def test_letters_name_where_the_patient_is(volume):
    acquired, coronal, sagittal = view_axes(volume.row_direction, volume.column_direction, volume.normal)
    # Radiological convention for these supine head-first axial CTs: patient's left on screen right.
    assert acquired.letters() == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    assert coronal.letters() == {"right": "L", "left": "R", "bottom": "I", "top": "S"}
    assert sagittal.letters() == {"right": "P", "left": "A", "bottom": "I", "top": "S"}


def test_reformats_put_the_head_up_and_match_their_letters(volume):
    for axes in view_axes(volume.row_direction, volume.column_direction, volume.normal):
        rows = volume.shape[axes.row_axis]
        cols = volume.shape[axes.col_axis]
        top, bottom = screen_image_patient(volume, axes, 0, cols // 2), screen_image_patient(volume, axes, rows - 1, cols // 2)
        left, right = screen_image_patient(volume, axes, rows // 2, 0), screen_image_patient(volume, axes, rows // 2, cols - 1)
        # Screen down and right, measured on the image, point where `down`/`right` say they do.
        assert np.dot(bottom - top, axes.down) > 0 and np.dot(right - left, axes.right) > 0
        letters = axes.letters()
        assert letters["bottom"] == direction_letters(bottom - top)[0]
        assert letters["right"] == direction_letters(right - left)[0]
        if axes.name != "acquired":
            assert top[2] > bottom[2]  # LPS z grows to the head: superior at the top of a reformat


@pytest.mark.parametrize("direction, sign", [
    ((0, 0, 5.0), -1),     # axial stored feet first: reading goes the other way (head to feet)
    ((0, 0, -5.0), 1),     # axial stored head first
    ((0, 0.2, -1.0), 1),   # tilted gantry, still axial
    ((0, 1.0, 0), 1),      # coronal, front to back
    ((0, -1.0, 0), -1),
    ((1.0, 0, 0), 1),      # sagittal, from the patient's right to the left
    ((-1.0, 0.1, 0), -1),
])
def test_reading_order_is_head_to_feet_front_to_back_right_to_left(direction, sign):
    assert reading_sign(direction) == sign
    assert reading_number(0, 41, sign) == (1 if sign > 0 else 41)
    assert reading_number(40, 41, sign) == (41 if sign > 0 else 1)


def test_reading_position_is_the_lps_coordinate_whichever_way_the_stack_runs():
    point = (12.0, -30.0, -175.0)
    assert reading_position_mm(point, (0, 0, 1.0)) == reading_position_mm(point, (0, 0, -2.0)) == -175.0
    assert reading_position_mm(point, (-1.0, 0, 0)) == 12.0
    assert reading_position_mm(point, (0, -3.0, 0)) == -30.0


def test_a_prone_series_keeps_left_and_right_on_the_same_side_in_every_view():
    """Review of the reformat change: a prone axial series (rows toward the patient's right) is shown as
    stored, and its coronal reformat had been mirrored to the radiological side, so the two views
    disagreed on left and right. Reformats flip only the stack axis."""
    acquired, coronal, sagittal = view_axes((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
    assert acquired.letters()["right"] == coronal.letters()["right"] == "R"
    assert sagittal.letters()["right"] == acquired.letters()["bottom"] == "A"
    assert coronal.letters()["top"] == sagittal.letters()["top"] == "S"
