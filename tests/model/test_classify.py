"""Classifying outlined lesions of a real loaded series (the app's and liverview-predict's core)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liverview.annotations.document import AIResult, AnnotationDocument, Lesion, Roi
from liverview.model.bundle_writer import save_bundle
from liverview.model.classify import (ClassificationError, classify_lesion, classify_lesions, compute_slice_heatmap,
                                      key_slice, lesion_slice_masks)
from liverview.model.gradcam import compute_gradcam
from liverview.model.inference import load_bundle, predict
from liverview.model.network import build_network
from liverview.model.transforms import PreprocessConfig, prepare_lesion_patch
from liverview.model.uncertainty import uncertainty_levels

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    torch.manual_seed(3)
    net = build_network("tiny_cnn", 4)
    return save_bundle(tmp_path_factory.mktemp("tiny") / "bundle", net, architecture="tiny_cnn", classes=CLASSES,
                       preprocess_config=PreprocessConfig(size=64), metrics={"macro_f1": 0.3},
                       training_domain=DEMO_DOMAIN)


#: A domain the test demo study (256 x 256 at 1.56 mm, portal-venous) lies inside.
DEMO_DOMAIN = {"phases": ["portal_venous"], "pixel_mm": [0.6, 1.7], "slice_thickness_mm": [1.0, 6.0]}


@pytest.fixture(scope="module")
def demo(demo_study):
    from liverview.io import load_series

    volume = load_series(demo_study.dicom_dir)
    document = AnnotationDocument.from_dict(json.loads(demo_study.ground_truth_path.read_text()))
    # The tests below loop over these lesions (some over the first three): none may pass by having none.
    assert len(document.lesions) >= 3
    return volume, document


def test_classify_demo_lesions_matches_the_training_path(tiny_bundle, demo):
    volume, document = demo
    loaded = load_bundle(tiny_bundle)
    for lesion in document.lesions:
        prediction = classify_lesion(loaded, volume, lesion)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.predicted == max(prediction.probabilities, key=prediction.probabilities.get)
        assert 0.0 <= prediction.entropy <= 1.0 and prediction.uncertainty in ("low", "moderate", "high")
        # The dataset/evaluation path: a 3-D patch reduced to its key slice by the training transforms.
        masks = lesion_slice_masks(volume, lesion)
        z0, z1 = min(masks), max(masks) + 1
        mask = np.zeros((z1 - z0,) + volume.array.shape[1:], dtype=bool)
        for z, plane in masks.items():
            mask[z - z0] = plane
        tensor = prepare_lesion_patch(volume.array[z0:z1], mask, volume.spacing_mm, loaded.preprocess_config)
        np.testing.assert_allclose(predict(loaded, tensor)[0], [prediction.probabilities[c] for c in CLASSES],
                                   atol=1e-5)
        assert prediction.slice_index == z0 + int(np.argmax(mask.sum(axis=(1, 2)))) or \
            mask[prediction.slice_index - z0].sum() == mask.sum(axis=(1, 2)).max()
        heatmap = prediction.heatmap
        assert heatmap is not None and heatmap.cam.shape == (64, 64) and heatmap.slice_index == prediction.slice_index
        x0, y0, width, height = heatmap.extent_px()
        ys, xs = np.nonzero(masks[prediction.slice_index])
        # The heatmap square covers the outline it explains.
        assert x0 <= xs.min() and xs.max() <= x0 + width and y0 <= ys.min() and ys.max() <= y0 + height
        result = prediction.to_ai_result()
        assert AIResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_a_slab_model_reads_the_key_slice_and_its_neighbours_as_training_does(tmp_path, demo):
    """A 2.5-D model: the app's slab from the whole series equals the one from an exported patch
    (lesion slices plus the export's one-slice margin), and the neighbours change the answer."""
    from liverview.annotations.dataset_format import MARGIN_Z_SLICES
    from liverview.model.classify import model_slab

    volume, document = demo
    torch.manual_seed(5)
    config = PreprocessConfig(size=64, neighbour_slices=1)
    folder = save_bundle(tmp_path / "slab", build_network("tiny_cnn", 4, config.channels), architecture="tiny_cnn",
                         classes=CLASSES, preprocess_config=config, metrics={"macro_f1": 0.3})
    loaded = load_bundle(folder)
    for lesion in document.lesions:
        prediction = classify_lesion(loaded, volume, lesion, tta=False)
        masks = lesion_slice_masks(volume, lesion)
        z0, z1 = max(min(masks) - MARGIN_Z_SLICES, 0), min(max(masks) + 1 + MARGIN_Z_SLICES, volume.array.shape[0])
        mask = np.zeros((z1 - z0,) + volume.array.shape[1:], dtype=bool)
        for z, plane in masks.items():
            mask[z - z0] = plane
        tensor = prepare_lesion_patch(volume.array[z0:z1], mask, volume.spacing_mm, config)
        assert tuple(tensor.shape) == (9, 64, 64)
        np.testing.assert_allclose(predict(loaded, tensor)[0], [prediction.probabilities[c] for c in CLASSES],
                                   atol=1e-5)
        z = prediction.slice_index
        assert np.array_equal(model_slab(loaded, volume, z)[1], volume.array[z])
        flat = np.repeat(volume.array[z][None], 3, axis=0)
        flat_probs = predict(loaded, loaded.preprocess(flat, masks[z], volume.spacing_mm[1:]))[0]
        assert not np.allclose(flat_probs, [prediction.probabilities[c] for c in CLASSES], atol=1e-6)


def test_a_flip_averaging_model_answers_in_the_app_as_in_evaluation(tmp_path, demo):
    from liverview.model.inference import predict_flips, predict_lesions

    volume, document = demo
    torch.manual_seed(9)
    folder = save_bundle(tmp_path / "flips", build_network("tiny_cnn", 4), architecture="tiny_cnn", classes=CLASSES,
                         preprocess_config=PreprocessConfig(size=64), metrics={"macro_f1": 0.3}, flip_average=True,
                         training_domain=DEMO_DOMAIN)
    loaded = load_bundle(folder)
    for lesion in document.lesions[:3]:
        prediction = classify_lesion(loaded, volume, lesion)
        masks = lesion_slice_masks(volume, lesion)
        z = prediction.slice_index
        tensor = loaded.preprocess(volume.array[z], masks[z], volume.spacing_mm[1:])
        expected = predict_lesions(loaded, tensor)[0]
        np.testing.assert_allclose([prediction.probabilities[c] for c in CLASSES], expected, atol=1e-5)
        copies = predict_flips(loaded, tensor)
        assert prediction.tta_spread == pytest.approx(float(copies[:, 0].std(axis=0).max()), abs=1e-6)
        assert prediction.heatmap.explained == CLASSES[int(np.argmax(expected))]
        # The evaluation report counts answers by the very level the app shows.
        assert uncertainty_levels(copies, flip_average=True) == [prediction.uncertainty]


def test_heatmap_follows_the_slices_of_a_lesion(tiny_bundle, demo):
    volume, document = demo
    loaded = load_bundle(tiny_bundle)
    lesion = max(document.lesions, key=lambda item: len({roi.slice_index for roi in item.rois}))
    masks = lesion_slice_masks(volume, lesion)
    assert len(masks) >= 3
    centres = []
    for z in sorted(masks):
        heatmap = compute_slice_heatmap(loaded, volume, lesion, z, "hcc")
        assert heatmap.slice_index == z and heatmap.explained == "hcc"
        centres.append(heatmap.center_yx)
    assert len(set(centres)) > 1  # placed on each slice's own outline
    from liverview.imaging.orientation import slice_number

    # The slice named as the viewer numbers it (reading order), not the array index + 1.
    outside = max(masks) + 1
    assert slice_number(volume, outside) != outside + 1
    with pytest.raises(ClassificationError, match=f"no outline on slice {slice_number(volume, outside)}$"):
        compute_slice_heatmap(loaded, volume, lesion, outside, "hcc")


def test_bad_lesions_are_reported_and_the_batch_goes_on(tiny_bundle, demo):
    volume, document = demo
    loaded = load_bundle(tiny_bundle)
    outside = Lesion(reader="R", rois=[Roi(5, [(-50.0, -50.0), (-40.0, -50.0), (-40.0, -40.0)])])
    beyond = Lesion(reader="R", rois=[Roi(volume.shape[0] + 3, [(10.0, 10.0), (30.0, 10.0), (30.0, 30.0)])])
    lesions = [document.lesions[0], outside, beyond, document.lesions[1]]
    seen = []
    batch = classify_lesions(loaded, volume, lesions, heatmap=False, on_result=seen.append)
    assert [p.lesion_id for p in batch.predictions] == [document.lesions[0].id, document.lesions[1].id] == \
        [p.lesion_id for p in seen]
    assert set(batch.errors) == {outside.id, beyond.id} and "no outline inside the image" in batch.errors[outside.id]
    assert not batch.cancelled


def test_a_batch_stops_between_lesions(tiny_bundle, demo):
    volume, document = demo
    loaded = load_bundle(tiny_bundle)
    calls = []
    batch = classify_lesions(loaded, volume, document.lesions, heatmap=False,
                             should_stop=lambda: len(calls) >= 2, progress=lambda *a: calls.append(a))
    assert batch.cancelled and len(batch.predictions) == 2


def test_a_non_ct_series_is_refused(tiny_bundle, demo):
    import dataclasses

    volume, document = demo
    loaded = load_bundle(tiny_bundle)
    mr_identity = dataclasses.replace(volume.info.identity, modality="MR")
    mr = dataclasses.replace(volume, info=dataclasses.replace(volume.info, identity=mr_identity))
    assert not mr.is_hu
    with pytest.raises(ClassificationError, match="Hounsfield units; this series is not: modality MR, expected CT"):
        classify_lesion(loaded, mr, document.lesions[0])


def test_key_slice_is_the_largest_outline_nearest_the_middle():
    plane = np.zeros((4, 4), dtype=bool)
    big, small = plane.copy(), plane.copy()
    big[:2, :2] = True
    small[0, 0] = True
    assert key_slice({3: small, 4: big, 5: small, 6: big, 7: big, 8: small}) == 6


def test_gradcam_survives_inference_mode_frozen_weights_and_in_place_activations(tiny_bundle):
    loaded = load_bundle(tiny_bundle)
    x = torch.rand(loaded.input_size, generator=torch.Generator().manual_seed(0))
    reference, index, _ = compute_gradcam(loaded, x)
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    try:
        with torch.inference_mode():
            frozen, frozen_index, _ = compute_gradcam(loaded, torch.rand(loaded.input_size).copy_(x))
    finally:
        for p in loaded.model.parameters():
            p.requires_grad_(True)
    assert frozen_index == index
    np.testing.assert_allclose(frozen, reference, atol=1e-5)
    # An in-place op in the module after the target layer (tiny_cnn: the pooling) must not corrupt
    # the captured maps: the result equals that of the same op done out of place.
    maps = {}
    for name, hook in (("out-of-place", lambda module, args: (args[0] + 0.5,)),
                       ("in-place", lambda module, args: (args[0].add_(0.5),))):
        handle = loaded.model.pool.register_forward_pre_hook(hook)
        try:
            maps[name] = compute_gradcam(loaded, x, index)[0]
        finally:
            handle.remove()
    np.testing.assert_allclose(maps["out-of-place"], reference, atol=1e-6)
    np.testing.assert_allclose(maps["in-place"], maps["out-of-place"], atol=1e-6)


def test_load_model_with_fallback_lands_on_a_working_device(tiny_bundle):
    from liverview.model.classify import load_model_with_fallback

    loaded, note = load_model_with_fallback(tiny_bundle, "no-such-device", threads=0)
    assert loaded.device.type == "cpu" and "no-such-device unavailable" in note
    loaded, note = load_model_with_fallback(tiny_bundle, "cuda", threads=0)
    if torch.cuda.is_available():
        assert loaded.device.type == "cuda" and note == ""
    else:
        assert loaded.device.type == "cpu" and "no CUDA device here" in note
    loaded, note = load_model_with_fallback(tiny_bundle, "cpu", threads=0)
    assert loaded.device.type == "cpu" and note == ""


def test_a_device_that_is_not_there_is_a_sentence_not_a_traceback():
    """liverview-predict --device cuda on a machine without CUDA printed torch's assertion and traceback;
    --device gpu listed every device type torch knows."""
    from liverview.model.inference import resolve_device

    with pytest.raises(ValueError, match="unknown device 'gpu': use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="there is no cuda:99"):
            resolve_device("cuda:99")
    else:
        with pytest.raises(ValueError, match="no CUDA device here"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_the_heatmap_share_inside_the_grown_outline():
    from liverview.model.classify import Heatmap

    mask = np.zeros((100, 100), dtype=bool)
    mask[40:60, 40:60] = True
    # A 20 x 20 map over the 40 mm square around the lesion at 1 mm pixels: one cell per 2 pixels.
    cam = np.zeros((20, 20), dtype=np.float32)
    cam[8:12, 8:12] = 1.0  # on the lesion
    on = Heatmap(0, cam, (49.5, 49.5), 40.0, (1.0, 1.0), "hcc")
    assert on.share_inside(mask) == pytest.approx(1.0)
    far = np.zeros((20, 20), dtype=np.float32)
    far[0:2, 0:2] = 1.0  # a corner 20 mm from the outline
    assert Heatmap(0, far, (49.5, 49.5), 40.0, (1.0, 1.0), "hcc").share_inside(mask) == 0.0
    band = np.zeros((20, 20), dtype=np.float32)
    band[0:2, 0:8] = 1.0  # 16 cells (as many as on the lesion) 6-10 mm above the grown outline
    half = cam + band
    assert Heatmap(0, half, (49.5, 49.5), 40.0, (1.0, 1.0), "hcc").share_inside(mask) == pytest.approx(0.5)
    # With the square's centre at row 49.7 its top edge is at 29.7 and cell i's centre at 29.7 + 2 i + 1, on
    # the grid the network's crop was sampled on. The outline starts at row 40 and the 5 mm margin reaches
    # row 35: cell 2 (centre 34.7, in row 35) counts as on the lesion, cell 1 (32.7) does not.
    for i, expected in ((2, 1.0), (1, 0.0)):
        near = np.zeros((20, 20), dtype=np.float32)
        near[i, 10] = 1.0
        assert Heatmap(0, near, (49.7, 49.5), 40.0, (1.0, 1.0), "hcc").share_inside(mask) == expected


def test_each_heatmap_cell_lies_where_the_network_read_the_slice_for_it():
    """One bright pixel on the slice: the crop cell that holds it - in the CNN's crop and in the structure
    network's - is the cell the heatmap places nearest that pixel, within half a cell (cells under half a
    pixel here, so a map laid half a pixel off fails)."""
    from liverview.model.classify import Heatmap
    from liverview.model.structure_reader import crop_phase, crop_square
    from liverview.model.transforms import CropSquareResize

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :96]
    for _ in range(12):
        spacing = (float(rng.uniform(1.4, 1.8)), float(rng.uniform(1.4, 1.8)))
        centre = rng.uniform(44.0, 52.0, size=2)
        mask = np.hypot(yy - centre[0], xx - centre[1]) < rng.uniform(3.0, 4.0)
        bright = tuple(np.argwhere(mask)[rng.integers(mask.sum())])
        image = np.zeros((96, 96), dtype=np.float32)
        image[bright] = 200.0  # under the structure crop's clip (6 x 50 HU over the liver)
        cnn = CropSquareResize(size=224)
        cy, cx, side = cnn.square_mm(mask, spacing)
        cnn_cells = cnn({"hu": image, "mask": mask, "spacing_yx": spacing})["hu"]
        structure_cells = crop_phase(image, mask, spacing, 0.0)[1]
        for cells, placed in ((cnn_cells, (cy, cx, side)), (structure_cells, crop_square(mask, spacing))):
            rows, cols = Heatmap(0, np.zeros_like(cells), placed[:2], placed[2], spacing, "hcc").cell_centres_px()
            row, col = np.unravel_index(np.argmax(cells), cells.shape)
            assert abs(rows[row] - bright[0]) <= (rows[1] - rows[0]) / 2 + 1e-9
            assert abs(cols[col] - bright[1]) <= (cols[1] - cols[0]) / 2 + 1e-9
            assert rows[1] - rows[0] < 0.5 and cols[1] - cols[0] < 0.5
