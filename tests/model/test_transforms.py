"""Preprocessing: shapes and ranges, the app path equals the dataset path, augmentation only in training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liverview.model.data import LesionDataset, load_key_slice, load_records
from liverview.model.transforms import (CropSquareResize, HUWindow, PreprocessConfig, WindowToChannels,
                                        build_preprocess, prepare_lesion_input, prepare_lesion_patch,
                                        select_key_slice, select_slab)


def _disc_slice(shape=(256, 256), centre=(128, 120), radius=20, inside=10, outside=100, noise=10.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    hu = np.where(mask, inside, outside) + rng.normal(0, noise, shape)
    return np.rint(hu).astype(np.int16), mask


@pytest.mark.parametrize("config", [PreprocessConfig(), PreprocessConfig(denoise="bilateral"),
                                    PreprocessConfig(denoise="nlmeans", clahe=True), PreprocessConfig(size=64)])
def test_shape_dtype_and_range(config):
    hu, mask = _disc_slice()
    for train in (False, True):
        x = build_preprocess(config)(hu, mask, (0.7, 0.7), train=train, rng=np.random.default_rng(3))
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert tuple(x.shape) == config.input_shape == (3, config.size, config.size)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert torch.isfinite(x).all()
        # The windows clip, so the range alone would hold whatever they did: every window must show
        # the lesion (10 HU) darker than the liver around it (100 HU).
        s, r = config.size, config.size // 16
        lesion = x[:, s // 2 - r:s // 2 + r, s // 2 - r:s // 2 + r].mean(dim=(1, 2))
        liver = x[:, :r, :r].mean(dim=(1, 2))
        assert (lesion < liver).all(), (lesion, liver)


def test_windows_map_hu_linearly_to_0_1():
    window = WindowToChannels([HUWindow("w", 40.0, 400.0)])
    hu = np.array([[-500.0, -160.0, 40.0, 240.0, 1000.0]], dtype=np.float32)
    out = window({"hu": hu})["image"][0, 0]
    assert np.allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_default_channels_are_liver_abdomen_wide():
    names = [(w.name, w.width, w.center) for w in PreprocessConfig().windows]
    assert names == [("liver", 170.0, 70.0), ("abdomen", 400.0, 40.0), ("wide", 1500.0, 150.0)]
    # A cyst (5 HU) and liver (100 HU) are far apart in the liver window, close in the wide one.
    x = prepare_lesion_input(*_disc_slice(inside=5, outside=100, noise=0), (0.7, 0.7))
    centre, corner = x[:, 112, 112], x[:, 2, 2]
    assert (corner - centre)[0] > 0.5 and (corner - centre)[2] < 0.1


def test_crop_is_square_in_millimetres():
    """The same 14 mm disc at 0.5 mm and at 1.0 mm pixels gives the same picture."""
    fine_hu, fine_mask = _disc_slice((200, 200), (100, 100), 14, noise=0)
    coarse_hu, coarse_mask = _disc_slice((100, 100), (50, 50), 7, noise=0)
    a = prepare_lesion_input(fine_hu, fine_mask, (0.5, 0.5))
    b = prepare_lesion_input(coarse_hu, coarse_mask, (1.0, 1.0))
    assert float((a - b).abs().mean()) < 0.03
    crop = CropSquareResize(224, 1.25, 4.0, 20.0)
    assert crop.square_mm(fine_mask, (0.5, 0.5))[2] == pytest.approx(max(20.0, 14.5 * 1.25 + 8), rel=0.05)
    # Anisotropic pixels: the side is physical, so a disc stays a disc.
    cy, cx, side = crop.square_mm(np.ones((10, 40), bool), (2.0, 0.5))
    assert side == pytest.approx(max(20.0, 20.0 * 1.25 + 8.0))


def test_augmentation_only_in_training_mode():
    hu, mask = _disc_slice()
    pre = build_preprocess(PreprocessConfig())
    evals = [pre(hu, mask, (0.7, 0.7)) for _ in range(2)]
    assert torch.equal(evals[0], evals[1])
    assert torch.equal(evals[0], pre(hu, mask, (0.7, 0.7), train=False, rng=np.random.default_rng(1)))
    a = pre(hu, mask, (0.7, 0.7), train=True, rng=np.random.default_rng(1))
    b = pre(hu, mask, (0.7, 0.7), train=True, rng=np.random.default_rng(1))
    c = pre(hu, mask, (0.7, 0.7), train=True, rng=np.random.default_rng(2))
    assert torch.equal(a, b)  # reproducible from the seed
    assert not torch.equal(a, evals[0]) and not torch.equal(a, c)


def test_training_only_transforms_are_the_random_ones():
    pre = build_preprocess(PreprocessConfig(denoise="bilateral", clahe=True))
    names = [(type(t).__name__, t.training_only) for t in pre.pipeline.transforms]
    assert {n for n, random in names if random} == {"RandomHUNoise", "RandomHUJitter", "RandomAffine", "RandomGamma"}
    assert [n for n, random in names if not random] == ["CropToContext", "Denoise", "CropSquareResize",
                                                        "WindowToChannels", "Clahe", "ToTensor"]


def test_enhancement_changes_the_input_and_denoising_reduces_noise():
    hu, mask = _disc_slice(noise=20.0)
    plain = prepare_lesion_input(hu, mask, (0.7, 0.7))
    smooth = prepare_lesion_input(hu, mask, (0.7, 0.7), PreprocessConfig(denoise="bilateral"))
    nlm = prepare_lesion_input(hu, mask, (0.7, 0.7), PreprocessConfig(denoise="nlmeans"))
    clahe = prepare_lesion_input(hu, mask, (0.7, 0.7), PreprocessConfig(clahe=True))
    background = (slice(0, 20), slice(0, 20))
    assert smooth[0][background].std() < 0.7 * plain[0][background].std()
    assert nlm[0][background].std() < 0.7 * plain[0][background].std()
    assert not torch.equal(clahe, plain)


def test_config_is_json_serialisable_and_round_trips():
    config = PreprocessConfig(size=128, denoise="nlmeans", clahe=True)
    data = json.loads(json.dumps(config.to_dict()))
    assert PreprocessConfig.from_dict(data) == config
    assert build_preprocess(PreprocessConfig.from_dict(data)) is build_preprocess(config)  # same shared object
    with pytest.raises(ValueError, match="unknown"):
        PreprocessConfig.from_dict({**data, "sharpen": True})
    with pytest.raises(ValueError, match="denoise"):
        PreprocessConfig(denoise="median")


def test_empty_mask_and_shape_mismatch_are_refused():
    hu, mask = _disc_slice()
    with pytest.raises(ValueError, match="empty"):
        prepare_lesion_input(hu, np.zeros_like(mask), (0.7, 0.7))
    with pytest.raises(ValueError, match="same shape"):
        prepare_lesion_input(hu, mask[:-1], (0.7, 0.7))


def _disc_volume(slices=5, seed=0):
    hu, mask = zip(*(_disc_slice(inside=10 + 20 * z, seed=seed + z) for z in range(slices)))
    return np.stack(hu), np.stack(mask)


def test_slab_is_the_key_slice_and_its_neighbours_repeating_the_ends():
    hu, _ = _disc_volume()
    assert select_slab(hu, 2, 0).shape == hu.shape[1:] and np.array_equal(select_slab(hu, 2, 0), hu[2])
    assert np.array_equal(select_slab(hu, 2, 1), hu[1:4])
    assert np.array_equal(select_slab(hu, 0, 1), hu[[0, 0, 1]])
    assert np.array_equal(select_slab(hu, 4, 1), hu[[3, 4, 4]])


@pytest.mark.parametrize("train", [False, True])
def test_slab_channels_are_window_major_and_the_key_slice_matches_the_single_slice_input(train):
    hu, mask = _disc_volume()
    single, slab = PreprocessConfig(), PreprocessConfig(neighbour_slices=1)
    assert slab.channels == 9 and slab.input_shape == (9, 224, 224) and slab.slab_slices == 3
    x1 = build_preprocess(slab)(select_slab(hu, 2, 1), mask[2], (0.7, 0.7), train=train, rng=np.random.default_rng(4))
    assert tuple(x1.shape) == (9, 224, 224) and float(x1.min()) >= 0.0 and float(x1.max()) <= 1.0
    if not train:
        x0 = prepare_lesion_input(hu[2], mask[2], (0.7, 0.7), single)
        assert torch.equal(x1[[1, 4, 7]], x0)  # window w, key slice -> channel 3w + 1
        # The slices differ inside the lesion (10 + 20 z HU): the neighbours are really other slices.
        centre = (slice(100, 124), slice(100, 124))
        liver_window = [float(x1[c][centre].mean()) for c in range(3)]
        assert liver_window[0] < liver_window[1] < liver_window[2]


def test_slab_settings_are_checked():
    hu, mask = _disc_volume()
    with pytest.raises(ValueError, match="3 slice"):
        prepare_lesion_input(hu[2], mask[2], (0.7, 0.7), PreprocessConfig(neighbour_slices=1))
    with pytest.raises(ValueError, match="1 slice"):
        prepare_lesion_input(hu[1:4], mask[2], (0.7, 0.7))
    with pytest.raises(ValueError, match="neighbour_slices"):
        PreprocessConfig(neighbour_slices=3)  # the training export keeps two slices around each lesion
    config = PreprocessConfig(neighbour_slices=2)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_key_slice_is_the_largest_roi():
    mask = np.zeros((5, 10, 10), bool)
    mask[1, 2:4, 2:4] = True
    mask[2, 2:7, 2:7] = True
    mask[3, 2:7, 2:7] = True  # tie with slice 2: the one nearer the middle of 1..4 (2.5) -> 2 (first)
    mask[4, 5, 5] = True
    assert select_key_slice(mask) == 2


def test_app_path_equals_dataset_path_on_a_real_export(crlm_export):
    """What the app computes from the whole slice + the ROI equals what training/evaluation computes
    from the exported patch - including a lesion in the image corner, where the margins are clipped."""
    from liverview.annotations.measurements import lesion_mask

    volume = crlm_export.volume
    records = load_records([crlm_export.folder]).records
    assert len(records) == 3
    for config in (PreprocessConfig(), PreprocessConfig(denoise="bilateral", clahe=True, size=128),
                   PreprocessConfig(neighbour_slices=1)):
        dataset = LesionDataset(records, ["benign_cyst", "hemangioma", "hcc", "metastasis"], build_preprocess(config))
        for index, record in enumerate(records):
            lesion = next(item for item in crlm_export.document.lesions if item.id == record.extra["lesion_id"])
            mask3d = lesion_mask(volume, lesion)
            z = select_key_slice(mask3d)
            assert load_key_slice(record).z + int(record.extra["bbox_zyx"][0][0]) == z
            app = prepare_lesion_input(select_slab(volume.array, z, config.neighbour_slices), mask3d[z],
                                       volume.spacing_mm[1:], config)
            assert tuple(app.shape) == config.input_shape
            item, label = dataset[index]
            assert torch.equal(app, item), record.label
            assert torch.equal(app, prepare_lesion_patch(volume.array, mask3d, volume.spacing_mm, config))
            assert dataset.classes[label] == record.label
