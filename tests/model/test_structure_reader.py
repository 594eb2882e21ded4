"""The structure reader: its crop, its handling of missing phases, and that it learns structure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from liverview.annotations.dataset_format import MARGIN_XY_PX
from liverview.imaging.lesion_enhancement import FEATURES
from liverview.model.structure_reader import (CROP_PX, HU_SCALE, InputArrays, LesionInputs, StructureNet, crop_display,
                                              crop_phase,
                                              gradcam_phases, lesion_inputs, predict_subsets, train_network)
from liverview.progress import Cancelled

PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")
SPACING = (0.7, 0.7)


def _disc(shape=(120, 120), centre=(60, 60), radius=10) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_the_crop_centres_the_lesion_in_hu_against_the_liver_and_looks_no_further_than_the_export_margin():
    mask = _disc()
    hu = np.full((3, 120, 120), 100.0)
    hu[:, mask] = 40.0
    # Beyond the outline's box plus the export margin: what a dataset patch does not hold.
    far = 60 + 10 + MARGIN_XY_PX + 2
    hu[:, :, far:] = 1000.0
    crop = crop_phase(hu, mask, SPACING, liver_hu=100.0)
    assert crop.shape == (4, CROP_PX, CROP_PX)
    middle = CROP_PX // 2
    assert crop[1, middle, middle] == pytest.approx((40.0 - 100.0) / HU_SCALE)
    assert crop[3, middle, middle] == pytest.approx(1.0)
    assert crop[3, 0, 0] == pytest.approx(0.0)
    assert crop[1].max() == pytest.approx(0.0), "the far bright band leaked into the crop"
    # A disc centred on a pixel comes out centred: the square is placed as the CNN's crop and its heatmap are.
    assert np.allclose(crop[3], crop[3][::-1, ::-1], atol=1e-5)
    # The lesion fills about two thirds of the crop (a 14 mm disc: 5 mm of liver on each side wins).
    share = crop[3].mean()
    assert 0.25 < share < 0.6


def test_a_single_slice_is_read_as_a_slab_of_three_and_an_empty_outline_is_refused():
    mask = _disc()
    hu = np.where(mask, 40.0, 100.0)
    assert np.allclose(crop_phase(hu, mask, SPACING, 100.0)[0], crop_phase(hu, mask, SPACING, 100.0)[2])
    with pytest.raises(ValueError, match="no pixel"):
        crop_phase(hu, np.zeros_like(mask), SPACING, 100.0)


def test_a_network_reading_more_slices_gets_them_all_and_refuses_a_slab_of_another_depth():
    mask = _disc()
    slab = np.stack([np.where(mask, 40.0 + 10.0 * k, 100.0) for k in range(5)])
    crop = crop_phase(slab, mask, SPACING, 100.0, neighbour_slices=2)
    assert crop.shape == (6, CROP_PX, CROP_PX)
    centre = CROP_PX // 2
    assert [round(float(c[centre, centre]) * HU_SCALE) for c in crop[:5]] == [-60, -50, -40, -30, -20]
    assert crop[5, centre, centre] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reads 5 slices around the key slice; the slab holds 3"):
        crop_phase(slab[1:4], mask, SPACING, 100.0, neighbour_slices=2)
    read = lesion_inputs({"arterial": slab}, mask, SPACING, PHASES, neighbour_slices=2)
    assert read.crops.shape == (len(PHASES), 6, CROP_PX, CROP_PX)
    assert crop_display(read, 1)[centre, centre] == int((0.5 - 40.0 / 170.0) * 255.0)  # the key slice, in the middle
    net = StructureNet(4, len(FEATURES), len(PHASES), neighbour_slices=2).eval()
    arrays = InputArrays.stack([read])
    assert net(*arrays.tensors(np.array([0]), arrays.present)).shape == (1, 4)


def test_a_phase_not_read_is_marked_missing_and_does_not_change_the_answer():
    mask = _disc()
    slab = np.where(mask, 40.0, 100.0)[None].repeat(3, axis=0)
    read = lesion_inputs({"arterial": slab, "portal_venous": slab + 10}, mask, SPACING, PHASES)
    assert read.present.tolist() == [False, True, True, False]
    assert not read.crops[0].any() and not read.numbers[3].any()
    assert read.numbers.shape == (4, len(FEATURES))
    assert read.long_axis_mm == pytest.approx(21 * 0.7, abs=0.8)
    torch.manual_seed(0)
    net = StructureNet(4, len(FEATURES), len(PHASES)).eval()
    arrays = InputArrays.stack([read])
    before = net(*arrays.tensors(np.array([0]), arrays.present))
    arrays.crops[0, 0] = 5.0  # an image where no phase was read
    arrays.numbers[0, 0] = 3.0
    after = net(*arrays.tensors(np.array([0]), arrays.present))
    assert torch.allclose(before, after)


def _toy_lesions(n: int, rng: np.random.Generator) -> tuple[InputArrays, np.ndarray]:
    """Two classes that differ only in structure the medians barely see: a bright rim against a
    uniform lesion of the same median, in the arterial phase."""
    lesions, labels = [], []
    mask = _disc(radius=12)
    inner = _disc(radius=8)
    for i in range(n):
        label = i % 2
        slab = np.where(mask, 60.0, 100.0) + rng.normal(0, 8, (3, 120, 120))
        if label:
            slab[:, mask & ~inner] += 80.0
        lesions.append(lesion_inputs({"arterial": slab, "portal_venous": slab}, mask, SPACING, PHASES))
        labels.append(label)
    return InputArrays.stack(lesions), np.array(labels)


def test_it_learns_a_rim_and_answers_every_subset_of_the_phases_given():
    rng = np.random.default_rng(0)
    inputs, labels = _toy_lesions(64, rng)
    net = train_network(inputs, labels, np.arange(48), 2, epochs=20, seed=0, batch=16)
    held = np.arange(48, 64)
    answers = predict_subsets(net, inputs, held, PHASES, [("arterial",), ("arterial", "portal_venous")])
    for probabilities in answers.values():
        assert np.allclose(probabilities.sum(axis=1), 1.0)
        assert (probabilities.argmax(axis=1) == labels[held]).mean() >= 0.9
    # Its heatmap for the rim lies on the lesion, not on the liver around it.
    rim = next(int(i) for i in held if labels[i] == 1)
    lesion = LesionInputs(inputs.crops[rim], inputs.numbers[rim], inputs.present[rim], float(inputs.long_axis_mm[rim]))
    cams = gradcam_phases(net, lesion, PHASES, ("arterial",), 1)
    assert list(cams) == ["arterial"] and cams["arterial"].max() == pytest.approx(1.0)
    on_lesion = inputs.crops[rim, 1, 3].astype(np.float32) > 0.5
    share = cams["arterial"][on_lesion].sum() / cams["arterial"].sum()
    assert share > on_lesion.mean()


def test_training_stops_when_asked():
    inputs, labels = _toy_lesions(8, np.random.default_rng(1))
    with pytest.raises(Cancelled):
        train_network(inputs, labels, np.arange(8), 2, epochs=2, should_stop=lambda: True)
