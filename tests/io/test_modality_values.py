"""Stored pixel values to modality values (HU): the shortcut that shifts in place gives exactly what the
general computation gives, and hands every case it cannot do exactly to it (#18)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from liverview.io import scan_paths
from liverview.io.pixels import CT_PADDING_HU, INT16_MAX, INT16_MIN, to_modality_values


@pytest.fixture(scope="module")
def ct_frame(crlm_dir):
    return scan_paths(crlm_dir).series[0].frames[0]


def _reference(stored: np.ndarray, intercept: float, padding: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    values = stored.astype(np.int64) + int(intercept)
    clipped = int(np.count_nonzero((values < INT16_MIN) | (values > INT16_MAX)))
    out = np.clip(values, INT16_MIN, INT16_MAX).astype(np.int16)
    if padding is not None:
        out[(stored >= padding[0]) & (stored <= padding[1])] = CT_PADDING_HU
    return out, clipped


CASES = [
    # stored dtype, value range, intercept, padding (stored values)
    ("int16", (-2000, 3000), -1024.0, (-2000, -2000)),   # signed CT with padding outside the circle
    ("uint16", (0, 4095), -1024.0, None),                 # unsigned, 12-bit
    ("uint16", (0, 4095), -1024.0, (5000, 5000)),         # padding value that no pixel has
    ("uint16", (30000, 60000), -30000.0, None),           # above int16 before the shift: general path
    ("int16", (-32768, 32767), 1000.0, None),             # overflows after the shift: clipped
    ("int16", (-32000, -31000), 40000.0, None),           # intercept beyond int16 that still fits
    ("uint8", (0, 255), -100.0, (0, 10)),                 # 8-bit with a padding range
    ("int16", (-1000, 1000), 0.0, None),                  # no shift at all
]


@pytest.mark.parametrize("dtype, value_range, intercept, padding", CASES)
def test_modality_values_equal_the_general_computation(ct_frame, dtype, value_range, intercept, padding):
    rng = np.random.default_rng(7)
    stored = rng.integers(value_range[0], value_range[1], size=(64, 48), endpoint=True).astype(dtype)
    stored[0, 0], stored[-1, -1] = value_range
    if padding is not None and padding[0] >= value_range[0]:
        stored[5:9, 5:9] = padding[0]
    header = dataclasses.replace(ct_frame.file, rows=64, columns=48, padding=padding, has_modality_lut=False,
                                 pixel_representation=int(np.dtype(dtype).kind == "i"),
                                 bits_allocated=8 * np.dtype(dtype).itemsize, bits_stored=8 * np.dtype(dtype).itemsize,
                                 notes=[])
    frame = dataclasses.replace(ct_frame, header=header, rescale=(1.0, intercept))
    out = np.full((64, 48), 1234, dtype=np.int16)
    clipped = to_modality_values(stored, frame, None, out)
    expected, expected_clipped = _reference(stored, intercept, padding)
    assert np.array_equal(out, expected)
    assert clipped == expected_clipped
