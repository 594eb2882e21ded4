"""The synthetic demo study: valid DICOM, matching ground truth, class-typical attenuation."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from liverview.progress import Cancelled
from liverview.synth import (
    LesionClass,
    LesionSpec,
    PatientInfo,
    build_demo_volume,
    insert_lesion,
    sample_lesion_spec,
    write_demo_study,
)
from liverview.synth import demo as demo_module

# Fine enough in-plane that lesion interiors survive a 1-pixel erosion; fast enough (~1 s).
TEST_SHAPE = (60, 256, 256)
TINY_SHAPE = (24, 128, 128)
SEED = 20261128
GROUND_TRUTH_KEYS = {
    "format",
    "version",
    "study_instance_uid",
    "series_instance_uid",
    "frame_of_reference_uid",
    "source",
    "created",
    "lesions",
}
LESION_KEYS = {"id", "label", "reader", "confidence", "note", "rois", "synth"}
ROI_KEYS = {"slice_index", "sop_instance_uid", "kind", "points_xy"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> demo_module.DemoStudy:
    return write_demo_study(tmp_path_factory.mktemp("demo"), seed=SEED, shape_zyx=TEST_SHAPE)


@pytest.fixture(scope="module")
def volume() -> demo_module.DemoVolume:
    return build_demo_volume(SEED, TEST_SHAPE)


@pytest.fixture(scope="module")
def series(study: demo_module.DemoStudy) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted(study.dicom_dir.iterdir())]
    # The order a loader produces: position along the slice normal (+z for axial slices).
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def volume_hu(series: list[pydicom.Dataset]) -> np.ndarray:
    return np.stack(
        [ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in series]
    )


@pytest.fixture(scope="module")
def truth(study: demo_module.DemoStudy) -> dict:
    return json.loads(study.ground_truth_path.read_text(encoding="utf-8"))


def rasterise(lesion: dict, shape: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for roi in lesion["rois"]:
        points = np.rint(np.asarray(roi["points_xy"])).astype(np.int32)
        cv2.fillPoly(mask[roi["slice_index"]], [points], 1)
    return mask.astype(bool)


def interior(mask: np.ndarray) -> np.ndarray:
    """Mask shrunk by one pixel in-plane: ROI statistics away from the partial-volume edge."""
    kernel = np.ones((3, 3), np.uint8)
    return np.stack([cv2.erode(m.astype(np.uint8), kernel).astype(bool) for m in mask])


def test_files_are_ct_slices_with_expected_tags(study: demo_module.DemoStudy, series: list[pydicom.Dataset]) -> None:
    files = sorted(p.name for p in study.dicom_dir.iterdir())
    assert files == [f"IM{k:04d}.dcm" for k in range(1, TEST_SHAPE[0] + 1)]
    spacing = demo_module.demo_spacing(TEST_SHAPE)
    patient = PatientInfo()
    for k, ds in enumerate(series):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == study.sop_instance_uids[k]
        assert ds.Modality == "CT"
        assert ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == TEST_SHAPE[1:]
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([spacing[1], spacing[2]])
        assert float(ds.SliceThickness) == pytest.approx(spacing[0])
        assert float(ds.SpacingBetweenSlices) == pytest.approx(spacing[0])
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 1)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
        assert float(ds.WindowCenter[0]) == 60 and float(ds.WindowWidth[0]) == 150
        assert ds.Manufacturer == "liverview"
        assert ds.BodyPartExamined == "ABDOMEN"
        assert ds.ContrastBolusAgent
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.SeriesInstanceUID == study.series_instance_uid
        assert ds.FrameOfReferenceUID == study.frame_of_reference_uid
        assert ds.StudyDate and ds.StudyTime and ds.SeriesDate and ds.SeriesTime
        assert str(ds.PatientName) == patient.name == "DEMO^Hepatica"
        assert ds.PatientID == patient.patient_id == "LV-DEMO-0001"
        assert ds.PatientBirthDate == "19580412"
        assert ds.PatientSex == "F"
        assert ds.AccessionNumber and str(ds.ReferringPhysicianName)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in series])
    assert np.all(positions[:, :2] == positions[0, :2])
    assert np.allclose(np.diff(positions[:, 2]), spacing[0])
    assert len(set(study.sop_instance_uids)) == len(series)


def test_pixels_are_the_generated_volume(volume_hu: np.ndarray, volume: demo_module.DemoVolume) -> None:
    assert np.array_equal(volume_hu, volume.hu.astype(np.float32))


def test_dciodvfy_reports_no_errors(study: demo_module.DemoStudy) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy missing: `make test` installs it (apt-get install -y dicom3tools)")
    result = subprocess.run(
        ["dciodvfy", str(study.dicom_dir / "IM0030.dcm")], capture_output=True, text=True, timeout=60
    )
    report = result.stdout + result.stderr
    assert "Error" not in report, report


def test_ground_truth_document(study: demo_module.DemoStudy, series: list[pydicom.Dataset], truth: dict) -> None:
    assert set(truth) == GROUND_TRUTH_KEYS
    assert truth["format"] == "liverview.annotations" and truth["version"] == 1
    assert truth["study_instance_uid"] == series[0].StudyInstanceUID
    assert truth["series_instance_uid"] == series[0].SeriesInstanceUID
    assert truth["frame_of_reference_uid"] == series[0].FrameOfReferenceUID
    assert datetime.fromisoformat(truth["created"].replace("Z", "+00:00")).tzinfo is not None

    labels = [lesion["label"] for lesion in truth["lesions"]]
    assert len(labels) >= 5
    assert {c.value for c in LesionClass} <= set(labels)
    assert labels.count("metastasis") >= 2
    assert len({lesion["id"] for lesion in truth["lesions"]}) == len(labels)

    sop_by_index = [ds.SOPInstanceUID for ds in series]
    for lesion in truth["lesions"]:
        assert set(lesion) == LESION_KEYS
        assert lesion["reader"] == "ground-truth" and lesion["confidence"] == "certain"
        assert lesion["synth"]["class"] == lesion["label"]
        assert lesion["rois"]
        for roi in lesion["rois"]:
            assert set(roi) == ROI_KEYS and roi["kind"] == "polygon"
            assert roi["sop_instance_uid"] == sop_by_index[roi["slice_index"]]
            points = np.asarray(roi["points_xy"], dtype=float)
            assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 3
            assert points.min() >= 0 and points[:, 0].max() < TEST_SHAPE[2] and points[:, 1].max() < TEST_SHAPE[1]
        # The recorded parameters reproduce the spec exactly.
        spec = LesionSpec.from_dict(lesion["synth"])
        assert spec in study.lesions
        assert 8.0 <= spec.diameter_mm <= 60.0


def test_ground_truth_polygons_match_lesion_masks(truth: dict, volume: demo_module.DemoVolume) -> None:
    union = np.zeros(TEST_SHAPE, dtype=np.int32)
    for lesion, mask in zip(truth["lesions"], volume.lesion_masks, strict=True):
        assert np.array_equal(rasterise(lesion, TEST_SHAPE), mask)
        assert not (mask & ~volume.organ_masks["liver"]).any(), "lesion outside the liver"
        union += mask
    assert union.max() == 1, "lesions overlap"


def test_attenuation_per_class_matches_documented_ranges(
    volume_hu: np.ndarray, truth: dict, volume: demo_module.DemoVolume
) -> None:
    lesions_mask = np.zeros(TEST_SHAPE, dtype=bool)
    for mask in volume.lesion_masks:
        lesions_mask |= mask
    organs = volume.organ_masks
    liver = interior(interior(organs["liver"] & ~organs["hepatic_vessels"] & ~lesions_mask))
    liver_mean = float(volume_hu[liver].mean())
    assert 100.0 <= liver_mean <= 120.0
    assert 9.0 <= float(volume_hu[liver].std()) <= 16.0  # CT-like noise

    for lesion in truth["lesions"]:
        mask = rasterise(lesion, TEST_SHAPE)
        inside = volume_hu[interior(mask)]
        median = float(np.median(inside))
        label = lesion["label"]
        if label == "benign_cyst":
            assert 0.0 <= float(inside.mean()) <= 20.0
        elif label == "hemangioma":
            assert float(np.percentile(inside, 95)) >= 110.0, "no blood-pool-like nodules"
            assert median <= 80.0, "bulk should stay hypoattenuating"
        elif label == "hcc":
            assert 65.0 <= median <= 100.0 and median <= liver_mean - 10.0
            rim = volume_hu[mask & ~interior(interior(mask))]
            assert float(rim.mean()) >= median + 10.0, "no enhancing capsule"
        elif label == "metastasis":
            assert 35.0 <= median <= 75.0


def test_same_seed_gives_identical_pixels_and_uids(tmp_path: Path) -> None:
    first = write_demo_study(tmp_path / "a", seed=7, shape_zyx=TINY_SHAPE)
    second = write_demo_study(tmp_path / "b", seed=7, shape_zyx=TINY_SHAPE)
    other = write_demo_study(tmp_path / "c", seed=8, shape_zyx=TINY_SHAPE)
    assert first.sop_instance_uids == second.sop_instance_uids
    assert first.study_instance_uid != other.study_instance_uid
    differs = False
    for name in sorted(p.name for p in first.dicom_dir.iterdir()):
        a = pydicom.dcmread(first.dicom_dir / name).PixelData
        assert a == pydicom.dcmread(second.dicom_dir / name).PixelData
        differs |= a != pydicom.dcmread(other.dicom_dir / name).PixelData
    assert differs
    truth_a = json.loads(first.ground_truth_path.read_text())
    truth_b = json.loads(second.ground_truth_path.read_text())
    assert truth_a["lesions"] == truth_b["lesions"]


def test_should_stop_cancels_and_leaves_nothing(tmp_path: Path) -> None:
    writing = []

    def note_progress(fraction: float, message: str) -> None:
        if message.startswith("Writing slice 3 "):
            writing.append(fraction)

    # Stop once a few files are on disk: the partial series must be removed again.
    with pytest.raises(Cancelled):
        write_demo_study(
            tmp_path, seed=3, shape_zyx=TINY_SHAPE, progress=note_progress, should_stop=lambda: bool(writing)
        )
    assert writing
    assert list(tmp_path.iterdir()) == []

    polls = 0

    def stop_during_phantom() -> bool:
        nonlocal polls
        polls += 1
        return polls > 5

    with pytest.raises(Cancelled):
        write_demo_study(tmp_path / "early", seed=3, shape_zyx=TINY_SHAPE, should_stop=stop_during_phantom)
    assert polls == 6
    assert not (tmp_path / "early" / "dicom").exists()


def test_progress_runs_from_zero_to_one(tmp_path: Path) -> None:
    reports: list[tuple[float, str]] = []
    write_demo_study(tmp_path, seed=3, shape_zyx=TINY_SHAPE, progress=lambda f, m: reports.append((f, m)))
    fractions = [f for f, _ in reports]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert all(isinstance(m, str) and m for _, m in reports)


def test_existing_study_is_kept_unless_overwrite(tmp_path: Path) -> None:
    write_demo_study(tmp_path, seed=3, shape_zyx=TINY_SHAPE)
    with pytest.raises(FileExistsError):
        write_demo_study(tmp_path, seed=4, shape_zyx=TINY_SHAPE)
    replaced = write_demo_study(tmp_path, seed=4, shape_zyx=TINY_SHAPE, overwrite=True)
    assert pydicom.dcmread(replaced.dicom_dir / "IM0001.dcm").SOPInstanceUID == replaced.sop_instance_uids[0]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_writes_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    small = functools.partial(demo_module.write_demo_study, shape_zyx=TINY_SHAPE)
    monkeypatch.setattr(demo_module, "write_demo_study", small)
    assert demo_module.main([str(tmp_path), "--seed", "5"]) == 0
    assert str(tmp_path / "dicom") in capsys.readouterr().out
    assert (tmp_path / "ground-truth.json").is_file()
    assert demo_module.main([str(tmp_path)]) == 1  # refuses to overwrite without --force


def test_module_runs_as_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "liverview.synth.demo", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--seed" in result.stdout


def test_lesion_is_reproducible_from_its_record_and_stays_in_liver() -> None:
    spacing = (2.0, 1.0, 1.0)
    hu = np.full((30, 80, 80), 110.0, dtype=np.float32)
    liver = np.zeros(hu.shape, dtype=bool)
    liver[:, :, :45] = True  # the lesion below straddles the liver edge at x = 45 mm
    for lesion_class in LesionClass:
        spec = sample_lesion_spec(lesion_class, (30.0, 40.0, 40.0), 30.0, seed=11)
        again = LesionSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec
        a, b = hu.copy(), hu.copy()
        mask_a = insert_lesion(a, liver, spec, spacing)
        mask_b = insert_lesion(b, liver, again, spacing)
        assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
        assert mask_a.any() and not (mask_a & ~liver).any()
        assert np.array_equal(a[~liver], hu[~liver]), "painted outside the liver"


@pytest.mark.slow
def test_default_demo_geometry_and_contrast(tmp_path: Path) -> None:
    """The study that ships: 512 x 512, ~0.78 mm pixels, 3 mm slices, lesions 10-60 mm."""
    shipped = write_demo_study(tmp_path, seed=SEED)
    first = pydicom.dcmread(shipped.dicom_dir / "IM0001.dcm")
    assert (first.Rows, first.Columns) == (512, 512)
    assert float(first.PixelSpacing[0]) == pytest.approx(0.78125)
    assert float(first.SliceThickness) == 3.0
    assert len(shipped.sop_instance_uids) == 60
    assert all(10.0 <= spec.diameter_mm <= 60.0 for spec in shipped.lesions)


def test_the_multiphase_demo_is_one_study_in_four_phases_with_a_lesion_of_each_class(tmp_path: Path) -> None:
    from liverview.io import scan_paths

    demo = demo_module.write_multiphase_demo(tmp_path / "mp")
    scan = scan_paths(demo.dicom_dir)
    assert sorted(demo.series_dirs) == ["arterial", "delayed", "non_contrast", "portal_venous"]
    assert len(scan.series) == 4 and len({(s.study_uid, s.frame_of_reference_uid) for s in scan.series}) == 1
    truth = json.loads(demo.ground_truth_path.read_text())
    assert sorted(lesion["label"] for lesion in truth["lesions"]) == ["benign_cyst", "hcc", "hemangioma", "metastasis"]
    venous = next(s for s in scan.series if s.series_uid == truth["series_instance_uid"])
    assert "portal venous" in venous.identity.series_description
    with pytest.raises(FileExistsError):
        demo_module.write_multiphase_demo(tmp_path / "mp")
    assert demo_module.main([str(tmp_path / "cli"), "--multiphase"]) == 0


def test_the_multiphase_demo_phases_are_read_from_its_images_too(tmp_path: Path) -> None:
    """The demo was the simulator's slab around the liver: the aorta was in view, the vertebra the
    search starts from was not, and every phase came from the descriptions alone."""
    from liverview.imaging.contrast_phase import DecidedBy, detect_series_phases
    from liverview.io import scan_paths

    demo = demo_module.write_multiphase_demo(tmp_path / "mp")
    infos = scan_paths(demo.dicom_dir).series
    decided = {Path(info.frames[0].path).parent.name: d for info, d in
               zip(infos, (detect_series_phases(infos)[info.key] for info in infos))}
    assert {name: d.phase.value for name, d in decided.items()} == {name: name for name in decided}
    assert all(d.enhancement is not None and d.enhancement.aorta_hu is not None for d in decided.values())
    assert decided["non_contrast"].decided_by is DecidedBy.IMAGES and decided["arterial"].decided_by is DecidedBy.IMAGES


def test_the_whole_abdomen_demo_is_other_series_than_the_slab_it_replaces(tmp_path: Path) -> None:
    """Outlines a reader saved on the first four-phase demo (a slab around the liver, 208 x 240) are keyed
    by its series UIDs: the whole-abdomen demo must not take those UIDs, or the outlines land on other pixels."""
    from liverview.annotations.labels import LesionClass
    from liverview.synth.simulator import SimulatorConfig, simulate_patient

    config = SimulatorConfig(phases=demo_module.MULTIPHASE_PHASES, diameter_mm=(15.0, 30.0))
    slab = simulate_patient(demo_module.MULTIPHASE_SEED, list(LesionClass), config)
    demo = demo_module.write_multiphase_demo(tmp_path / "mp")
    truth = json.loads(demo.ground_truth_path.read_text())
    assert truth["series_instance_uid"] != slab.series_uid
