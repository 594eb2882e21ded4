"""One lesion, every phase: the real outline of crlm-ct-1004 read on another series of the same Frame
of Reference with another grid, slice thickness and a breathing shift."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from liverview.annotations.document import AnnotationDocument
from liverview.annotations.measurements import lesion_mask, measure_lesion
from liverview.annotations.transfer import TransferError, transfer_lesion
from liverview.imaging.align import sample_trilinear
from liverview.io import load_series

ANNOTATIONS = Path(__file__).resolve().parent.parent / "data" / "crlm-ct-1004-metastases.json"
@pytest.fixture(scope="module")
def crlm(crlm_dir):
    volume = load_series(crlm_dir)
    document = AnnotationDocument.from_dict(json.loads(ANNOTATIONS.read_text()))
    return volume, document.lesions[0]


def _physical_overlap(source, source_mask, target, target_mask, shift_mm) -> float:
    """Dice in patient space: the target's lesion voxels looked up in the source mask."""
    zs, ys, xs = np.nonzero(target_mask)
    affine = target.affine_mm
    points = np.stack([zs, ys, xs], axis=1) @ affine[:3, :3].T + affine[:3, 3] - np.asarray(shift_mm)
    inside = sample_trilinear(source_mask.astype(np.float32), source.patient_to_index(points))
    hit = float(np.nansum(inside >= 0.5))
    # Volumes in mL on both sides; the overlap counted on the target's voxels.
    voxel_t = float(np.prod(target.spacing_mm))
    voxel_s = float(np.prod(source.spacing_mm))
    return 2 * hit * voxel_t / (target_mask.sum() * voxel_t + source_mask.sum() * voxel_s)


def test_an_outline_lands_on_a_series_with_another_grid_and_thickness(crlm, tmp_path, resample_series):
    volume, lesion = crlm
    other = load_series(resample_series(volume, tmp_path / "delayed", (0.0, 0.0, 0.0), volume.frame_of_reference_uid))
    result = transfer_lesion(lesion, volume, other, align=False)
    source_ml = measure_lesion(volume, lesion).volume_ml
    target_ml = measure_lesion(other, result.lesion).volume_ml
    assert target_ml == pytest.approx(source_ml, rel=0.25)
    # Each 5 mm outline covers the 2.5 mm slices inside its slab.
    assert len(result.lesion.slices()) >= 2 * len(lesion.slices()) - 1
    assert all(roi.kind == "propagated" for roi in result.lesion.rois)
    dice = _physical_overlap(volume, lesion_mask(volume, lesion), other, lesion_mask(other, result.lesion), (0, 0, 0))
    assert dice > 0.8


def test_a_breathing_shift_is_found_and_reported(crlm, tmp_path, resample_series):
    volume, lesion = crlm
    breathing = (3.0, -4.0, 5.0)
    other = load_series(resample_series(volume, tmp_path / "moved", breathing, volume.frame_of_reference_uid))
    result = transfer_lesion(lesion, volume, other, align=True)
    assert result.alignment.score > result.alignment.score_unshifted
    assert np.allclose(result.shift_mm, breathing, atol=1.5)
    unaligned = transfer_lesion(lesion, volume, other, align=False)
    dice_aligned = _physical_overlap(volume, lesion_mask(volume, lesion), other, lesion_mask(other, result.lesion), breathing)
    dice_unaligned = _physical_overlap(volume, lesion_mask(volume, lesion), other, lesion_mask(other, unaligned.lesion),
                                       breathing)
    assert dice_aligned > 0.8 > dice_unaligned


def test_another_frame_of_reference_is_refused_with_the_reason(crlm, tmp_path, resample_series):
    volume, lesion = crlm
    other = load_series(resample_series(volume, tmp_path / "other-for", (0.0, 0.0, 0.0), "2.25.1234567"))
    with pytest.raises(TransferError, match="another Frame of Reference"):
        transfer_lesion(lesion, volume, other)


def test_a_seg_made_on_the_other_grid_imports_onto_the_outlined_series(crlm, tmp_path, resample_series):
    """The SEG of a reader who outlined on the 2.5 mm series with its shifted field of view and 0.7 mm
    pixels is placed on the 5 mm series by patient coordinates (it used to be refused as 'shifted')."""
    from liverview.annotations.export_seg import export_seg
    from liverview.io.seg_import import METHOD_POSITION, import_seg

    volume, lesion = crlm
    other = load_series(resample_series(volume, tmp_path / "delayed", (0.0, 0.0, 0.0), volume.frame_of_reference_uid))
    placed = transfer_lesion(lesion, volume, other, align=False).lesion
    document = AnnotationDocument(other.study_uid, other.series_uid, other.frame_of_reference_uid, lesions=[placed])
    seg = export_seg(other, document, tmp_path / "other.dcm", pseudonymize=False)
    result = import_seg(seg, volume)
    assert result.method == METHOD_POSITION and any("resampled" in w for w in result.warnings)
    mask = result.segments[0].mask
    original = lesion_mask(volume, lesion)
    assert 2 * (mask & original).sum() / (mask.sum() + original.sum()) > 0.8
