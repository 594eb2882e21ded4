"""The lesion simulator: reproducible patients, a balanced dataset in the app's export format,
class-typical attenuation (docs/synth.md), and lesions inserted into a real CT series."""

from __future__ import annotations

from collections import Counter

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from liverview.annotations.document import AnnotationDocument, Lesion, Roi
from liverview.annotations.dataset_format import DATASET_FORMAT, DATASET_VERSION, read_lesion_lines
from liverview.annotations.labels import LesionClass
from liverview.imaging.measure import polygon_mask
from liverview.io import load_series
from liverview.synth import simulator as sim
from liverview.synth import synth_cli
from liverview.synth.lesions import Enhancement, LesionSpec, sample_varied_lesion_spec
from liverview.progress import Cancelled

CLASSES = [c.value for c in LesionClass]
TEST_KEY = b"liverview simulator test key"
#: A hand-placed region inside the right liver lobe of crlm-ct-1004 (checked on a rendered PNG):
#: (column, row) vertices, drawn on slices 21-27.
LIVER_POLYGON = [(118, 196), (160, 182), (203, 190), (212, 225), (195, 258), (160, 274), (125, 268), (113, 236)]
LIVER_SLICES = range(21, 28)


def _spec_from_synth(synth: dict) -> LesionSpec:
    fields = {f for f in LesionSpec.__dataclass_fields__} | {"class"}
    return LesionSpec.from_dict({k: v for k, v in synth.items() if k in fields})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """6 lesions per class from phantom patients (one process)."""
    out = tmp_path_factory.mktemp("sim") / "dataset"
    summary = sim.write_simulated_dataset(out, 6, seed=11)
    assert summary.n_lesions == 24 and summary.lesions_per_second > 0
    return out


def test_same_seed_gives_identical_patient_and_other_seed_differs() -> None:
    classes = [LesionClass.HCC, LesionClass.BENIGN_CYST, LesionClass.METASTASIS]
    a = sim.simulate_patient(5, classes)
    b = sim.simulate_patient(5, classes)
    c = sim.simulate_patient(6, classes)
    assert a.hu.dtype == np.int16 and np.array_equal(a.hu, b.hu)
    assert [x.spec for x in a.lesions] == [x.spec for x in b.lesions]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.lesions, b.lesions, strict=True))
    assert a.acquisition == b.acquisition and a.series_uid == b.series_uid and a.patient_id == b.patient_id
    assert a.hu.shape != c.hu.shape or not np.array_equal(a.hu, c.hu)
    assert [x.lesion_class for x in a.lesions] == classes
    union = np.zeros(a.hu.shape, dtype=int)
    for lesion in a.lesions:
        assert lesion.mask.any() and not (lesion.mask & ~a.liver_mask).any(), "lesion outside the liver"
        union += lesion.mask
    assert union.max() == 1, "lesions overlap"


def test_dataset_is_balanced_and_in_the_export_format(dataset: Path) -> None:
    manifest = json.loads((dataset / "dataset.json").read_text())
    assert manifest["format"] == DATASET_FORMAT and manifest["version"] == DATASET_VERSION == 2
    assert {c["id"]: c["count"] for c in manifest["classes"]} == dict.fromkeys(CLASSES, 6)
    assert manifest["n_lesions"] == 24 and manifest["simulator_runs"][0]["complete"] is True
    records = read_lesion_lines(dataset / "lesions.jsonl")
    assert len(records) == 24 and len({r["lesion_uid"] for r in records}) == 24
    assert sorted(p.name for p in (dataset / "patches").iterdir()) == sorted(f"{r['lesion_uid']}.npz" for r in records)
    assert not [p for p in dataset.iterdir() if p.name.startswith(".")], "staging or lock files left behind"
    per_patient: dict[str, set[str]] = {}
    for record in records:
        assert record["reader"] == "simulator" and record["label_source"] == "simulator"
        assert record["confidence"] == "certain" and record["modality"] == "CT" and record["is_hu"] is True
        assert record["patient"].startswith("LV-") and record["patient_name"] is None and record["pseudonymized"]
        per_patient.setdefault(record["patient"], set()).add(record["series_uid"])
        with np.load(dataset / record["file"]) as npz:
            hu, mask, spacing, bbox = npz["hu"], npz["mask"], npz["spacing_mm"], npz["bbox_zyx"]
        assert hu.dtype == np.int16 and mask.dtype == bool and hu.shape == mask.shape
        assert mask.any() and int(mask.sum()) == record["n_voxels"], "the whole lesion lies in its patch"
        assert bbox.tolist() == record["bbox_zyx"] and np.allclose(spacing, record["spacing_mm"])
        assert [b - a for a, b in bbox.tolist()] == list(hu.shape)
        (z0, z1), (y0, y1), (x0, x1) = record["lesion_bbox_zyx"]
        assert bbox[0][0] <= z0 < z1 <= bbox[0][1] and bbox[1][0] <= y0 and y1 <= bbox[1][1]
        synth = record["synth"]
        assert synth["class"] == record["label"] and synth["generator"] == "liverview-synth"
        assert synth["patient"]["source"] == "phantom" and record["label"] in synth["patient"]["classes"]
        assert 2 <= len(synth["patient"]["classes"]) <= 6
        spec = _spec_from_synth(synth)
        assert 4.9 <= spec.diameter_mm <= 80.1
    assert all(len(series) == 1 for series in per_patient.values()), "one series per simulated patient"
    assert 4 <= len(per_patient) <= 12


def test_dataset_loads_with_the_training_reader(dataset: Path) -> None:
    from liverview.model.data import load_key_slice, load_records

    loaded = load_records([dataset])
    assert not loaded.skipped and loaded.class_counts(CLASSES) == dict.fromkeys(CLASSES, 6)
    for record in loaded.records:
        key = load_key_slice(record)
        assert key.mask.any() and key.hu.shape == key.mask.shape


def test_same_seed_gives_identical_dataset_whatever_the_workers(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    sim.write_simulated_dataset(again, 6, seed=11, workers=2)
    first = {r["lesion_uid"]: r for r in read_lesion_lines(dataset / "lesions.jsonl")}
    second = {r["lesion_uid"]: r for r in read_lesion_lines(again / "lesions.jsonl")}
    assert first.keys() == second.keys()
    for uid, record in first.items():
        other = second[uid]
        assert {k: v for k, v in record.items() if k != "exported"} == {
            k: v for k, v in other.items() if k != "exported"}
        with np.load(dataset / record["file"]) as a, np.load(again / other["file"]) as b:
            assert np.array_equal(a["hu"], b["hu"]) and np.array_equal(a["mask"], b["mask"])


def test_a_record_regenerates_its_patch(dataset: Path) -> None:
    record = read_lesion_lines(dataset / "lesions.jsonl")[0]
    params = record["synth"]["patient"]
    patient = sim.simulate_patient(params["seed"], [LesionClass(c) for c in params["classes"]])
    lesion = next(x for x in patient.lesions if x.lesion_id == record["lesion_id"])
    assert lesion.spec == _spec_from_synth(record["synth"])
    region = tuple(slice(a, b) for a, b in record["bbox_zyx"])
    with np.load(dataset / record["file"]) as npz:
        assert np.array_equal(npz["hu"], patient.hu[region]) and np.array_equal(npz["mask"], lesion.mask[region])


def test_sizes_span_the_requested_range(dataset: Path) -> None:
    drawn = np.array(sim.draw_diameters(np.random.default_rng(0), 4000))
    assert drawn.min() >= 5.0 and drawn.max() <= 80.0
    assert drawn.min() < 5.5 and drawn.max() > 75.0 and 15.0 < float(np.median(drawn)) < 25.0
    # Log-uniform: each doubling of size is about as frequent.
    counts = np.histogram(np.log2(drawn / 5.0), bins=4, range=(0, 4))[0]
    assert counts.min() > 0.8 * counts.max()
    # Large lesions are rendered at (nearly) their size, not shrunk to whatever fits.
    big = sim.simulate_patient(3, [LesionClass.HEMANGIOMA], sim.SimulatorConfig(diameter_mm=(70.0, 80.0)))
    assert big.lesions[0].spec.diameter_mm >= 70.0 * 0.8
    sizes = [_spec_from_synth(r["synth"]).diameter_mm for r in read_lesion_lines(dataset / "lesions.jsonl")]
    assert min(sizes) < 10.0 and max(sizes) > 30.0


def _key_slice_stats(patient: sim.SimulatedPatient, lesion: sim.SimulatedLesion) -> dict[str, float]:
    """Statistics on the slice with the largest outline, away from the partial-volume edge."""
    k = int(np.argmax(lesion.mask.sum(axis=(1, 2))))
    image = patient.hu[k].astype(np.float32)
    mask = lesion.mask[k].astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(mask, kernel).astype(bool)
    deep = cv2.erode(mask, kernel, iterations=3).astype(bool)
    rim = mask.astype(bool) & ~cv2.erode(mask, kernel, iterations=2).astype(bool)
    smooth = cv2.blur(image, (3, 3))
    return {"mean": float(image[inner].mean()), "median": float(np.median(image[inner])),
            "deep_mean": float(image[deep].mean()), "rim": float(image[rim].mean()),
            "centre": float(np.median(image[deep])), "brightest": float(smooth[inner].max())}


def test_attenuation_per_class_matches_docs() -> None:
    """docs/synth.md, "Simulator: measured": the documented ranges hold on the rendered images."""
    config = sim.SimulatorConfig(diameter_mm=(15.0, 45.0))
    order = list(LesionClass)
    seen = dict.fromkeys(order, 0)
    nodular_peaks: list[float] = []
    for n in range(4):
        patient = sim.simulate_patient(40 + n, order[n:] + order[:n], config)
        liver, blood = patient.acquisition["liver_hu"], patient.acquisition["blood_pool_hu"]
        for lesion in patient.lesions:
            s = _key_slice_stats(patient, lesion)
            spec = lesion.spec
            seen[spec.lesion_class] += 1
            if spec.lesion_class is LesionClass.BENIGN_CYST:
                assert -5.0 <= s["deep_mean"] <= 25.0, s  # water: 0-20 HU plus noise
            elif spec.lesion_class is LesionClass.HEMANGIOMA and spec.enhancing_hu is None:
                assert s["median"] >= liver + 15.0 and s["median"] >= blood - 50.0, s  # flash-filling
            elif spec.lesion_class is LesionClass.HEMANGIOMA:
                assert s["median"] <= liver - 15.0, s  # the unfilled bulk is hypoattenuating
                # Nodules stand out of the bulk and stay below the blood pool; whether they also exceed the
                # liver on the key slice depends on their size against the slice (docs: 5th percentile +5 HU).
                assert s["brightest"] >= s["median"] + 25.0 and s["brightest"] <= blood + 25.0, s
                nodular_peaks.append(s["brightest"] - liver)
            elif spec.lesion_class is LesionClass.HCC:
                assert s["median"] <= liver + 2.0, s  # washout
                if spec.enhancing_hu is not None:
                    assert s["rim"] >= s["median"] + 5.0, s  # enhancing capsule
            else:
                assert s["median"] <= liver - 15.0, s  # hypoattenuating
                if spec.enhancing_hu is not None and spec.necrosis_fraction == 0.0:
                    assert s["rim"] >= s["centre"] + 5.0, s  # rim ("target")
    assert all(count == 4 for count in seen.values())
    assert nodular_peaks and float(np.median(nodular_peaks)) >= 5.0, nodular_peaks  # nodules above the liver


def test_varied_parameters_stay_in_their_documented_ranges() -> None:
    """The parameter table of docs/synth.md, over many draws."""
    enhancement = Enhancement(liver_hu=110.0, blood_pool_hu=180.0)
    for seed in range(300):
        for lesion_class in LesionClass:
            d = float(np.exp(np.random.default_rng(seed).uniform(np.log(5.0), np.log(80.0))))
            s = sample_varied_lesion_spec(lesion_class, (0.0, 0.0, 0.0), d, seed, enhancement, (2.5, 0.8, 0.8))
            assert abs(max(s.radii_mm_zyx) * 2.0 - d) < 1e-9 and min(s.radii_mm_zyx) >= 0.75 * d / 2 - 1e-9
            if lesion_class is LesionClass.BENIGN_CYST:
                assert 0.0 <= s.core_hu <= 18.0 and s.enhancing_hu is None and s.margin_mm <= 0.5
            elif lesion_class is LesionClass.HEMANGIOMA:
                if s.enhancing_hu is None:
                    assert d < 20.0 and 155.0 <= s.core_hu <= 175.0
                else:
                    assert 150.0 <= s.enhancing_hu <= 180.0 and 35.0 <= s.core_hu <= 75.0
            elif lesion_class is LesionClass.HCC:
                assert 60.0 <= s.core_hu <= 95.0
                assert s.enhancing_hu is None or 110.0 <= s.enhancing_hu <= 145.0
            else:
                assert 35.0 <= s.core_hu <= 80.0 and s.margin_mm >= 0.8
                assert s.enhancing_hu is None or s.core_hu + 15.0 <= s.enhancing_hu <= 125.0


def test_variant_names_follow_the_drawn_parameters_and_their_frequencies() -> None:
    enhancement = Enhancement(liver_hu=110.0, blood_pool_hu=180.0)
    counts: dict[str, int] = {}
    for seed in range(400):
        for lesion_class in (LesionClass.HEMANGIOMA, LesionClass.HCC, LesionClass.METASTASIS):
            spec = sample_varied_lesion_spec(lesion_class, (0.0, 0.0, 0.0), 10.0, seed, enhancement)
            record = {**spec.to_dict(), "generator": "liverview-synth", "patient": {"liver_hu": 110.0}}
            assert LesionSpec.from_record(record) == spec
            name = f"{lesion_class.value}: {spec.variant}"
            counts[name] = counts.get(name, 0) + 1
            if lesion_class is LesionClass.HEMANGIOMA:
                assert (spec.variant == "flash-filling") == (spec.enhancing_hu is None)
            elif lesion_class is LesionClass.HCC:
                assert spec.variant.startswith("capsule") == (spec.enhancing_hu is not None)
                assert spec.variant.endswith(", mosaic") == (spec.nodule_count > 0)
            else:
                assert spec.variant == ("rim" if spec.enhancing_hu is not None else "no rim") + ", no distinct centre"
    # 10 mm: flash filling 60 % of hemangiomas, no mosaic 60 % of HCC, capsule 55 %, rim 84 % of metastases.
    assert 0.5 < counts["hemangioma: flash-filling"] / 400 < 0.7
    hcc_plain = sum(n for k, n in counts.items() if k.startswith("hcc:") and k.endswith("no mosaic"))
    assert 0.5 < hcc_plain / 400 < 0.7
    assert 0.45 < sum(n for k, n in counts.items() if k.startswith("hcc: capsule")) / 400 < 0.65
    assert 0.78 < counts["metastasis: rim, no distinct centre"] / 400 < 0.9
    assert LesionSpec.from_record(sample_varied_lesion_spec(LesionClass.BENIGN_CYST, (0.0, 0.0, 0.0), 30.0, 1,
                                                            enhancement).to_dict()).variant == "cyst"


@pytest.fixture(scope="module")
def real_ct(crlm_dir):
    volume = load_series(crlm_dir)
    liver = np.zeros(volume.shape, dtype=bool)
    for z in LIVER_SLICES:
        liver[z] = polygon_mask(LIVER_POLYGON, volume.shape[1:])
    return volume, liver


def test_lesions_on_a_real_series_stay_in_the_liver_mask(real_ct) -> None:
    volume, liver = real_ct
    patient = sim.simulate_on_volume(volume, liver, 4, seed=3, lesion_classes=list(LesionClass))
    again = sim.simulate_on_volume(volume, liver, 4, seed=3, lesion_classes=list(LesionClass))
    assert np.array_equal(patient.hu, again.hu)
    assert [x.lesion_class for x in patient.lesions] == list(LesionClass)
    near = np.zeros(volume.shape, dtype=bool)
    for lesion in patient.lesions:
        assert lesion.mask.any() and not (lesion.mask & ~liver).any(), "lesion outside the liver mask"
        near |= lesion.mask
        k = int(np.argmax(lesion.mask.sum(axis=(1, 2))))
        inside = patient.hu[k][lesion.mask[k]].astype(float)
        if lesion.lesion_class is LesionClass.BENIGN_CYST and lesion.spec.diameter_mm >= 2 * volume.spacing_mm[0]:
            assert inside.mean() < 40.0  # water, with the series' own noise and partial volume
    # Nothing changes away from the lesions (the painted difference is blurred by ~1 mm only).
    kernel = np.ones((15, 15), np.uint8)
    grown = np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in near])
    grown[1:] |= grown[:-1].copy()
    grown[:-1] |= grown[1:].copy()
    assert np.array_equal(patient.hu[~grown], volume.array[~grown])
    assert not np.array_equal(patient.hu, volume.array)
    # The real image keeps its noise inside the lesions: a cyst is not a flat disc.
    cyst = patient.lesions[0]
    k = int(np.argmax(cyst.mask.sum(axis=(1, 2))))
    inner = cv2.erode(cyst.mask[k].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert patient.hu[k][inner].std() > 0.5 * patient.acquisition["measured_noise_sigma_hu"]


def test_real_series_dataset_keeps_one_pseudonymous_patient(real_ct, tmp_path: Path) -> None:
    volume, liver = real_ct
    out = tmp_path / "real"
    summary = sim.write_simulated_dataset(out, 2, seed=4, ct_volume=volume, liver_mask=liver, pseudonym_key=TEST_KEY)
    assert summary.per_class == dict.fromkeys(CLASSES, 2)
    records = read_lesion_lines(out / "lesions.jsonl")
    text = (out / "lesions.jsonl").read_text() + (out / "dataset.json").read_text()
    assert volume.info.identity.patient_id not in text and volume.series_uid not in text and volume.study_uid not in text
    assert len({r["patient"] for r in records}) == 1 and records[0]["patient"] == sim.SimulatorPseudonymizer(
        TEST_KEY).patient_pseudonym(volume.info.identity.patient_id)
    assert len({r["series_uid"] for r in records}) == summary.n_patients >= 2
    for record in records:
        assert record["source_shape"] == list(volume.shape) and record["reader"] == "simulator"
        z0, z1 = record["lesion_bbox_zyx"][0]
        assert LIVER_SLICES.start <= z0 and z1 <= LIVER_SLICES.stop
        assert record["synth"]["patient"]["source"] == "ct" and "id" not in record["synth"]["patient"]


def test_liver_mask_from_an_annotation_file(real_ct, tmp_path: Path) -> None:
    volume, liver = real_ct
    document = AnnotationDocument(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid)
    document.lesions.append(Lesion(reader="me", label=None, note="Liver",
                                   rois=[Roi(z, LIVER_POLYGON) for z in LIVER_SLICES]))
    document.lesions.append(Lesion(reader="me", label="metastasis", rois=[Roi(22, [(10, 10), (20, 10), (20, 20)])]))
    path = tmp_path / "liver.json"
    path.write_text(json.dumps(document.to_dict()))
    assert np.array_equal(sim.load_liver_mask(path, volume), liver)
    np.save(tmp_path / "liver.npy", liver)
    assert np.array_equal(sim.load_liver_mask(tmp_path / "liver.npy", volume), liver)
    with pytest.raises(ValueError, match="no outline labelled"):
        sim.load_liver_mask(path, volume, labels=("spleen",))


def test_cancel_leaves_a_consistent_dataset(tmp_path: Path) -> None:
    out = tmp_path / "cancelled"
    reports: list[str] = []
    with pytest.raises(Cancelled):
        sim.write_simulated_dataset(out, 4, seed=2, progress=lambda f, m: reports.append(m),
                                    should_stop=lambda: any(m.startswith("Patient 1/") for m in reports))
    records = read_lesion_lines(out / "lesions.jsonl")
    manifest = json.loads((out / "dataset.json").read_text())
    assert 0 < len(records) < 16 and manifest["n_lesions"] == len(records)
    assert manifest["simulator_runs"][0]["complete"] is False
    assert len(list((out / "patches").iterdir())) == len(records)


def test_cli_writes_a_dataset_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert synth_cli.main([str(out), "--lesions-per-class", "1", "--seed", "7", "--workers", "1",
                           "--max-diameter", "30"]) == 0
    captured = capsys.readouterr()
    assert "Wrote 4 lesions" in captured.out and "%]" in captured.err
    assert len(read_lesion_lines(out / "lesions.jsonl")) == 4
    # Another seed adds to the dataset (as the app's export does); the same seed again replaces.
    for seed in ("8", "8"):
        assert synth_cli.main([str(out), "-n", "1", "--seed", seed, "--workers", "1", "--max-diameter", "30",
                               "-q"]) == 0
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["n_lesions"] == 8 and [r["seed"] for r in manifest["simulator_runs"]] == [7, 8]
    assert len(read_lesion_lines(out / "lesions.jsonl")) == 8 == len(list((out / "patches").iterdir()))
    assert synth_cli.main([str(tmp_path / "x"), "-n", "1", "--ct-series", str(tmp_path)]) == 1
    assert "go together" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "dataset.json").write_text(json.dumps({"format": "something.else"}))
    assert synth_cli.main([str(foreign), "-n", "1", "--workers", "1", "-q"]) == 1
    assert "not a liverview dataset manifest" in capsys.readouterr().err


def test_cli_noise_option_renders_the_same_lesions_at_another_noise(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    lines = {}
    for sd in ("4", "24"):
        out = tmp_path / f"noise{sd}"
        assert synth_cli.main([str(out), "-n", "1", "--seed", "7", "--workers", "1", "--max-diameter", "30",
                               "--noise-sd", sd, sd, "-q"]) == 0
        lines[sd] = {r["lesion_uid"]: r for r in read_lesion_lines(out / "lesions.jsonl")}
    quiet, noisy = lines["4"], lines["24"]
    assert set(quiet) == set(noisy) and len(quiet) == 4
    for uid, record in quiet.items():
        other = noisy[uid]
        assert {k: v for k, v in record["synth"].items() if k != "patient"} == \
            {k: v for k, v in other["synth"].items() if k != "patient"}
        assert (record["synth"]["patient"]["noise_sigma_hu"], other["synth"]["patient"]["noise_sigma_hu"]) == (4, 24)
        # Outside the lesion the patch is liver (and some neighbours): its spread follows the noise.
        spread = []
        for folder in (tmp_path / "noise4", tmp_path / "noise24"):
            with np.load(folder / record["file"]) as patch:
                hu, mask = patch["hu"].astype(float), patch["mask"]
            spread.append(np.median(np.abs(np.diff(hu[~mask].reshape(-1)[:4000]))))
        assert spread[1] > 2 * spread[0]
    assert synth_cli.main([str(tmp_path / "x"), "-n", "1", "--noise-sd", "20", "7", "-q"]) == 1
    assert "noise SD range" in capsys.readouterr().err


def test_every_planned_patient_gets_two_to_six_lesions() -> None:
    for lesions_per_class in (1, 2, 3, 5, 6, 25):
        for seed in range(12):
            plans = sim.plan_dataset(lesions_per_class, seed)
            sizes = [len(plan.classes) for plan in plans]
            assert all(2 <= n <= 6 for n in sizes), (lesions_per_class, seed, sizes)
            assert Counter(c for plan in plans for c in plan.classes) == dict.fromkeys(CLASSES, lesions_per_class)
