"""An input outside what the model was trained on is said to be so, never shown with low uncertainty."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from liverview.annotations.document import AIResult, AnnotationDocument, Lesion, Roi
from liverview.imaging.contrast_phase import ContrastPhase
from liverview.io import load_series
from liverview.model.classify import classify_lesion, classify_lesions, loaded_domain, series_phase
from liverview.model.domain import OUTSIDE, SIMULATED_PORTAL_VENOUS, TrainingDomain
from liverview.model.predict_cli import main as predict_main
from liverview.paths import default_model_path
from liverview.model.inference import load_bundle

CRLM_ANNOTATIONS = "tests/data/crlm-ct-1004-metastases.json"


def _circle(cx, cy, r, n=40):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in t]


def test_the_bundled_model_reads_a_real_arterial_series_with_its_phase_reader_and_says_what_is_outside(hcc_dir):
    """The CNN learnt portal-venous lesions only; the phase reader reads an arterial series (it was fitted on
    simulated arterial lesions), and the answer names what lies outside that training: this real series'
    noise (25 HU against the simulator's 7-20)."""
    volume = load_series(hcc_dir)
    lesion = Lesion(reader="R1", rois=[Roi(70, _circle(150.0, 260.0, 18.0), sop_instance_uid=volume.sop_instance_uids[70])])
    loaded = load_bundle(default_model_path())
    prediction = classify_lesion(loaded, volume, lesion, heatmap=False)
    assert prediction.phase == "arterial" and prediction.phases_read == ["arterial"]
    assert prediction.model_id.endswith("+ phase reader")
    assert prediction.uncertainty == OUTSIDE
    assert any("noise" in r for r in prediction.outside_training)
    assert not any("this series is arterial" in r for r in prediction.outside_training)
    result = prediction.to_ai_result()
    assert result.uncertainty == OUTSIDE and result.phases_read == ["arterial"]
    assert AIResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_without_its_phase_reader_the_cnn_on_an_arterial_series_says_its_phase_is_untrained(hcc_dir):
    volume = load_series(hcc_dir)
    lesion = Lesion(reader="R1", rois=[Roi(70, _circle(150.0, 260.0, 18.0), sop_instance_uid=volume.sop_instance_uids[70])])
    loaded = load_bundle(default_model_path())
    loaded.phase_reader = None
    prediction = classify_lesion(loaded, volume, lesion, heatmap=False)
    assert prediction.uncertainty == OUTSIDE and prediction.phases_read == ["arterial"]
    assert any("this series is arterial" in r and "portal-venous" in r for r in prediction.outside_training)


def test_the_bundled_model_on_the_real_portal_venous_series_is_inside(crlm_dir):
    volume = load_series(crlm_dir)
    document = AnnotationDocument.from_dict(json.loads(open(CRLM_ANNOTATIONS).read()))
    loaded = load_bundle(default_model_path())
    batch = classify_lesions(loaded, volume, document.lesions, heatmap=False)
    assert batch.predictions and not batch.errors
    for prediction in batch.predictions:
        assert prediction.outside_training == [] and prediction.uncertainty in ("low", "moderate", "high")
        assert prediction.phase == "portal_venous"


def test_each_kind_of_departure_is_named(crlm_dir):
    volume = load_series(crlm_dir)
    phase = series_phase(volume)
    assert SIMULATED_PORTAL_VENOUS.check(volume, phase, 20.0) == []
    narrow = TrainingDomain(phases=(ContrastPhase.PORTAL_VENOUS,), liver_hu=(60.0, 80.0), pixel_mm=(0.3, 0.5),
                            slice_thickness_mm=(1.0, 2.0), min_lesion_diameter_mm=10.0, noise_hu=(2.0, 5.0),
                            source="test")
    reasons = narrow.check(volume, phase, 6.0)
    assert len(reasons) == 5
    assert [r.split()[1] for r in reasons] == ["image", "liver", "are", "are", "lesion"]
    assert "5 mm thick" in reasons[3] and "6 mm" in reasons[4]
    assert "not known" in SIMULATED_PORTAL_VENOUS.check(volume, None, 20.0)[0]


def test_a_bundle_records_its_domain_and_older_bundles_get_the_simulators(tmp_path):
    """The bundled model (1.4.0 on) records what it was trained on; a bundle from before (up to 1.3.0, no
    `training_domain` in its model.json) is taken as trained on the simulator's portal-venous lesions."""
    loaded = load_bundle(default_model_path())
    recorded = loaded_domain(loaded)
    assert "training_domain" in loaded.info and recorded.source == "model.json"
    assert recorded.phases == (ContrastPhase.PORTAL_VENOUS,) and recorded.noise_hu is not None
    older = tmp_path / "older"
    shutil.copytree(default_model_path(), older)
    info = json.loads((older / "model.json").read_text())
    del info["training_domain"]
    (older / "model.json").write_text(json.dumps(info))
    assert loaded_domain(load_bundle(older)) is SIMULATED_PORTAL_VENOUS
    round_trip = TrainingDomain.from_model_info({"training_domain": SIMULATED_PORTAL_VENOUS.to_dict()})
    assert round_trip.to_dict() == SIMULATED_PORTAL_VENOUS.to_dict() and round_trip.source == "model.json"


def test_predict_cli_prints_the_phase_and_the_reason(hcc_dir, tmp_path, capsys):
    volume = load_series(hcc_dir)
    doc = AnnotationDocument(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid)
    doc.lesions.append(Lesion(reader="R1", label="hcc",
                              rois=[Roi(70, _circle(150.0, 260.0, 18.0), sop_instance_uid=volume.sop_instance_uids[70])]))
    path = tmp_path / "hcc.json"
    path.write_text(json.dumps(doc.to_dict()))
    assert predict_main([str(hcc_dir), "--annotations", str(path), "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["series"]["contrast_phase"] == "arterial"
    # The reader's held-out macro-F1 per subset of phases and size band, as its file stores them.
    from liverview.model.phase_reader import PHASE_READER_FILE
    from liverview.paths import default_model_path

    stored = json.loads((default_model_path() / PHASE_READER_FILE).read_text())["metrics"]
    quoted = output["model"]["reader_scores"]
    assert set(quoted) == set(stored)
    for subset, scores in stored.items():
        held = scores["heldout"]
        assert quoted[subset]["macro_f1"] == held["macro_f1"]
        assert quoted[subset]["by_size"] == {band: {"n": part["n"], "macro_f1": part["macro_f1"]}
                                             for band, part in held["by_size"].items()}
    lesion = output["lesions"][0]
    assert lesion["uncertainty"] == OUTSIDE and lesion["phases_read"] == ["arterial"] and lesion["outside_training"]
    # The outline's long axis on the slice read, which picks the size band the reader's score is quoted for.
    assert lesion["long_axis_mm"] == pytest.approx(37 * float(volume.spacing_mm[2]), abs=2 * float(volume.spacing_mm[2]))
    assert predict_main([str(hcc_dir), "--annotations", str(path)]) == 0
    text = capsys.readouterr().out
    assert "contrast phase arterial (text only)" in text and "outside the model's training data: the image noise is 25 HU" in text


def test_a_readers_phase_in_the_annotations_is_what_liverview_predict_reads(crlm_dir, tmp_path, capsys):
    """A reader who says the portal-venous series is delayed is believed: the phase reader reads the lesions
    as delayed-phase lesions (without the CNN, which reads portal-venous series)."""
    document = AnnotationDocument.from_dict(json.loads(open(CRLM_ANNOTATIONS).read()))
    from liverview.annotations.document import PhaseCorrection

    document.contrast_phase = PhaseCorrection("delayed", "R2", detected="portal_venous")
    path = tmp_path / "corrected.json"
    path.write_text(json.dumps(document.to_dict()))
    assert AnnotationDocument.from_dict(json.loads(path.read_text())).contrast_phase == document.contrast_phase
    assert predict_main([str(crlm_dir), "--annotations", str(path), "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["series"]["contrast_phase"] == "delayed"
    assert output["series"]["contrast_phase_evidence"]["decided_by"] == "reader"
    assert len(output["lesions"]) == len([lesion for lesion in document.lesions if lesion.rois]) > 0
    assert all(lesion["phases_read"] == ["delayed"] and lesion["model_id"].endswith("+ phase reader")
               and "enhancement_hu" in lesion for lesion in output["lesions"])


def test_a_lesion_outlined_on_another_phase_is_read_on_the_studys_portal_venous_series(crlm_dir, tmp_path, capsys,
                                                                                       resample_series):
    """The outline was drawn on the study's arterial series (here another reconstruction of the real series,
    moved 4 mm by breathing, that its description names arterial). The bundled model reads both phases
    (its phase reader, with the CNN on the portal-venous one); the CNN alone, which knows portal-venous
    series only, has liverview-predict carry the outline to the portal-venous series and read it there."""
    import shutil

    volume = load_series(crlm_dir)
    study = tmp_path / "study"
    shutil.copytree(crlm_dir, study / "venous")
    arterial_dir = resample_series(volume, study / "arterial", (0.0, 4.0, 0.0), volume.frame_of_reference_uid,
                                   description="LIVER ARTERIAL 2.5mm")
    arterial = load_series(arterial_dir)
    reference = AnnotationDocument.from_dict(json.loads(open(CRLM_ANNOTATIONS).read()))
    from liverview.annotations.transfer import transfer_lesion

    outlined = transfer_lesion(reference.lesions[0], volume, arterial, align=True).lesion
    document = AnnotationDocument(arterial.study_uid, arterial.series_uid, arterial.frame_of_reference_uid,
                                  lesions=[outlined])
    path = tmp_path / "arterial.json"
    path.write_text(json.dumps(document.to_dict()))
    assert predict_main([str(study), "--annotations", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    output = json.loads(captured.out)
    phases = {s["description"]: s["contrast_phase"] for s in output["study_series"]}
    assert phases == {"LIVER ARTERIAL 2.5mm": "arterial", "CT CH/AB/PEL": "portal_venous"}
    lesion = output["lesions"][0]
    assert lesion["phases_read"] == ["arterial", "portal_venous"] and lesion["outside_training"] == []
    assert "read_on" not in lesion and set(lesion["enhancement_hu"]) == {"arterial", "portal_venous"}
    cnn_alone = shutil.copytree(default_model_path(), tmp_path / "cnn-alone", ignore=shutil.ignore_patterns("phase_reader*"))
    assert predict_main([str(study), "--annotations", str(path), "--json", "--model", str(cnn_alone)]) == 0
    captured = capsys.readouterr()
    lesion = json.loads(captured.out)["lesions"][0]
    assert lesion["phases_read"] == ["portal_venous"] and lesion["outside_training"] == []
    assert lesion["read_on"]["series_uid"] == volume.series_uid
    assert np.allclose(lesion["read_on"]["breathing_shift_mm"], (0.0, -4.0, 0.0), atol=1.5)
    assert "a phase the model was not trained on" in captured.err


def test_a_clinics_exported_lesions_give_their_size_from_the_outline_box(crlm_export):
    """Records of the app's export carry no simulator parameters: the smallest lesion comes from each
    record's tight box ([[z0, z1], [y0, y1], [x0, x1]]) in mm, and their phase is the series' one."""
    from liverview.model.data import load_records
    from liverview.model.domain import domain_from_records

    records = load_records([crlm_export.folder]).records
    domain = domain_from_records(records)
    sizes = []
    for record in records:
        (_, _), (y0, y1), (x0, x1) = record.extra["lesion_bbox_zyx"]
        spacing = record.extra["spacing_mm"]
        sizes.append(max((y1 - y0) * spacing[1], (x1 - x0) * spacing[2]))
    assert domain.min_lesion_diameter_mm == pytest.approx(min(sizes))
    assert domain.liver_hu is None and domain.noise_hu is None


def test_the_liver_is_compared_with_the_training_livers_of_its_phase(crlm_dir):
    """An arterial liver is darker than a portal-venous one: a domain that knows the liver per phase
    judges each series against its own phase's livers (the phase reader's domain records them)."""
    from dataclasses import replace

    from liverview.imaging.contrast_phase import DecidedBy, PhaseDecision

    volume = load_series(crlm_dir)
    measured = series_phase(volume)  # the real portal-venous liver: about 118 HU
    domain = TrainingDomain(phases=tuple(ContrastPhase), liver_hu=(92.0, 135.0), pixel_mm=None, slice_thickness_mm=None,
                            min_lesion_diameter_mm=None, noise_hu=None, source="test",
                            liver_hu_by_phase={"arterial": (55.0, 95.0)})
    as_arterial = PhaseDecision(ContrastPhase.ARTERIAL, DecidedBy.READER, "test", enhancement=measured.enhancement)
    assert domain.check(volume, measured, None) == []
    reasons = domain.check(volume, as_arterial, None)
    assert len(reasons) == 1 and "training livers were 55-95 HU in this phase" in reasons[0]
    again = TrainingDomain.from_model_info({"training_domain": domain.to_dict()})
    assert again.liver_hu_by_phase == {"arterial": (55.0, 95.0)} and again.check(volume, as_arterial, None) == reasons
    assert replace(domain, liver_hu_by_phase={}).check(volume, as_arterial, None) == []


def test_a_lesion_larger_than_any_training_lesion_is_outside(crlm_dir):
    """Review of real CT: a 120 mm circle over normal liver came back "hcc >99 %, low uncertainty": only the
    smallest training lesion was checked. A bundle of simulated lesions without its own bound gets the
    simulator's largest, which is the simulator's setting."""
    from liverview.model.domain import SIMULATED_MAX_DIAMETER_MM
    from liverview.synth.simulator import SimulatorConfig

    assert SIMULATED_MAX_DIAMETER_MM == SimulatorConfig().diameter_mm[1]
    volume = load_series(crlm_dir)
    domain = loaded_domain(load_bundle(default_model_path()))
    assert domain.max_lesion_diameter_mm == SIMULATED_MAX_DIAMETER_MM
    phase = series_phase(volume)
    assert domain.check(volume, phase, 85.0) == []
    assert domain.check(volume, phase, 120.0) == ["the lesion measures 120 mm; the largest training lesions were 80 mm"]


def test_slices_further_apart_than_the_training_slices_are_outside(crlm_dir, tmp_path):
    """Review of real CT: every other slice of crlm-ct-1004 (10 mm apart, the tag still saying 5 mm thick)
    read "benign cyst 99 %, low uncertainty": the check read the Slice Thickness tag only."""
    import pydicom

    thinned = tmp_path / "every-other"
    thinned.mkdir()
    for path in sorted(crlm_dir.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True)
                                                                    .ImagePositionPatient[2]))[::2]:
        shutil.copy(path, thinned / path.name)
    volume = load_series(thinned)
    assert volume.spacing_mm[0] == pytest.approx(10.0) and volume.info.slice_thickness_mm == pytest.approx(5.0)
    reasons = loaded_domain(load_bundle(default_model_path())).check(volume, series_phase(volume), 20.0)
    assert reasons == ["slices are 10 mm apart; the training images had theirs 2.5-5 mm apart"]


def test_outlines_go_to_the_images_they_were_drawn_on(crlm_dir, tmp_path):
    """Review of real CT: on a copy with every other slice left out, the outlines were read at their old
    slice numbers (other anatomy, "benign cyst >99 %, low"): the image UIDs they carry were ignored."""
    import pydicom

    from liverview.annotations.annotated_study import open_annotated_study

    thinned = tmp_path / "every-other"
    thinned.mkdir()
    ordered = sorted(crlm_dir.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True)
                                                                  .ImagePositionPatient[2]))
    for path in ordered[::2]:
        shutil.copy(path, thinned / path.name)
    opened = open_annotated_study(thinned, CRLM_ANNOTATIONS)
    (lesion,) = opened.document.lesions
    original = AnnotationDocument.from_dict(json.loads(open(CRLM_ANNOTATIONS).read())).lesions[0]
    kept = [roi for roi in original.rois if roi.slice_index % 2 == 0]
    assert [roi.slice_index for roi in lesion.rois] == [roi.slice_index // 2 for roi in kept]
    assert all(opened.volume.sop_instance_uids[roi.slice_index] == roi.sop_instance_uid for roi in lesion.rois)
    assert any("lie on images this series does not hold" in note for note in opened.notes)
    assert any("placed on the slice of the image they were drawn on" in note for note in opened.notes)
    # The series as outlined: nothing moves, nothing is said.
    whole = open_annotated_study(crlm_dir, CRLM_ANNOTATIONS)
    assert [r.slice_index for r in whole.document.lesions[0].rois] == [r.slice_index for r in original.rois]
    assert not any("image" in note for note in whole.notes)


def test_an_outline_off_the_liver_is_outside_the_training_data(crlm_dir):
    """Review of real CT: outlines on the spleen ("hcc 99 %, low uncertainty"), a kidney, the aorta, muscle
    or the air outside the patient got answers as if they were liver lesions."""
    volume = load_series(crlm_dir)
    loaded = load_bundle(default_model_path())
    places = {"spleen": (24, 365.0, 290.0), "air": (24, 40.0, 40.0), "kidney": (10, 175.0, 265.0),
              "muscle": (24, 200.0, 370.0), "liver": (24, 150.0, 230.0)}
    lesions = [Lesion(id=name, reader="R1", rois=[Roi(z, _circle(x, y, 12.5), sop_instance_uid=volume.sop_instance_uids[z])])
               for name, (z, x, y) in places.items()]
    batch = classify_lesions(loaded, volume, lesions, heatmap=False)
    said = {p.lesion_id: p.outside_training for p in batch.predictions}
    for name in ("spleen", "air", "kidney", "muscle"):
        assert any("of the outline lies on the liver" in r for r in said[name]), name
    assert said["liver"] == []


def test_a_left_lobe_lesion_is_not_taken_for_one_off_the_liver(demo_study):
    """The liver finder measures parenchyma on the patient's right; the demo's cyst in the left lobe lies
    off it, in front on the left, where nothing is concluded."""
    from liverview.annotations.measurements import lesion_key_slice, slice_masks
    from liverview.model.classify import share_on_liver

    volume = load_series(demo_study.dicom_dir)
    document = AnnotationDocument.from_dict(json.loads(demo_study.ground_truth_path.read_text()))
    shares = [share_on_liver(volume, z, slice_masks(volume, lesion)[z])
              for lesion in document.lesions for z in [lesion_key_slice(volume, lesion)]]
    assert None in shares and all(s is None or s > 0.9 for s in shares)
