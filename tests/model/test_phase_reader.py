"""The phase reader: enhancement measured per phase, one reader per subset of phases, and the app's path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liverview.imaging.lesion_enhancement import FEATURES, measure_lesion_enhancement
from liverview.model.bundle_format import BundleError
from liverview.model.bundle_writer import save_bundle
from liverview.model.data import load_records
from liverview.model.inference import load_bundle
from liverview.model.network import build_network
from liverview.model.phase_reader import (PHASE_READER_CARD, PHASE_READER_FILE, PhaseReader, fit_phase_reader,
                                         reader_scores_simulated, reader_uncertainty, score_phase_reader)
from liverview.model.phase_reader_cli import read_records
from liverview.model.transforms import PreprocessConfig

PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")
CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


def _disc(size: int = 80, radius: float = 14.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    return r, r < radius


def test_enhancement_is_read_against_the_liver_ring_with_a_bright_rim_told_from_the_core():
    r, mask = _disc()
    hu = np.where(mask, 40.0, 110.0)
    hu[mask & (r > 11.0)] = 160.0  # a rim of about 3 px (2.1 mm at 0.7 mm pixels)
    values = dict(zip(FEATURES, measure_lesion_enhancement(hu, mask, (0.7, 0.7))))
    assert values["liver_hu"] == 110.0 and values["lesion_hu"] == 40.0
    assert values["lesion_minus_liver_hu"] == -70.0 and values["rim_minus_core_hu"] == 120.0
    assert 0.2 < values["share_above_liver"] < 0.5 and values["p90_minus_liver_hu"] == 50.0
    plain = dict(zip(FEATURES, measure_lesion_enhancement(np.where(mask, 40.0, 110.0), mask, (0.7, 0.7))))
    assert plain["rim_minus_core_hu"] == 0.0 and plain["share_above_liver"] == 0.0
    with pytest.raises(ValueError, match="no pixel"):
        measure_lesion_enhancement(hu, np.zeros_like(mask), (0.7, 0.7))


def _tiny_cnn_bundle(folder, seed: int):
    """A bundle of an untrained tiny CNN reading 32-pixel crops of the key slice alone."""
    config = PreprocessConfig(size=32)
    torch.manual_seed(seed)
    return save_bundle(folder / "cnn", build_network("tiny_cnn", 4, config.channels), architecture="tiny_cnn",
                       classes=CLASSES, preprocess_config=config, metrics={"macro_f1": 0.3})


@pytest.fixture(scope="module")
def fitted(multiphase_dataset, tmp_path_factory):
    """A tiny CNN bundle and a phase reader fitted to it on the 12-lesion multiphase dataset."""
    bundle = _tiny_cnn_bundle(tmp_path_factory.mktemp("reader"), 4)
    loaded = load_bundle(bundle)
    records = load_records([multiphase_dataset]).records
    read = read_records(loaded, records, PHASES)
    features, answers = read.features, read.answers
    labels = [r.label for r in records]
    reader = fit_phase_reader(features, answers, labels, CLASSES, PHASES, "portal_venous", loaded.info["sha256"])
    reader.save(bundle)
    return bundle, reader, features, answers, labels, read.long_axes_mm


def test_one_reader_per_subset_of_phases_each_reading_only_what_is_there(fitted):
    bundle, reader, features, answers, labels, _ = fitted
    assert len(reader.readers) == 15 and all(len(f) == 4 and sorted(a) == sorted(PHASES) for f, a in zip(features, answers))
    every = reader.reader_for(PHASES)
    assert every.cnn_phases == PHASES and every.coef.shape == (4, 4 * len(FEATURES) + 4 * 4)
    arterial = reader.reader_for(["arterial", "unknown"])
    assert arterial.phases == ("arterial",) and arterial.cnn_phases == ("arterial",)
    p = arterial.probabilities({"arterial": features[0]["arterial"]}, {"arterial": answers[0]["arterial"]})
    assert p.shape == (4,) and abs(p.sum() - 1.0) < 1e-9
    with pytest.raises(ValueError, match="needs the CNN's answer on delayed"):
        every.probabilities(features[0], {k: v for k, v in answers[0].items() if k != "delayed"})
    # Saved and loaded, it answers exactly as fitted; scored, each subset on every lesion.
    again = PhaseReader.load(bundle)
    assert np.allclose(again.reader_for(PHASES).probabilities(features[1], answers[1]), every.probabilities(features[1], answers[1]))
    scores = score_phase_reader(reader, features, answers, labels)
    assert set(scores) == {" + ".join(s) for s in reader.readers} and all(s["n"] == 12 for s in scores.values())
    rows = {row["uncertainty"]: row for row in scores[" + ".join(PHASES)]["by_uncertainty"]}
    assert sum(rows[level]["n"] for level in ("low", "moderate", "high")) == 12
    assert all("by_size" not in s for s in scores.values())


def test_held_out_scores_are_split_at_the_li_rads_size_of_20_mm(fitted):
    """Each band is scored on its own lesions: a band's confusion is that of its lesions alone."""
    _, reader, features, answers, labels, long_axes = fitted
    assert min(long_axes) > 0 and len(long_axes) == len(labels)
    sizes = [12.0] * 5 + [20.0] * 7  # 20 mm itself is in the upper band
    groups = [f"p{i}" for i in range(12)]
    scored = score_phase_reader(reader, features, answers, labels, groups, sizes)
    every = scored[" + ".join(PHASES)]
    assert list(every["by_size"]) == ["under 20 mm", "20 mm and over"]
    assert [every["by_size"][band]["n"] for band in every["by_size"]] == [5, 7]
    small = score_phase_reader(reader, features[:5], answers[:5], labels[:5])[" + ".join(PHASES)]
    assert every["by_size"]["under 20 mm"]["macro_f1"] == small["macro_f1"]
    assert every["by_size"]["under 20 mm"]["accuracy"] == small["accuracy"]
    low, high = every["by_size"]["20 mm and over"]["macro_f1_interval"]
    assert low <= every["by_size"]["20 mm and over"]["macro_f1"] <= high
    only_large = score_phase_reader(reader, features, answers, labels, long_axes_mm=[30.0] * 12)[" + ".join(PHASES)]
    assert list(only_large["by_size"]) == ["20 mm and over"]


def test_a_reader_fitted_to_other_weights_is_refused(fitted, tmp_path):
    import shutil

    bundle, *_ = fitted
    copy = shutil.copytree(bundle, tmp_path / "cnn")
    data = json.loads((copy / PHASE_READER_FILE).read_text())
    (copy / PHASE_READER_FILE).write_text(json.dumps({**data, "cnn_sha256": "0" * 64}))
    with pytest.raises(BundleError, match="fitted to other weights"):
        load_bundle(copy)


def test_the_app_reads_every_phase_of_the_study_with_the_reader(fitted):
    """classify_lesion with a reader: the portal-venous series alone is the CNN's answer as before; with the
    arterial series it is the reader's, with what it measured and a heatmap per phase; an arterial series
    alone is the reader's too, and not outside the training data for its phase."""
    from liverview.annotations.export_dataset import PhaseSource
    from liverview.annotations.transfer import transfer_lesion
    from liverview.imaging.contrast_phase import ContrastPhase, DecidedBy, PhaseDecision
    from liverview.model.classify import classify_lesion, model_id, phases_read_by
    from liverview.synth.simulator import SimulatorConfig, patient_document, patient_volume, simulate_patient

    bundle, *_ = fitted
    loaded = load_bundle(bundle)
    assert loaded.phase_reader is not None and phases_read_by(loaded) == PHASES
    patient = simulate_patient(8, config=SimulatorConfig(phases=PHASES, diameter_mm=(15.0, 30.0)))
    volume = patient_volume(patient)
    lesion = patient_document(patient, volume).lesions[0]
    pv = PhaseDecision(ContrastPhase.PORTAL_VENOUS, DecidedBy.IMAGES, "test")
    alone = classify_lesion(loaded, volume, lesion, phase=pv, heatmap=False)
    assert alone.model_id == model_id(loaded) and alone.phases_read == ["portal_venous"] and alone.enhancement_hu == {}
    arterial_volume = patient_volume(patient, "arterial")
    both = classify_lesion(loaded, volume, lesion, phase=pv, other_phases=[PhaseSource("arterial", arterial_volume)])
    assert both.model_id.endswith("+ phase reader") and both.phases_read == ["arterial", "portal_venous"]
    assert both.heatmap is not None and sorted(both.phase_crops) == sorted(both.phase_cams) == ["arterial", "portal_venous"]
    assert np.array_equal(both.phase_cams["portal_venous"], both.heatmap.cam)  # the outlined series' own map
    measured = both.enhancement_hu
    assert sorted(measured) == ["arterial", "portal_venous"]
    assert measured["arterial"]["liver_hu"] < measured["portal_venous"]["liver_hu"]  # the liver enhances late
    assert both.to_json()["enhancement_hu"] == measured and "enhancement_hu" not in alone.to_json()
    probabilities = np.array([both.probabilities[c] for c in CLASSES])
    assert both.outside_training or both.uncertainty == reader_uncertainty(probabilities)  # as it was scored
    art = PhaseDecision(ContrastPhase.ARTERIAL, DecidedBy.IMAGES, "test")
    carried = transfer_lesion(lesion, volume, arterial_volume).lesion
    early = classify_lesion(loaded, arterial_volume, carried, phase=art)
    assert early.phases_read == ["arterial"] and early.model_id.endswith("+ phase reader") and early.heatmap is not None
    assert not any("arterial" in reason for reason in early.outside_training)


def test_the_stored_reader_is_scored_on_held_out_lesions_only(fitted, multiphase_dataset, tmp_path):
    import shutil

    from liverview.model.phase_reader_cli import main

    bundle, reader, *_ = fitted
    copy = shutil.copytree(bundle, tmp_path / "cnn")
    data = json.loads((copy / PHASE_READER_FILE).read_text())
    (copy / PHASE_READER_FILE).write_text(json.dumps({**data, "training": {"datasets": [str(multiphase_dataset)]}}))
    out = tmp_path / "heldout.json"
    assert main([str(copy), str(multiphase_dataset), "--evaluate", str(out)]) == 1 and not out.exists()

    stored = shutil.copytree(bundle, tmp_path / "stored")
    assert main([str(stored), str(multiphase_dataset), "--evaluate", str(out), "--store"]) == 0
    result = json.loads(out.read_text())
    kept = PhaseReader.load(stored)
    every = " + ".join(PHASES)
    assert kept.metrics[every]["heldout"]["macro_f1"] == result["subsets"][every]["macro_f1"]
    assert kept.training["heldout"]["n_lesions"] == 12 and "Held out" in (stored / "PHASE_READER.md").read_text()
    bands = result["subsets"][every]["by_size"]
    assert kept.metrics[every]["heldout"]["by_size"] == bands and sum(b["n"] for b in bands.values()) == 12
    assert "the LI-RADS size bands" in (stored / "PHASE_READER.md").read_text()
    # The panel quotes the held-out scores where there are some, else the fit's test split.
    from liverview.model.phase_reader import reader_by_uncertainty, reader_macro_f1, reader_subset_scores
    assert reader_macro_f1(kept) == result["subsets"][every]["macro_f1"]
    assert reader_by_uncertainty(kept)[every] == result["subsets"][every]["by_uncertainty"]
    # ... and per subset its macro-F1, for each size band apart.
    quoted = reader_subset_scores(kept)
    assert set(quoted) == set(result["subsets"])
    for name, scores in result["subsets"].items():
        assert quoted[name] == {"macro_f1": scores["macro_f1"], "by_size": {
            band: {"n": part["n"], "macro_f1": part["macro_f1"]} for band, part in scores["by_size"].items()}}
    fit_only = PhaseReader.load(bundle)
    fit_only.metrics = {every: {"test": {"macro_f1": 0.5, "by_uncertainty": [{"uncertainty": "low", "n": 3}]}}}
    assert reader_macro_f1(fit_only) == 0.5
    assert reader_by_uncertainty(fit_only)[every] == [{"uncertainty": "low", "n": 3}]
    assert reader_subset_scores(fit_only) == {every: {"macro_f1": 0.5, "by_size": {}}}
    assert result["n_lesions"] == 12 and result["simulated"] is True and result["cnn_sha256"] == reader.cnn_sha256
    assert reader_scores_simulated(kept) and "further simulated lesions" in (stored / "PHASE_READER.md").read_text()
    assert set(result["subsets"]) == {" + ".join(s) for s in reader.readers}
    for scores in [result["cnn_alone"], *result["subsets"].values()]:
        low, high = scores["macro_f1_interval"]
        assert scores["n"] == 12 and low <= scores["macro_f1"] <= high


def test_scores_on_a_clinics_own_lesions_are_not_called_simulated(fitted, multiphase_dataset, tmp_path):
    """The product owner measures the reader on real lesions exported from liverview: the result, the stored
    scores and the card must not call them simulated."""
    import shutil

    from liverview.model.phase_reader_cli import main

    bundle, *_ = fitted
    real = shutil.copytree(multiphase_dataset, tmp_path / "clinic")
    lines = []
    for line in (real / "lesions.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("synth", None)
        lines.append(json.dumps({**record, "reader": "dr-a", "label_source": "reader"}))
    (real / "lesions.jsonl").write_text("\n".join(lines) + "\n")
    stored = shutil.copytree(bundle, tmp_path / "stored")
    assert reader_scores_simulated(PhaseReader.load(stored))  # fitted on simulated lesions
    out = tmp_path / "clinic.json"
    assert main([str(stored), str(real), "--evaluate", str(out), "--store"]) == 0
    assert json.loads(out.read_text())["simulated"] is False
    kept = PhaseReader.load(stored)
    assert kept.training["heldout"]["simulated"] is False and not reader_scores_simulated(kept)
    card = (stored / "PHASE_READER.md").read_text()
    assert "further simulated lesions" not in card and "not all of them simulated" in card
    assert "Measured on simulated lesions only" not in card



@pytest.fixture(scope="module")
def structured(multiphase_dataset, tmp_path_factory):
    """A tiny CNN bundle (reading the key slice alone) and a structure-network reader trained beside it."""
    from liverview.model.phase_reader_cli import main

    bundle = _tiny_cnn_bundle(tmp_path_factory.mktemp("structure"), 5)
    assert main([str(bundle), str(multiphase_dataset), "--kind", "structure", "--epochs", "2"]) == 0
    return bundle


def test_a_structure_reader_answers_every_subset_from_its_crops_and_loads_only_as_saved(structured, multiphase_dataset,
                                                                                       tmp_path):
    import shutil

    from liverview.model.structure_reader import LesionInputs

    loaded = load_bundle(structured)
    reader = loaded.phase_reader
    assert reader is not None and reader.network is not None and reader.readers == {}
    assert reader.kind == "structure network" and len(reader.subsets()) == 15
    assert reader.subset_for(["arterial", "unknown"]) == ("arterial",) and reader.reader_for(["arterial"]) is None
    records = load_records([multiphase_dataset]).records
    read = read_records(loaded, records, PHASES)
    every = reader.probabilities_of(PHASES, read.features, read.answers, read.inputs)
    assert every.shape == (12, 4) and np.allclose(every.sum(axis=1), 1.0)
    arterial = reader.probabilities_of(("arterial",), read.features, read.answers, read.inputs)
    assert not np.allclose(arterial, every)  # the subset is what it reads
    only_arterial = [LesionInputs(x.crops, x.numbers, x.present & np.array([p == "arterial" for p in PHASES]),
                                  x.long_axis_mm) for x in read.inputs]
    assert np.allclose(reader.probabilities_of(("arterial",), read.features, read.answers, only_arterial), arterial)
    with pytest.raises(ValueError, match="crop"):
        reader.probabilities_of(PHASES, read.features, read.answers)
    scores = score_phase_reader(reader, read.features, read.answers, [r.label for r in records], inputs=read.inputs)
    assert len(scores) == 15 and all(s["n"] == 12 for s in scores.values())
    saved = json.loads((structured / PHASE_READER_FILE).read_text())
    assert saved["format_version"] == 2 and saved["network"]["crop_version"] == 1
    assert [p.name for p in structured.glob("phase_reader-*.pt")] == [saved["network"]["file"]]
    assert saved["training"]["kind"] == "structure network" and saved["training"]["epochs"] == 2
    assert "structure network" in (structured / "PHASE_READER.md").read_text()
    again = PhaseReader.load(structured)
    assert np.allclose(again.probabilities_of(PHASES, read.features, read.answers, read.inputs), every)

    tampered = shutil.copytree(structured, tmp_path / "tampered")
    weights = tampered / saved["network"]["file"]
    state = torch.load(weights, weights_only=True)
    state["head.3.bias"] = state["head.3.bias"] + 1.0
    torch.save(state, weights)
    with pytest.raises(BundleError, match="sha256 differs"):
        load_bundle(tampered)
    other_crop = shutil.copytree(structured, tmp_path / "other-crop")
    data = json.loads((other_crop / PHASE_READER_FILE).read_text())
    data["network"]["crop_px"] = 48
    (other_crop / PHASE_READER_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="this liverview crops"):
        load_bundle(other_crop)
    data["network"]["crop_px"] = saved["network"]["crop_px"]
    data["network"]["crop_version"] = 2  # a crop placed otherwise, by a later liverview
    (other_crop / PHASE_READER_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="train it again"):
        load_bundle(other_crop)
    del data["network"]["crop_version"]  # saved without one: version 1
    (other_crop / PHASE_READER_FILE).write_text(json.dumps(data))
    assert load_bundle(other_crop).phase_reader.network is not None

    from liverview.model.phase_reader_cli import main

    scored = shutil.copytree(structured, tmp_path / "scored")
    fitted_on = json.loads((scored / PHASE_READER_FILE).read_text())  # scored as if on other lesions
    (scored / PHASE_READER_FILE).write_text(json.dumps({**fitted_on, "training": {"datasets": []}}))
    assert main([str(scored), str(multiphase_dataset), "--evaluate", str(tmp_path / "held.json"), "--store"]) == 0
    kept = PhaseReader.load(scored)
    assert kept.metrics[" + ".join(PHASES)]["heldout"]["n"] == 12 and kept.network is not None
    assert [p.name for p in scored.glob("phase_reader-*.pt")] == [saved["network"]["file"]]  # the same weights


def _portal_venous_lesion_with_arterial():
    """A simulated patient's portal-venous series, its first lesion, that series' phase, and the arterial
    series as another phase of the study."""
    from liverview.annotations.export_dataset import PhaseSource
    from liverview.imaging.contrast_phase import ContrastPhase, DecidedBy, PhaseDecision
    from liverview.synth.simulator import SimulatorConfig, patient_document, patient_volume, simulate_patient

    patient = simulate_patient(9, config=SimulatorConfig(phases=PHASES, diameter_mm=(15.0, 30.0)))
    volume = patient_volume(patient)
    lesion = patient_document(patient, volume).lesions[0]
    pv = PhaseDecision(ContrastPhase.PORTAL_VENOUS, DecidedBy.IMAGES, "test")
    return volume, lesion, pv, [PhaseSource("arterial", patient_volume(patient, "arterial"))]


def test_the_app_answers_with_the_structure_network_on_three_slices_whatever_the_cnn_reads(structured):
    """The tiny CNN reads the key slice alone; the network was trained on the key slice and its neighbours,
    and the app must give it those, carried from each phase's series as the export carries them."""
    from liverview.model.classify import classify_lesion, key_slice, lesion_slice_masks, phase_slabs
    from liverview.model.structure_reader import lesion_inputs
    from liverview.model.transforms import select_slab

    loaded = load_bundle(structured)
    assert loaded.preprocess_config.neighbour_slices == 0
    reader = loaded.phase_reader
    volume, lesion, pv, others = _portal_venous_lesion_with_arterial()
    answer = classify_lesion(loaded, volume, lesion, phase=pv, other_phases=others, heatmap=False)
    assert answer.model_id.endswith("+ phase reader") and answer.phases_read == ["arterial", "portal_venous"]
    masks = lesion_slice_masks(volume, lesion)
    z = key_slice(masks)
    spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
    slabs = phase_slabs(loaded, volume, lesion, z, masks[z], "portal_venous", others, PHASES, neighbour_slices=1)
    assert slabs["arterial"].shape[0] == 3 and np.array_equal(slabs["portal_venous"], select_slab(volume.array, z, 1))
    subset = ("arterial", "portal_venous")
    expected = reader.probabilities_of(subset, [{}], [{}], [lesion_inputs(slabs, masks[z], spacing, reader.phases)])[0]
    assert np.allclose([answer.probabilities[c] for c in CLASSES], expected, atol=1e-6)
    flat = {p: s[1] for p, s in slabs.items()}  # the key slice alone, as the CNN reads it
    wrong = reader.probabilities_of(subset, [{}], [{}], [lesion_inputs(flat, masks[z], spacing, reader.phases)])[0]
    assert not np.allclose(wrong, expected, atol=1e-6)
    # Its answer is explained by its own heatmaps: one per phase read, over the crop it read, the
    # portal-venous one laid on the outlined series where the crop lay.
    from liverview.model.structure_reader import CROP_PX, crop_square, gradcam_phases

    explained = classify_lesion(loaded, volume, lesion, phase=pv, other_phases=others)
    top = CLASSES.index(explained.predicted)
    own = gradcam_phases(reader.network, lesion_inputs(slabs, masks[z], spacing, reader.phases), reader.phases,
                         subset, top)
    assert sorted(explained.phase_cams) == sorted(explained.phase_crops) == list(subset)
    for phase_read in subset:
        assert np.allclose(explained.phase_cams[phase_read], own[phase_read], atol=1e-5)
        assert explained.phase_crops[phase_read].shape == (CROP_PX, CROP_PX)
    assert max(float(m.max()) for m in own.values()) == pytest.approx(1.0)
    heat = explained.heatmap
    assert np.array_equal(heat.cam, explained.phase_cams["portal_venous"]) and heat.explained == explained.predicted
    assert (heat.center_yx[0], heat.center_yx[1], heat.side_mm) == crop_square(masks[z], spacing)
    assert explained.heatmap_inside == pytest.approx(heat.share_inside(masks[z]))


def test_a_structure_reader_trained_again_with_the_same_seed_is_the_same_bit_for_bit(structured, multiphase_dataset,
                                                                                  tmp_path):
    """Training again on the same lesions with the same seed, on this machine, gives the same weights (the
    file is named by their hash, so the same name is the same bytes); what `make phase-reader` relies on."""
    import shutil

    from liverview.model.phase_reader_cli import main

    again = shutil.copytree(structured, tmp_path / "again")
    for old in again.glob("phase_reader*"):
        old.unlink()
    assert main([str(again), str(multiphase_dataset), "--kind", "structure", "--epochs", "2"]) == 0
    first = json.loads((structured / PHASE_READER_FILE).read_text())["network"]
    second = json.loads((again / PHASE_READER_FILE).read_text())["network"]
    assert second["sha256"] == first["sha256"] and second["file"] == first["file"]
    other_seed = shutil.copytree(structured, tmp_path / "other-seed")
    assert main([str(other_seed), str(multiphase_dataset), "--epochs", "2", "--seed", "2"]) == 0
    assert json.loads((other_seed / PHASE_READER_FILE).read_text())["network"]["sha256"] != first["sha256"]


def test_a_network_trained_on_more_slices_is_given_them_by_the_app(multiphase_dataset, tmp_path):
    """`--neighbour-slices 2`: the network records that it reads five slices, loads so, and the app carries
    five slices of each phase to it (a slab of three would be refused)."""
    from liverview.model.classify import classify_lesion, key_slice, lesion_slice_masks, phase_slabs
    from liverview.model.phase_reader_cli import main
    from liverview.model.structure_reader import lesion_inputs

    bundle = _tiny_cnn_bundle(tmp_path, 5)
    assert main([str(bundle), str(multiphase_dataset), "--epochs", "1", "--neighbour-slices", "2"]) == 0
    assert json.loads((bundle / PHASE_READER_FILE).read_text())["network"]["neighbour_slices"] == 2
    assert "the key slice and 2 neighbours on each side" in (bundle / PHASE_READER_CARD).read_text()
    loaded = load_bundle(bundle)
    reader = loaded.phase_reader
    assert reader.network.neighbour_slices == 2 and reader.training["neighbour_slices"] == 2
    volume, lesion, pv, others = _portal_venous_lesion_with_arterial()
    answer = classify_lesion(loaded, volume, lesion, phase=pv, other_phases=others, heatmap=False)
    masks = lesion_slice_masks(volume, lesion)
    z = key_slice(masks)
    spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
    slabs = phase_slabs(loaded, volume, lesion, z, masks[z], "portal_venous", others, PHASES, neighbour_slices=2)
    assert {p: s.shape[0] for p, s in slabs.items()} == {"portal_venous": 5, "arterial": 5}
    subset = ("arterial", "portal_venous")
    expected = reader.probabilities_of(subset, [{}], [{}], [lesion_inputs(slabs, masks[z], spacing, reader.phases,
                                                                          neighbour_slices=2)])[0]
    assert answer.phases_read == list(subset)
    assert np.allclose([answer.probabilities[c] for c in CLASSES], expected, atol=1e-6)
    # More slices than the dataset kept around each lesion would train on repeated end slices; a logistic
    # reader (the CNN answering every phase) reads none of them and is not refused.
    records = load_records([multiphase_dataset]).records
    with pytest.raises(ValueError, match="keeps 2 slice\\(s\\) around each lesion but the network reads 3"):
        read_records(loaded, records, PHASES, cnn_phases=("portal_venous",), neighbour_slices=3)
    assert len(read_records(loaded, records, PHASES, neighbour_slices=3).features) == len(records)


@pytest.mark.parametrize(("argv", "message"), [
    (["--kind", "logistic", "--epochs", "5"], "--epochs is a structure network's; --kind logistic has none"),
    (["--kind", "logistic", "--neighbour-slices", "2"], "--neighbour-slices is a structure network's"),
    (["--epochs", "0"], "--epochs must be 1 or more"),
    (["--neighbour-slices", "-1"], "--neighbour-slices must be 0 or more"),
    (["--evaluate", "out.json", "--neighbour-slices", "2"], "leave out --neighbour-slices"),
    (["--store"], "--store keeps the scores of --evaluate"),
    (["--evaluate", "out.json", "--epochs", "5"], "leave out --epochs"),
    (["--evaluate", "out.json", "--kind", "logistic", "--seed", "5"], "leave out --seed, --kind"),
    (["--evaluate", "out.json", "--train-only", "more"], "leave out --train-only"),
])
def test_options_that_would_be_ignored_are_usage_errors(argv, message, tmp_path, capsys):
    from liverview.model.phase_reader_cli import main

    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "bundle"), str(tmp_path / "data"), *argv])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
