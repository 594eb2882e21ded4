"""The annotation document's data classes."""
from __future__ import annotations

from liverview.annotations.document import Lesion, Roi


def test_lesion_snapshot_is_independent_of_later_edits():
    lesion = Lesion(reader="a", label="hcc", rois=[Roi(4, [(1.0, 1.0), (5.0, 1.0), (5.0, 5.0)])])
    snap = lesion.snapshot()
    lesion.rois[0].points_xy = [(0.0, 0.0), (9.0, 0.0), (9.0, 9.0)]
    lesion.rois.append(Roi(5, [(1.0, 1.0), (5.0, 1.0), (5.0, 5.0)]))
    lesion.label = "metastasis"
    assert [roi.slice_index for roi in snap.rois] == [4]
    assert snap.rois[0].points_xy == [(1.0, 1.0), (5.0, 1.0), (5.0, 5.0)] and snap.label == "hcc"
    assert snap.rois[0].to_dict()["points_xy"] == [[1.0, 1.0], [5.0, 1.0], [5.0, 5.0]]
    assert lesion.rois[0].to_dict()["points_xy"] == [[0.0, 0.0], [9.0, 0.0], [9.0, 9.0]]
