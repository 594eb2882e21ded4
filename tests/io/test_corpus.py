"""Every file of the real-world corpus ends as loaded, loaded with a warning, or rejected with a reason."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from liverview.io import FrameDecodeError, load_series, read_slice, scan_paths


def _manifest(corpus_dir: Path) -> dict[str, dict]:
    with open(corpus_dir / "MANIFEST.tsv", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(scope="module")
def corpus_outcomes(corpus_dir):
    scan = scan_paths(corpus_dir)
    outcome: dict[str, tuple[str, str]] = {}
    for skipped in scan.skipped:
        outcome[str(Path(skipped.path).resolve())] = ("rejected", skipped.reason)
    for info in scan.series:
        volume = load_series(info)
        failed = {str(Path(f.path.split(" (frame")[0]).resolve()): f.reason for f in volume.failed}
        for path in info.files:
            key = str(Path(path).resolve())
            if key in failed:
                outcome[key] = ("rejected", failed[key])
            else:
                outcome[key] = ("warning" if volume.warnings else "loaded", "; ".join(volume.warnings))
        assert volume.array.dtype == np.int16
    return scan, outcome


def test_every_corpus_file_has_an_outcome(corpus_dir, corpus_outcomes):
    _, outcome = corpus_outcomes
    manifest = _manifest(corpus_dir)
    missing = [name for name in manifest if str((corpus_dir / name).resolve()) not in outcome]
    assert not missing, f"files with no outcome: {missing}"
    for name in manifest:
        kind, reason = outcome[str((corpus_dir / name).resolve())]
        assert kind in {"loaded", "warning", "rejected"}
        if kind != "loaded":
            assert reason.strip(), f"{name}: {kind} without a reason"


@pytest.mark.parametrize("name, words", [
    ("orthanc-tests/2026-05-26-oob-monochrome-65535.dcm", "implausible image size"),
    ("orthanc-tests/2026-05-26-oob-monochrome-46341.dcm", "implausible image size"),
    ("orthanc-tests/2026-05-06-Deeply-Nested-Sequence.dcm", "nested too deeply"),
    ("pydicom/MR_truncated.dcm", "truncated"),
    ("orthanc-tests/Issue22-NoPixelData.dcm", "no Pixel Data"),
    ("pydicom-data/liver.dcm", "DICOM SEG"),
    ("pydicom/zipMR.gz", "not a readable DICOM"),
    ("pydicom/no_meta.dcm", "not a readable DICOM"),
])
def test_hostile_and_broken_files_rejected_with_reason(corpus_dir, corpus_outcomes, name, words):
    _, outcome = corpus_outcomes
    kind, reason = outcome[str((corpus_dir / name).resolve())]
    assert kind == "rejected" and words in reason


def test_dangling_dicomdir_references_listed(corpus_dir):
    scan = scan_paths(corpus_dir / "pydicom" / "dicomdir" / "DICOMDIR")
    missing = [s for s in scan.skipped if "missing from the media" in s.reason]
    assert len(missing) >= 10
    ct = [s for s in scan.series if s.modality == "CT"]
    assert len(ct) == 1 and ct[0].n_images == 4
    assert sum(s.modality == "CR" for s in scan.series) == 3


def test_a_dicomdir_under_another_name_is_known_by_its_file_meta(corpus_dir, tmp_path):
    import shutil

    media = tmp_path / "media"
    shutil.copytree(corpus_dir / "pydicom" / "dicomdir", media)
    (media / "DICOMDIR").rename(media / "INDEX")
    scan = scan_paths(media / "INDEX")
    assert [s.n_images for s in scan.series if s.modality == "CT"] == [4]
    assert sum(s.modality == "CR" for s in scan.series) == 3


@pytest.mark.parametrize("compressed", [
    "pydicom/MR_small_RLE.dcm",
    "pydicom/MR_small_jpeg_ls_lossless.dcm",
    "pydicom/MR_small_jp2klossless.dcm",
    "pydicom/MR_small_bigendian.dcm",
    "pydicom/MR_small_implicit.dcm",
])
def test_lossless_syntaxes_decode_to_identical_values(corpus_dir, compressed):
    reference = read_slice(scan_paths(corpus_dir / "pydicom" / "MR_small_implicit.dcm").series[0], 0)
    info = scan_paths(corpus_dir / compressed).series[0]
    assert np.array_equal(read_slice(info, 0), reference)


@pytest.mark.parametrize("name", [
    "orthanc-tests/jpeg_lossless_sv1_CT_signed.dcm",   # JPEG lossless SV1
    "orthanc-tests/jpegls_nearlossless_CT2.dcm",       # JPEG-LS near-lossless
    "orthanc-tests/j2k_CT1_J2KI.dcm",                  # JPEG 2000 lossy
    "orthanc-tests/deflate_CT.dcm",                    # deflated explicit VR
    "pydicom-data/693_J2KR.dcm",                       # J2K lossless
])
def test_compressed_ct_loads_in_hu(corpus_dir, name):
    volume = load_series(corpus_dir / name)
    assert volume.is_hu and volume.loaded.all()
    low, high = volume.value_range()
    assert -4096 <= low < 0 < high < 4096


def test_monochrome1_is_displayed_inverted(corpus_dir):
    volume = load_series(corpus_dir / "pydicom-data" / "RG3_J2KI.dcm")
    assert volume.invert_display


def test_enhanced_multiframe_ct(corpus_dir):
    volume = load_series(corpus_dir / "pydicom-data" / "eCT_Supplemental.dcm")
    assert volume.shape == (2, 512, 512) and volume.is_hu
    assert sorted(volume.frame_numbers) == [1, 2]


def test_gantry_tilt_and_variable_spacing_warned(corpus_dir):
    info = scan_paths(corpus_dir / "dcm_qa_ct" / "GE_tilt").series[0]
    assert info.n_images == 8
    assert any("gantry tilt" in w for w in info.warnings)
    assert any("uneven slice spacing" in w for w in info.warnings)


def test_decode_failure_is_a_reason_not_an_exception(corpus_dir):
    info = scan_paths(corpus_dir / "pylibjpeg-data" / "RG2_JPLY.dcm").series[0]
    with pytest.raises(FrameDecodeError):
        read_slice(info, 0)
    volume = load_series(info)
    assert not volume.loaded.any() and volume.failed and "decoded" in volume.failed[0].reason


JPEG_LS_FILES = ["pydicom/JPEGLSNearLossless_16.dcm", "pydicom/MR_small_jpeg_ls_lossless.dcm",
                 "pylibjpeg-data/RG1_JLSN.dcm", "orthanc-tests/jpegls_lossless_NM1.dcm",
                 "orthanc-tests/jpegls_nearlossless_CT2.dcm"]


@pytest.mark.parametrize("name", JPEG_LS_FILES)
def test_jpeg_ls_frames_decode_from_their_fragments_as_pydicom_decodes_them(corpus_dir, name):
    """Single-frame JPEG-LS goes to CharLS straight from the file's items, without pydicom's parse of the
    dataset; the values (signed and unsigned, lossless and near-lossless) are pydicom's, to the bit."""
    import pydicom
    from pydicom.pixels import pixel_array

    from liverview.io.pixels import FrameReader

    info = scan_paths(corpus_dir / name).series[0]
    header = info.frames[0].file
    assert header.fragments_offset is not None
    reader = FrameReader()
    stored = reader.read_stored(info.frames[0])
    assert reader._path is None  # no dataset was parsed
    reference = pixel_array(pydicom.dcmread(corpus_dir / name), decoding_plugin="pyjpegls")
    assert stored.dtype == reference.dtype and np.array_equal(stored, reference)


JPEG_2000_FILES = {  # file: decoded from its fragments (True) or, sign or precision disagreeing, by pydicom
    "orthanc-tests/j2k_CT1_J2KI.dcm": True, "pydicom-data/MR2_J2KI.dcm": True, "pydicom-data/RG3_J2KI.dcm": True,
    "pydicom/MR_small_jp2klossless.dcm": True, "pylibjpeg-data/ELSCINT1_JP2vsJ2K.dcm": True,
    "pylibjpeg-data/MAROTECH_CT_JP2Lossy.dcm": True, "pydicom-data/693_J2KR.dcm": False,
    "pydicom/J2K_pixelrep_mismatch.dcm": False, "pylibjpeg-data/TOSHIBA_J2K_OpenJPEGv2Regression.dcm": False,
    "pylibjpeg-data/TOSHIBA_J2K_SIZ0_PixRep1.dcm": False, "pylibjpeg-data/TOSHIBA_J2K_SIZ1_PixRep0.dcm": False,
}


@pytest.mark.parametrize("name", sorted(JPEG_2000_FILES))
def test_jpeg_2000_frames_decode_from_their_fragments_as_pydicom_decodes_them(corpus_dir, name):
    """Single-frame JPEG 2000 goes to OpenJPEG straight from the file's items (importing pydicom and its
    plugins delayed the first slice by 0.1 s) where the codestream's sign and precision are the header's;
    where they are not, pydicom's corrections apply. Either way the values are pydicom's."""
    import warnings

    import pydicom
    from pydicom.pixels import pixel_array

    from liverview.io.pixels import FrameReader

    info = scan_paths(corpus_dir / name).series[0]
    reader = FrameReader()
    stored = reader.read_stored(info.frames[0])
    assert (reader._path is None) == JPEG_2000_FILES[name]  # no dataset parsed where decoded directly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = pixel_array(pydicom.dcmread(corpus_dir / name))
    assert stored.dtype == reference.dtype and np.array_equal(stored, reference)


def test_a_damaged_jpeg_ls_file_falls_back_to_pydicom_and_its_reason(corpus_dir, tmp_path):
    from liverview.io.pixels import FrameDecodeError, FrameReader

    source = corpus_dir / "orthanc-tests" / "jpegls_nearlossless_CT2.dcm"
    damaged = tmp_path / "damaged.dcm"
    data = source.read_bytes()
    damaged.write_bytes(data[: len(data) - len(data) // 3])
    info = scan_paths(damaged).series[0]
    reader = FrameReader()
    with pytest.raises(FrameDecodeError):
        reader.read_stored(info.frames[0])
    assert reader._path == str(damaged)  # pydicom was asked, and gave the reason
