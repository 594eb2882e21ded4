"""A model that reads several contrast phases: the input, phase dropout, subsets, training and its card."""
from __future__ import annotations

import json

import numpy as np
import torch

from liverview.model.data import LesionDataset, load_records
from liverview.model.train_cli import main as train_main
from liverview.model.transforms import PreprocessConfig, build_preprocess, stack_phases

PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")
CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


def test_each_phase_gets_its_channels_and_a_missing_one_is_flagged_not_faked():
    config = PreprocessConfig(size=32, phases=PHASES)
    assert config.channels == 3 * 4 + 4 and config.input_shape == (16, 32, 32)
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 40), dtype=bool)
    mask[15:25, 15:25] = True
    slabs = {p: (rng.normal(60, 10, (40, 40)) + 40 * i).astype(np.int16) for i, p in enumerate(PHASES) if p != "arterial"}
    stacked, present = stack_phases(config, slabs)
    assert stacked.shape == (4, 40, 40) and present == [True, False, True, True]
    tensor = build_preprocess(config)(stacked, mask, (0.8, 0.8), present=present)
    assert tuple(tensor.shape) == config.input_shape
    # Window-major channels: window w, phase p at w * 4 + p; the arterial ones are zero, its flag 0.
    arterial = [w * 4 + 1 for w in range(3)]
    assert float(tensor[arterial].abs().sum()) == 0.0
    assert [float(tensor[12 + i].mean()) for i in range(4)] == [1.0, 0.0, 1.0, 1.0]
    assert all(float(tensor[w * 4 + p].abs().sum()) > 0 for w in range(3) for p in (0, 2, 3))
    # The same crop for every phase: identical slabs give identical channels.
    same, _ = stack_phases(config, {p: slabs["portal_venous"] for p in PHASES})
    out = build_preprocess(config)(same, mask, (0.8, 0.8))
    assert torch.equal(out[0], out[1]) and torch.equal(out[4], out[7])


def test_phase_dropout_and_subsets_on_a_multiphase_dataset(multiphase_dataset):
    records = load_records([multiphase_dataset]).records
    assert len(records) == 12
    config = PreprocessConfig(size=32, phases=PHASES)
    preprocess = build_preprocess(config)
    everything = LesionDataset(records, CLASSES, preprocess)
    assert all(float(everything[i][0][12:].mean()) == 1.0 for i in range(len(records)))
    arterial_only = LesionDataset(records, CLASSES, preprocess, read_phases=["arterial"])
    flags = [[float(v) for v in arterial_only[i][0][12:, 0, 0]] for i in range(len(records))]
    assert all(f == [0.0, 1.0, 0.0, 0.0] for f in flags)
    dropped = LesionDataset(records, CLASSES, preprocess, train=True, seed=1, phase_dropout=0.6)
    seen = [[float(v) for v in dropped[i][0][12:, 0, 0]] for i in range(len(records))]
    assert all(sum(f) >= 1 for f in seen) and any(sum(f) < 4 for f in seen)


def test_a_multiphase_run_is_measured_per_phase_combination(multiphase_dataset, tmp_path):
    run = tmp_path / "run"
    assert train_main([str(multiphase_dataset), "--out", str(run), "--arch", "tiny_cnn", "--epochs", "1",
                       "--input-size", "32", "--phases", ",".join(PHASES), "--phase-dropout", "0.3",
                       "--neighbour-slices", "0", "--no-baseline", "-q"]) == 0
    info = json.loads((run / "bundle" / "model.json").read_text())
    assert info["input_size"] == [16, 32, 32] and info["preprocessing"]["phases"] == list(PHASES)
    rows = {tuple(r["phases"]): r for r in info["metrics"]["by_phases"]}
    assert ("portal_venous",) in rows and PHASES in rows and ("arterial", "portal_venous") in rows
    tested = len(json.loads((run / "split.json").read_text())["test"])
    assert tested > 0 and all(r["n"] == tested for r in rows.values())
    assert info["training_domain"]["phases"] == list(PHASES)
    card = (run / "bundle" / "MODEL_CARD.md").read_text()
    assert "| arterial + portal_venous |" in card and "reads the contrast phases" in card


def test_the_app_path_reads_a_lesion_on_every_phase_of_the_study(tmp_path):
    """classify_lesion with a multiphase model: the outlined (portal-venous) series and the study's
    other phases, each carried and resampled around the lesion; without them only one phase is read."""
    from liverview.annotations.export_dataset import PhaseSource
    from liverview.imaging.contrast_phase import ContrastPhase, DecidedBy, PhaseDecision
    from liverview.model.bundle_writer import save_bundle
    from liverview.model.inference import load_bundle
    from liverview.model.classify import classify_lesion
    from liverview.model.network import build_network
    from liverview.synth.simulator import SimulatorConfig, patient_document, patient_volume, simulate_patient

    config = PreprocessConfig(size=32, phases=PHASES)
    torch.manual_seed(2)
    bundle = save_bundle(tmp_path / "mp", build_network("tiny_cnn", 4, config.channels), architecture="tiny_cnn",
                         classes=CLASSES, preprocess_config=config, metrics={"macro_f1": 0.3},
                         training_domain={"phases": list(PHASES)})
    loaded = load_bundle(bundle)
    patient = simulate_patient(8, config=SimulatorConfig(phases=PHASES, diameter_mm=(15.0, 30.0)))
    volume = patient_volume(patient)
    lesion = patient_document(patient, volume).lesions[0]
    pv = PhaseDecision(ContrastPhase.PORTAL_VENOUS, DecidedBy.IMAGES, "test")
    others = [PhaseSource(p, patient_volume(patient, p)) for p in PHASES if p != "portal_venous"]
    every = classify_lesion(loaded, volume, lesion, phase=pv, other_phases=others, heatmap=True)
    alone = classify_lesion(loaded, volume, lesion, phase=pv)
    assert every.phases_read == list(PHASES) and alone.phases_read == ["portal_venous"]
    assert every.probabilities != alone.probabilities and every.heatmap is not None
    assert every.to_ai_result().phases_read == list(PHASES)
    # Grad-CAM per phase: each read phase alone, so each map can differ from the combined one.
    assert sorted(every.phase_cams) == sorted(PHASES) and alone.phase_cams == {}
    size = config.size
    assert all(cam.shape == (size, size) and 0.0 <= cam.min() and cam.max() <= 1.0 for cam in every.phase_cams.values())
    assert any(not np.allclose(cam, every.heatmap.cam) for cam in every.phase_cams.values())
