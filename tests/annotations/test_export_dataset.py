"""Training dataset export: patches equal the volume crops, masks equal the lesion masks, the index
lines describe them, and studies accumulate in one folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from liverview import __version__
from liverview.annotations.document import Lesion, Roi
from liverview.annotations.export_common import ExportError
from liverview.annotations.dataset_format import LOCK_NAME, read_lesion_lines
from liverview.annotations.export_dataset import export_dataset
from liverview.annotations.measurements import lesion_mask


def _lines(folder):
    return read_lesion_lines(folder / "lesions.jsonl")


def test_patches_equal_volume_crops(identified_volume, document, pseudonymizer, tmp_path, leak):
    volume = identified_volume
    # A lesion at the last slice and the image corner: the margins are clipped to the volume.
    document.lesions.append(Lesion(reader="Dr. Reader One", label="benign_cyst",
                                   rois=[Roi(40, [(2.0, 3.0), (9.0, 3.0), (9.0, 8.0), (2.0, 8.0)])]))
    out = tmp_path / "dataset"
    assert export_dataset(volume, document, out, pseudonymizer=pseudonymizer) == 3  # unlabelled one left out

    records = _lines(out)
    assert [r["lesion_id"] for r in records] == [document.lesions[i].id for i in (0, 1, 3)]
    for record, lesion in zip(records, [document.lesions[i] for i in (0, 1, 3)]):
        with np.load(out / record["file"]) as npz:
            hu, mask, spacing, bbox = npz["hu"], npz["mask"], npz["spacing_mm"], npz["bbox_zyx"]
        full = lesion_mask(volume, lesion)
        region = tuple(slice(a, b) for a, b in bbox)
        assert hu.dtype == np.int16 and mask.dtype == bool and hu.shape == mask.shape
        assert np.array_equal(hu, volume.array[region])
        assert np.array_equal(mask, full[region])
        assert mask.sum() == full.sum()  # the whole lesion is inside the patch
        assert np.allclose(spacing, volume.spacing_mm)
        assert record["bbox_zyx"] == bbox.tolist()
        zs, ys, xs = (np.flatnonzero(full.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
        expected = [[max(0, zs[0] - 2), min(41, zs[-1] + 3)], [max(0, ys[0] - 16), min(512, ys[-1] + 17)],
                    [max(0, xs[0] - 16), min(512, xs[-1] + 17)]]
        assert bbox.tolist() == expected
        assert record["source_shape"] == list(volume.shape) and record["is_hu"] is True
        assert record["modality"] == "CT" and record["format_version"] == 2
        assert record["liverview_version"] == __version__
    # rows 3..7, columns 2..8 (pixel centres inside the square); clipped at the last slice and the corner
    assert records[2]["bbox_zyx"] == [[38, 41], [0, 24], [0, 25]]
    first = records[0]
    assert first["label"] == "metastasis" and first["label_name"] == "Metastasis"
    assert first["code"] == {"value": "14799000", "scheme": "SCT", "meaning": "Neoplasm, metastatic"}
    assert first["confidence"] == "certain" and first["label_source"] == "reader"
    assert first["patient"] == pseudonymizer.patient_pseudonym("MRN-4711-0815")
    assert first["series_uid"] == pseudonymizer.remap_uid(volume.series_uid)
    assert first["study_uid"] == pseudonymizer.remap_uid(volume.study_uid)
    assert first["patient_name"] is None and first["pseudonymized"] is True
    assert first["file"] == f"patches/{first['lesion_uid']}.npz"

    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["format"] == "liverview.dataset" and manifest["version"] == 2
    classes = {c["id"]: c for c in manifest["classes"]}
    assert list(classes)[:4] == ["benign_cyst", "hemangioma", "hcc", "metastasis"]
    assert classes["metastasis"]["count"] == 1 and classes["hcc"]["count"] == 0
    assert manifest["n_lesions"] == 3
    leak.absent((out / "lesions.jsonl").read_text(), "dataset lesions.jsonl")
    leak.absent((out / "dataset.json").read_text(), "dataset.json")
    assert not (out / LOCK_NAME).exists()


def test_studies_accumulate_and_reexport_replaces(identified_volume, second_study_volume, draw, pseudonymizer,
                                                  tmp_path):
    out = tmp_path / "dataset"
    first_doc = draw(identified_volume)
    assert export_dataset(identified_volume, first_doc, out, pseudonymizer=pseudonymizer) == 2
    created = json.loads((out / "dataset.json").read_text())["created"]
    second_doc = draw(second_study_volume)
    assert export_dataset(second_study_volume, second_doc, out, labelled_only=False, pseudonymizer=pseudonymizer) == 3
    records = _lines(out)
    assert len(records) == 5 and len({r["lesion_uid"] for r in records}) == 5
    assert len(list((out / "patches").glob("*.npz"))) == 5
    # Same patient, two studies: one pseudonym, two study UIDs.
    assert len({r["patient"] for r in records}) == 1 and len({r["study_uid"] for r in records}) == 2
    # Exporting the first study again (label changed) replaces its lines instead of adding more.
    first_doc.lesions[1].label = "hcc"
    assert export_dataset(identified_volume, first_doc, out, pseudonymizer=pseudonymizer) == 2
    records = _lines(out)
    assert len(records) == 5
    assert [r["label"] for r in records if r["lesion_id"] == first_doc.lesions[1].id
            and r["series_uid"] == pseudonymizer.remap_uid(identified_volume.series_uid)] == ["hcc"]
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["created"] == created and manifest["n_lesions"] == 5 and manifest["n_unlabelled"] == 1
    counts = {c["id"]: c["count"] for c in manifest["classes"]}
    assert counts["metastasis"] == 2 and counts["hcc"] == 1 and counts["hemangioma"] == 1


def test_plain_export_keeps_identity_and_refuses_foreign_or_locked_folders(identified_volume, document, tmp_path,
                                                                          leak):
    out = tmp_path / "plain"
    export_dataset(identified_volume, document, out, pseudonymize=False)
    record = _lines(out)[0]
    assert record["series_uid"] == identified_volume.series_uid and record["patient"] == "MRN-4711-0815"
    leak.present((out / "lesions.jsonl").read_text(), "dataset without pseudonymisation")

    (out / LOCK_NAME).write_text("123\n")
    with pytest.raises(ExportError, match="another export is writing"):
        export_dataset(identified_volume, document, out, pseudonymize=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "dataset.json").write_text(json.dumps({"format": "something.else"}))
    with pytest.raises(ExportError, match="not a liverview dataset manifest"):
        export_dataset(identified_volume, document, foreign, pseudonymize=False)


def test_a_lesion_is_exported_with_the_studys_other_phases_on_its_own_voxels(crlm_dir, tmp_path, resample_series):
    """The other phase (another reconstruction of the real series, moved 4 mm by breathing) is carried onto
    the patch's voxels: where both exist it shows the same tissue."""
    import stat
    from pathlib import Path

    from liverview.annotations.dataset_format import read_manifest, read_patch
    from liverview.annotations.document import AnnotationDocument
    from liverview.annotations.export_dataset import PhaseSource
    from liverview.io import load_series

    volume = load_series(crlm_dir)
    document = AnnotationDocument.from_dict(json.loads((Path(__file__).parent.parent / "data" /
                                                        "crlm-ct-1004-metastases.json").read_text()))
    other = load_series(resample_series(volume, tmp_path / "arterial", (0.0, 4.0, 0.0), volume.frame_of_reference_uid))
    out = tmp_path / "dataset"
    assert export_dataset(volume, document, out, pseudonymize=False, phase="portal_venous",
                          other_phases=[PhaseSource("arterial", other, "images")]) == 1
    record = read_lesion_lines(out / "lesions.jsonl")[0]
    assert record["contrast_phase"] == "portal_venous" and set(record["phases"]) == {"arterial"}
    assert record["phases"]["arterial"]["series_uid"] == other.series_uid
    assert np.allclose(record["phases"]["arterial"]["shift_mm"], (0.0, 4.0, 0.0), atol=1.5)
    patch = read_patch(out / record["file"])
    assert patch.phase_names == ["portal_venous", "arterial"] and patch.phases["arterial"].shape == patch.hu.shape
    # The other series covers 16 slices of 2.5 mm around the lesion: compare where it has data.
    covered = patch.phases["arterial"] > -1000
    lesion = patch.mask & covered
    assert lesion.sum() > 0.8 * patch.mask.sum()
    assert abs(float(patch.phases["arterial"][lesion].mean()) - float(patch.hu[lesion].mean())) < 15.0
    assert read_manifest(out)["contrast_phases"] == ["arterial", "portal_venous"]
    # Exported files get a normal file's permissions, not mkstemp's 0600.
    for path in (out / "lesions.jsonl", out / "dataset.json", out / record["file"]):
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044
