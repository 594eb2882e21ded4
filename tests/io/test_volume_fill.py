"""The middle slice is read before the rest of the volume is paged in; slices not read stay air."""
from __future__ import annotations

import numpy as np
import pytest

from liverview.io import allocate_volume, fill_volume, scan_paths
from liverview.progress import Cancelled


def test_middle_slice_comes_before_the_rest_is_touched(crlm_dir):
    info = scan_paths(crlm_dir).series[0]
    volume = allocate_volume(info)
    at_first_slice: list[int] = []

    def on_slice(vol, z):
        if not at_first_slice:
            # Everything but the middle slice is still the untouched (lazily zeroed) allocation.
            at_first_slice.append(int(np.count_nonzero(vol.array.reshape(vol.shape[0], -1).any(axis=1))))

    fill_volume(volume, on_slice=on_slice)
    assert at_first_slice == [1]
    assert volume.loaded.all() and volume.array.min() >= -1024 - 2048


def test_a_volume_on_screen_shows_air_where_it_is_not_read_yet(crlm_dir):
    """With `shown`, right after the middle slice the rest is air (-1024 HU), not the allocation's 0 HU
    (water); without, nothing but the slices read is touched."""
    info = scan_paths(crlm_dir).series[0]
    for shown, expected in ((True, {-1024}), (False, {0})):
        unread_values: list[set[int]] = []

        def on_slice(vol, z, unread_values=unread_values):
            if len(unread_values) == 0 and vol.loaded.sum() == 2:
                unread_values.append(set(np.unique(vol.array[~vol.loaded]).tolist()))

        fill_volume(allocate_volume(info), on_slice=on_slice, shown=shown)
        assert unread_values == [expected]


def test_cancelled_and_failed_slices_hold_air(crlm_copy):
    info = scan_paths(crlm_copy).series[0]
    broken = info.frames[3].path
    with open(broken, "r+b") as fh:  # cut short after the scan: the header was fine, the pixels are not
        fh.truncate(fh.seek(0, 2) - 100)
    volume = fill_volume(allocate_volume(info))
    failed = np.flatnonzero(~volume.loaded)
    assert list(failed) == [3] and len(volume.failed) == 1 and np.all(volume.array[3] == -1024)

    seen: list[int] = []
    cancelled = allocate_volume(info)
    with pytest.raises(Cancelled):
        fill_volume(cancelled, should_stop=lambda: len(seen) >= 5, on_slice=lambda v, z: seen.append(z))
    assert cancelled.loaded.sum() == 5
    assert np.all(cancelled.array[~cancelled.loaded] == -1024)
