"""Model bundles: save/load round trip, verification (corrupted weights refused), predict, Grad-CAM."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from liverview.model.bundle_format import BUNDLE_KEYS, BundleError, read_bundle_info
from liverview.model.bundle_writer import save_bundle
from liverview.model.inference import FLIP_DIMS, load_bundle, predict, predict_flips, predict_lesion, predict_lesions
from liverview.model.network import ARCHITECTURES, build_network, find_module, gradcam_target_layer
from liverview.model.transforms import PreprocessConfig, prepare_lesion_input

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]
SMALL = PreprocessConfig(size=48)


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    net = build_network("tiny_cnn", 4)
    folder = save_bundle(tmp_path / "bundle", net, architecture="tiny_cnn", classes=CLASSES, preprocess_config=SMALL,
                         metrics={"macro_f1": 0.5, "accuracy": 0.6}, training_data={"simulated": True, "n_lesions": 3},
                         history=[{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1}])
    return folder, net


def _disc():
    yy, xx = np.mgrid[:100, :100]
    mask = (yy - 50) ** 2 + (xx - 45) ** 2 < 15**2
    return np.where(mask, 10, 100).astype(np.int16), mask


def test_round_trip_gives_the_same_outputs(bundle):
    folder, net = bundle
    info = json.loads((folder / "model.json").read_text())
    assert set(BUNDLE_KEYS) <= set(info)
    assert [c["id"] for c in info["classes"]] == CLASSES
    assert info["classes"][2]["code"]["value"] == "25370001"
    assert info["input_size"] == [3, 48, 48] and info["gradcam_target_layer"] == "features.3"
    assert info["metrics"]["macro_f1"] == 0.5 and info["sha256"] == info["weights"]["sha256"]
    assert (folder / "MODEL_CARD.md").read_text().count("simulated") >= 1
    assert "not a medical device" in (folder / "MODEL_CARD.md").read_text().lower()

    loaded = load_bundle(folder, "cpu", expected_classes=CLASSES, expected_input_size=[3, 48, 48])
    assert loaded.classes == CLASSES and loaded.preprocess_config == SMALL and not loaded.model.training
    hu, mask = _disc()
    x = prepare_lesion_input(hu, mask, (0.8, 0.8), loaded.preprocess_config)
    probs = predict(loaded, x)
    assert probs.shape == (1, 4) and probs.dtype == np.float32 and probs.sum() == pytest.approx(1.0, abs=1e-5)
    net.eval()
    with torch.no_grad():
        expected = torch.softmax(net(x[None]), 1).numpy()
    assert np.allclose(probs, expected, atol=1e-6)
    assert np.allclose(predict(loaded, [x, x]), np.vstack([expected, expected]), atol=1e-6)
    by_class = predict_lesion(loaded, hu, mask, (0.8, 0.8))
    assert list(by_class) == CLASSES and np.allclose(list(by_class.values()), expected[0], atol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        predict(loaded, torch.zeros(3, 64, 64))


def test_corrupted_weights_are_refused(bundle):
    folder, _ = bundle
    weights = folder / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.pt is corrupted or was replaced: its SHA-256"):
        load_bundle(folder)


def test_weights_that_are_not_weights_are_refused_without_torchs_unsafe_advice(bundle):
    """Random bytes with a matching SHA-256: torch's message advised loading with weights_only=False."""
    from liverview.model.bundle_format import file_sha256

    folder, _ = bundle
    weights = folder / "weights.pt"
    weights.write_bytes(np.random.default_rng(0).bytes(4096))
    info = json.loads((folder / "model.json").read_text())
    info["weights"]["sha256"] = file_sha256(weights)
    (folder / "model.json").write_text(json.dumps(info))
    with pytest.raises(BundleError, match="cannot be read as a weights file") as raised:
        load_bundle(folder)
    assert "weights_only" not in str(raised.value) and "copy it again" in str(raised.value)
    _edit(folder, input_size="big")
    with pytest.raises(BundleError, match="is not a list of whole numbers"):
        load_bundle(folder)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "weights.pt").unlink(), "weights file weights.pt is missing"),
    (lambda f: (f / "model.json").unlink(), "model.json is missing"),
    (lambda f: (f / "model.json").write_text("{not json"), "cannot be read"),
])
def test_missing_or_damaged_files(bundle, damage, message):
    folder, _ = bundle
    damage(folder)
    with pytest.raises(BundleError, match=message):
        load_bundle(folder)


def _edit(folder, **changes):
    info = json.loads((folder / "model.json").read_text())
    info.update(changes)
    (folder / "model.json").write_text(json.dumps(info))


def test_unknown_architecture_and_mismatches(bundle, tmp_path):
    folder, _ = bundle
    with pytest.raises(BundleError, match="differ from the expected"):
        load_bundle(folder, expected_classes=["benign_cyst", "hcc"])
    with pytest.raises(BundleError, match="differs from the expected"):
        load_bundle(folder, expected_input_size=[3, 224, 224])
    _edit(folder, input_size=[3, 224, 224])
    with pytest.raises(BundleError, match="does not match the preprocessing"):
        load_bundle(folder)
    _edit(folder, input_size=[3, 48, 48], classes=[{"id": c} for c in CLASSES[:3]])
    with pytest.raises(BundleError, match="does not fit a tiny_cnn with 3 classes"):
        load_bundle(folder)
    _edit(folder, architecture="vit_h_14", classes=[{"id": c} for c in CLASSES])
    with pytest.raises(BundleError, match="unknown architecture 'vit_h_14'"):
        load_bundle(folder)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    _edit(folder, format_version=99, architecture="tiny_cnn")
    with pytest.raises(BundleError, match="newer than this liverview"):
        read_bundle_info(folder)


def test_every_architecture_names_a_real_gradcam_layer():
    for name in ARCHITECTURES:
        net = build_network(name, 4)
        layer = find_module(net, gradcam_target_layer(name))
        assert isinstance(layer, torch.nn.Module)
        assert list(layer.parameters()), name  # a layer with weights, i.e. a feature-producing stage
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
        # From-scratch training on a few hundred steps needs BatchNorm statistics that keep up
        # (torchvision's MobileNetV3 default of 0.01 made eval-mode predictions collapse).
        norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(m.momentum == 0.1 for m in norms), name


def test_every_architecture_reads_a_slab_of_nine_channels():
    for name in ARCHITECTURES:
        net = build_network(name, 4, in_channels=9)
        first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        assert first.in_channels == 9, name
        assert net(torch.zeros(2, 9, 64, 64)).shape == (2, 4), name
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 3, 64, 64))


def test_a_slab_bundle_round_trips_and_a_single_slice_one_refuses_slab_inputs(tmp_path):
    torch.manual_seed(1)
    config = PreprocessConfig(size=48, neighbour_slices=1)
    net = build_network("tiny_cnn", 4, config.channels)
    folder = save_bundle(tmp_path / "slab", net, architecture="tiny_cnn", classes=CLASSES, preprocess_config=config,
                         metrics={"macro_f1": 0.5})
    assert json.loads((folder / "model.json").read_text())["input_size"] == [9, 48, 48]
    card = (folder / "MODEL_CARD.md").read_text()
    assert "key slice of the ROI and 1 slice on each side" in card and "3 adjacent axial slices" in card
    loaded = load_bundle(folder)
    hu, mask = _disc()
    slab = np.stack([hu, hu + 30, hu - 30])
    x = prepare_lesion_input(slab, mask, (0.8, 0.8), loaded.preprocess_config)
    net.eval()
    with torch.no_grad():
        assert np.allclose(predict(loaded, x), torch.softmax(net(x[None]), 1).numpy(), atol=1e-6)
    _edit(folder, input_size=[3, 48, 48])
    with pytest.raises(BundleError, match="does not match the preprocessing"):
        load_bundle(folder)


def test_a_flip_averaging_bundle_answers_with_the_mean_over_the_flips(bundle, tmp_path):
    folder, net = bundle
    single = load_bundle(folder)
    assert not single.flip_average and single.info["inference"] == {"flip_average": False, "flips": []}
    hu, mask = _disc()
    x = prepare_lesion_input(hu, mask, (0.8, 0.8), single.preprocess_config)
    asymmetric = x.clone()
    asymmetric[:, :20, :10] = 1.0  # a corner: every flip differs
    assert np.array_equal(predict_lesions(single, [x, asymmetric]), predict(single, [x, asymmetric]))
    averaging = load_bundle(save_bundle(tmp_path / "flips", net, architecture="tiny_cnn", classes=CLASSES,
                                        preprocess_config=SMALL, flip_average=True))
    assert averaging.flip_average
    assert "mean of the class probabilities of the input and its" in (averaging.path / "MODEL_CARD.md").read_text()
    assert "- Answer: one pass per lesion" in (folder / "MODEL_CARD.md").read_text()
    copies = predict_flips(averaging, [x, asymmetric])
    assert copies.shape == (len(FLIP_DIMS), 2, 4)
    expected = np.stack([predict(single, [torch.flip(t, d) if d else t for t in (x, asymmetric)]) for d in FLIP_DIMS])
    assert np.allclose(copies, expected, atol=1e-6) and np.abs(copies[0, 1] - copies[1, 1]).max() > 1e-5
    assert np.allclose(predict_lesions(averaging, [x, asymmetric]), expected.mean(axis=0), atol=1e-6)
    by_class = predict_lesion(averaging, hu, mask, (0.8, 0.8))
    assert np.allclose(list(by_class.values()), expected[:, 0].mean(axis=0), atol=1e-6)


def test_default_architecture():
    from liverview.model.network import DEFAULT_ARCHITECTURE
    from liverview.model.train import TrainConfig

    assert DEFAULT_ARCHITECTURE == "mobilenet_v3_small" == TrainConfig(datasets=["x"]).architecture
    assert gradcam_target_layer(DEFAULT_ARCHITECTURE) == "features.12"


def test_gradcam_heatmap(bundle):
    from liverview.model.gradcam import compute_gradcam

    folder, _ = bundle
    loaded = load_bundle(folder)
    hu, mask = _disc()
    x = prepare_lesion_input(hu, mask, (0.8, 0.8), loaded.preprocess_config)
    maps = [compute_gradcam(loaded, x, c) for c in range(4)]
    for target, (cam, index, probabilities) in enumerate(maps):
        assert index == target
        assert cam.shape == (48, 48) and cam.dtype == np.float32
        # ReLU then division by the peak: the map's peak is 1 (or the map is all zero).
        assert cam.min() >= 0.0 and (cam.max() == pytest.approx(1.0) or not cam.any())
        np.testing.assert_allclose(probabilities, predict(loaded, x)[0], atol=1e-5)
    assert any(cam.max() == pytest.approx(1.0) for cam, _, _ in maps)
    assert compute_gradcam(loaded, x)[1] == int(predict(loaded, x).argmax())
    for target, (cam, _, _) in enumerate(maps):
        np.testing.assert_allclose(cam, _gradcam_by_full_backward(loaded, x, target), atol=1e-5)


def _gradcam_by_full_backward(loaded, x, target):
    """Grad-CAM as the paper computes it, by a backward pass through the whole network (the reference the
    shortcut to the target layer must equal)."""
    captured = {}
    layer = find_module(loaded.model, loaded.gradcam_target_layer)
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.setdefault("maps", output))
    try:
        with torch.enable_grad():
            x = x.detach().clone().unsqueeze(0).requires_grad_(True)
            captured.clear()
            logits = loaded.model(x)
            captured["maps"].retain_grad()
            logits[0, target].backward()
    finally:
        handle.remove()
        loaded.model.zero_grad(set_to_none=True)
    maps = captured["maps"]
    cam = F.relu((maps.grad.mean(dim=(2, 3), keepdim=True) * maps.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()
    return cam / cam.max() if cam.max() > 0 else cam
