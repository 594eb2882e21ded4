"""Scanning and loading the real CT series crlm-ct-1004 (41 axial slices, 5 mm, TCIA CC BY 4.0)."""
from __future__ import annotations

import random
import shutil
import zipfile

import numpy as np
import pydicom
import pytest

from liverview.progress import Cancelled
from liverview.io import SourceError, fill_volume, allocate_volume, load_series, scan_paths


def test_crlm_geometry_and_hu(crlm_dir):
    scan = scan_paths(crlm_dir)
    assert len(scan.series) == 1
    info = scan.series[0]
    assert info.modality == "CT" and info.plane == "axial"
    vol = load_series(info)
    assert vol.array.dtype == np.int16
    assert vol.shape == (41, 512, 512)
    assert vol.spacing_mm == pytest.approx((5.0, 0.796875, 0.796875))
    assert vol.is_hu and not vol.failed and vol.loaded.all()
    # The reconstruction circle is padded with -2000 stored values: it must read as air, not -3024 HU.
    low, high = vol.value_range()
    assert low == -1024 and 1000 < high < 3000
    # Slices sorted along the normal (+z here): strictly increasing positions 5 mm apart.
    z = vol.positions_mm @ np.asarray(vol.normal)
    assert np.allclose(np.diff(z), 5.0)
    # Liver parenchyma in the portal venous phase: the middle slice's soft tissue is in a CT range.
    body = vol.array[20][vol.array[20] > -200]
    assert 0 < np.median(body) < 150


def test_hu_match_pydicom_rescale(crlm_dir):
    vol = load_series(crlm_dir)
    for z in (0, 17, 40):
        path = next(f.path for f in vol.info.frames if f.sop_instance_uid == vol.sop_instance_uids[z])
        ds = pydicom.dcmread(path)
        expected = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        pad = ds.pixel_array == ds.PixelPaddingValue
        expected[pad] = -1024
        assert np.array_equal(vol.array[z], expected)
        assert vol.positions_mm[z] == pytest.approx([float(v) for v in ds.ImagePositionPatient])


def test_order_ignores_file_names_and_instance_numbers(tmp_path, crlm_dir):
    reference = load_series(crlm_dir)
    files = sorted(crlm_dir.glob("*.dcm"))
    names = [f"x{i:03d}.dcm" for i in range(len(files))]
    random.Random(4).shuffle(names)
    for src, name in zip(files, names):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = random.Random(name).randint(1, 999)
        ds.save_as(tmp_path / name)
    shuffled = load_series(tmp_path)
    assert np.array_equal(shuffled.array, reference.array)
    assert shuffled.sop_instance_uids == reference.sop_instance_uids


def test_stray_coronal_localizer_becomes_its_own_series(crlm_copy):
    ds = pydicom.dcmread(crlm_copy / "1-05.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(crlm_copy / "localizer.dcm")
    scan = scan_paths(crlm_copy)
    assert sorted(s.n_images for s in scan.series) == [1, 41]
    stray = next(s for s in scan.series if s.n_images == 1)
    assert stray.plane == "coronal"
    assert any("split" in w for w in stray.warnings)
    main = next(s for s in scan.series if s.n_images == 41)
    assert not main.warnings


def test_missing_slice_is_reported(crlm_copy):
    (crlm_copy / "1-20.dcm").unlink()
    info = scan_paths(crlm_copy).series[0]
    assert info.n_images == 40
    assert info.slice_spacing_mm == pytest.approx(5.0)
    assert any("missing" in w for w in info.warnings)
    assert any("uneven" in w for w in info.warnings)


def test_bad_file_is_reported_and_rest_loads(crlm_copy):
    data = (crlm_copy / "1-07.dcm").read_bytes()
    (crlm_copy / "1-07.dcm").write_bytes(data[: len(data) // 2])
    (crlm_copy / "notes.dcm").write_bytes(b"this is not dicom at all" * 10)
    scan = scan_paths(crlm_copy)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in scan.skipped}
    assert "truncated" in reasons["1-07.dcm"]
    assert "not a readable DICOM" in reasons["notes.dcm"]
    vol = load_series(scan.series[0])
    assert vol.shape[0] == 40 and vol.loaded.all()


def test_zip_of_study(tmp_path, crlm_dir):
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(crlm_dir.glob("*.dcm")):
            zf.write(f, f"CD/IMAGES/{f.name}")
    vol = load_series(archive)
    assert vol.shape == (41, 512, 512)
    assert np.array_equal(vol.array, load_series(crlm_dir).array)


def test_set_of_files(crlm_dir):
    files = sorted(str(p) for p in crlm_dir.glob("*.dcm"))[:10]
    vol = load_series(files)
    assert vol.shape == (10, 512, 512)


def test_middle_slice_comes_first_and_cancel(crlm_dir):
    info = scan_paths(crlm_dir).series[0]
    order: list[int] = []
    fill_volume(allocate_volume(info), on_slice=lambda v, z: order.append(z))
    assert order[0] == 20 and sorted(order) == list(range(41))
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(Cancelled):
        fill_volume(allocate_volume(info), should_stop=stop)


def test_geometry_round_trip(crlm_dir):
    vol = load_series(crlm_dir)
    point = vol.index_to_patient(10, 100, 200)
    assert vol.patient_to_index(point) == pytest.approx([10, 100, 200])
    ds = pydicom.dcmread(crlm_dir / "1-01.dcm")
    assert vol.index_to_patient(0, 0, 0) == pytest.approx([float(v) for v in vol.positions_mm[0]])
    assert vol.row_direction == pytest.approx(tuple(float(v) for v in ds.ImageOrientationPatient[:3]))


def test_unreadable_path_raises():
    with pytest.raises(SourceError):
        scan_paths("/definitely/not/here")


def test_mr_is_not_hu(corpus_dir):
    scan = scan_paths(corpus_dir / "orthanc-tests" / "implicit_nopreamble_MR.dcm")
    vol = load_series(scan.series[0])
    assert vol.modality == "MR" and not vol.is_hu
    assert any("not CT" in w for w in vol.warnings)


def test_folder_copy_loads_identically_after_move(tmp_path, crlm_dir):
    nested = tmp_path / "a" / "b"
    shutil.copytree(crlm_dir, nested)
    assert load_series(tmp_path).shape == (41, 512, 512)


def test_unsigned_storage_with_intercept(tmp_path, crlm_dir):
    """Many scanners store CT as unsigned 16-bit with intercept -1024: same HU as signed storage."""
    reference = load_series(crlm_dir)
    for src in sorted(crlm_dir.glob("*.dcm"))[:5]:
        ds = pydicom.dcmread(src)
        hu = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)
        hu[ds.pixel_array == ds.PixelPaddingValue] = -1024
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        del ds.PixelPaddingValue
        ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
        ds.save_as(tmp_path / src.name)
    unsigned = load_series(tmp_path)
    rows = [reference.sop_instance_uids.index(uid) for uid in unsigned.sop_instance_uids]
    assert np.array_equal(unsigned.array, reference.array[rows])


def test_the_value_range_reads_the_loaded_slices_without_copying_the_volume(crlm_dir):
    """`value_range` once copied every loaded slice (a boolean index): the whole volume a second time
    in memory, on every `liverview-inspect --load` and every opened series."""
    import tracemalloc

    vol = load_series(crlm_dir)
    vol.array[5] = 30000  # an unloaded slice's garbage must not count
    vol.loaded[5] = False
    tracemalloc.start()
    try:
        low, high = vol.value_range()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert low == -1024 and 1000 < high < 3000
    assert peak < vol.array.nbytes / 20, peak
    vol.loaded[:] = True
    assert vol.value_range()[1] == 30000
