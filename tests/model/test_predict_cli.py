"""liverview-predict on the demo study: JSON, heatmap PNGs, a DICOM SEG as input, clear errors."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from liverview.model.bundle_writer import save_bundle
from liverview.model.network import build_network
from liverview.model.predict_cli import main
from liverview.model.transforms import PreprocessConfig

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(11)
    return save_bundle(tmp_path_factory.mktemp("predict") / "bundle", build_network("tiny_cnn", 4),
                       architecture="tiny_cnn", classes=CLASSES, preprocess_config=PreprocessConfig(size=64),
                       metrics={"macro_f1": 0.3}, name="tiny", version="9")


def test_json_and_heatmaps_for_every_lesion(demo_study, bundle, tmp_path, capsys):
    heatmaps = tmp_path / "heatmaps"
    status = main([str(demo_study.dicom_dir), "--annotations", str(demo_study.ground_truth_path),
                   "--model", str(bundle), "--json", "--heatmaps", str(heatmaps), "--device", "cpu"])
    assert status == 0
    output = json.loads(capsys.readouterr().out)
    assert output["model"]["name"] == "tiny" and output["model"]["classes"] == CLASSES
    assert output["model"]["device"] == "cpu"
    truth = json.loads(demo_study.ground_truth_path.read_text())
    assert truth["lesions"]
    assert [entry["id"] for entry in output["lesions"]] == [lesion["id"] for lesion in truth["lesions"]]
    # The app's names for them (its table and tags say L1, L2, …; the output gave only the ids).
    assert [entry["number"] for entry in output["lesions"]] == [f"L{n}" for n in range(1, len(truth["lesions"]) + 1)]
    for entry, lesion in zip(output["lesions"], truth["lesions"]):
        assert entry["label"] == lesion["label"] and entry["label"] in CLASSES  # comparable with `predicted`
        assert entry["predicted"] in CLASSES
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert entry["predicted"] == max(entry["probabilities"], key=entry["probabilities"].get)
        image = cv2.imread(entry["heatmap"])
        assert image is not None and image.shape == (448, 448, 3)
        assert image.std() > 5  # an image, not a blank square
    assert output["errors"] == []


def test_a_dicom_seg_as_annotations(demo_study, bundle, tmp_path, capsys):
    from liverview.annotations.export_cli import main as export_main

    assert export_main([str(demo_study.dicom_dir), "--annotations", str(demo_study.ground_truth_path), "--to", "seg",
                        "--out", str(tmp_path / "seg"), "--no-pseudonymize"]) == 0
    seg = next((tmp_path / "seg").glob("*.dcm"))
    capsys.readouterr()
    assert main([str(demo_study.dicom_dir), "--annotations", str(seg), "--model", str(bundle), "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    truth = json.loads(demo_study.ground_truth_path.read_text())
    assert len(output["lesions"]) == len(truth["lesions"])
    assert sorted(entry["label"] for entry in output["lesions"]) == sorted(lesion["label"] for lesion in truth["lesions"])
    # A pseudonymised SEG placed with this installation's key: said once, as a note, not also as a WARNING log line.
    assert export_main([str(demo_study.dicom_dir), "--annotations", str(demo_study.ground_truth_path), "--to", "seg",
                        "--out", str(tmp_path / "pseudonymised")]) == 0
    seg = next((tmp_path / "pseudonymised").glob("*-seg.dcm"))
    capsys.readouterr()
    assert main([str(demo_study.dicom_dir), "--annotations", str(seg), "--model", str(bundle), "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("pseudonymised export of this series") == 1 and "note: " in err


def table_rows(out: str) -> dict[str, list[str]]:
    """The table's lines by lesion number: its row, then the lines under it."""
    rows: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines()[2:]:
        if line[:4].strip().startswith("L"):
            current = line[:4].strip()
            rows[current] = []
        if current is not None:
            rows[current].append(line)
    return rows


def test_human_readable_table_says_what_the_panel_says(demo_study, bundle, tmp_path, capsys):
    """The table quoted one accuracy line for the whole model, led an answer nobody should take with its
    class and percentage, and never said a model was untested; the app's Model panel does all three."""
    by_level = [{"uncertainty": "low", "n": 30, "coverage": 0.75, "accuracy": 0.9, "macro_f1": 0.9},
                {"uncertainty": "moderate", "n": 10, "coverage": 0.25, "accuracy": 0.6, "macro_f1": 0.5},
                {"uncertainty": "high", "n": 12, "coverage": 0.0, "accuracy": 0.5, "macro_f1": 0.4},
                {"uncertainty": "low + moderate", "n": 40, "coverage": 1.0, "accuracy": 0.825, "macro_f1": 0.8}]
    torch.manual_seed(11)
    measured = save_bundle(tmp_path / "measured", build_network("tiny_cnn", 4), architecture="tiny_cnn",
                           classes=CLASSES, preprocess_config=PreprocessConfig(size=64),
                           metrics={"macro_f1": 0.3, "by_uncertainty": by_level}, name="tiny", version="9")
    args = [str(demo_study.dicom_dir), "--annotations", str(demo_study.ground_truth_path), "--model", str(measured)]
    assert main(args + ["--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["lesions"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "research use only" in out and "untested" not in out
    rows = table_rows(out)
    assert sorted(rows) == sorted(entry["number"] for entry in entries)
    said = {"low": "right in 27 of 30 (90%)", "moderate": "right in 6 of 10 (60%)", "high": "right in 6 of 12 (50%)"}
    for entry in entries:
        lines = rows[entry["number"]]
        assert f"slice {entry['slice']}" in lines[0]
        if entry["outside_training"]:
            assert lines[0].split(None, 2)[2].startswith("outside the model's training data; it would answer")
            assert "%" not in lines[0]
            assert not any("right in" in line for line in lines)
        elif entry["refusal"]:
            assert "no class leads" in lines[0] and "label this lesion yourself" in lines[0]
            assert not any("right in" in line for line in lines)
        else:
            assert f"uncertainty {entry['uncertainty']}" in lines[0]
            assert said[entry["uncertainty"]] in " ".join(line.strip() for line in lines[1:])  # wrapped at 100
            assert all(len(line) <= 100 for line in lines[1:])
    untested = save_bundle(tmp_path / "untested", build_network("tiny_cnn", 4), architecture="tiny_cnn",
                           classes=CLASSES, preprocess_config=PreprocessConfig(size=64), metrics={},
                           name="tiny", version="9")
    assert main(args[:-1] + [str(untested)]) == 0
    assert "untested: no held-out test lesions" in capsys.readouterr().out.splitlines()[0]


def test_a_phase_readers_answer_quotes_the_phase_readers_figures():
    from liverview.model.predict_cli import measured_accuracy

    model = {"simulated": True, "by_uncertainty": [{"uncertainty": "low", "n": 439, "accuracy": 1.0}],
             "reader_by_uncertainty": {"arterial + portal_venous": [{"uncertainty": "low", "n": 930,
                                                                      "accuracy": 925 / 930}]},
             "reader_simulated": True,
             "reader_scores": {"arterial + portal_venous": {"macro_f1": 0.977, "by_size": {
                 "under 20 mm": {"n": 40, "macro_f1": 0.946}, "20 mm and over": {"n": 60, "macro_f1": 0.998}}}}}
    read = {"model_id": "m (abc) + phase reader", "phases_read": ["arterial", "portal_venous"], "uncertainty": "low"}
    assert measured_accuracy(model, read) == ("On its simulated test lesions read on these phases, answers shown "
                                              "with low uncertainty were right in 925 of 930 (99%). At every "
                                              "uncertainty together, its macro-F1 on them: 0.977 (under 20 mm, 40 "
                                              "lesions: 0.946; 20 mm and over, 60 lesions: 0.998). How often it "
                                              "is right on real CT has not been measured.")
    # Where the lesion's size is known, its own size band is quoted.
    small = {**read, "long_axis_mm": 14.2}
    assert ("its macro-F1 on them: 0.977; on those under 20 mm, as this one is (14.2 mm): 0.946 (40 lesions). How "
            "often") in measured_accuracy(model, small)
    large = {**read, "long_axis_mm": 20.0}
    assert "on those 20 mm and over, as this one is (20.0 mm): 0.998 (60 lesions)." in measured_accuracy(model, large)
    # Just under 20 mm stays in its band and is not shown as 20.0.
    just_under = {**read, "long_axis_mm": 19.96}
    assert "on those under 20 mm, as this one is (19.9 mm): 0.946" in measured_accuracy(model, just_under)
    # A band none of the scored lesions fell in is said so, not replaced by the other band's score.
    only_large = {**model, "reader_scores": {"arterial + portal_venous": {"macro_f1": 0.977, "by_size": {
        "20 mm and over": {"n": 60, "macro_f1": 0.998}}}}}
    said = measured_accuracy(only_large, small)
    assert "its macro-F1 on them: 0.977; none of those was under 20 mm, as this one is (14.2 mm)." in said
    assert "0.998" not in said
    # With no lesion measured at that uncertainty, the macro-F1 on these phases still stands.
    unsure = {**read, "uncertainty": "high"}
    assert measured_accuracy(model, unsure) == ("On its simulated test lesions read on these phases, its macro-F1: "
                                                "0.977 (under 20 mm, 40 lesions: 0.946; 20 mm and over, 60 lesions: "
                                                "0.998). How often it is right on real CT has not been measured.")
    alone = {"model_id": "m (abc)", "phases_read": ["portal_venous"], "uncertainty": "low"}
    assert "right in 439 of 439 (100%)" in measured_accuracy(model, alone)
    # A reader scored on a clinic's own lesions does not call them simulated, though its CNN's were.
    clinic = {**model, "reader_simulated": False, "reader_scores": {}}
    assert measured_accuracy(clinic, read) == ("On its test lesions read on these phases, answers shown with low "
                                               "uncertainty were right in 925 of 930 (99%).")
    assert "simulated test lesions" in measured_accuracy(clinic, alone)


def test_errors_are_one_line_and_exit_1(demo_study, bundle, tmp_path, capsys):
    missing = tmp_path / "no-model"
    assert main([str(demo_study.dicom_dir), "--annotations", str(demo_study.ground_truth_path),
                 "--model", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("liverview-predict: error:") and "no-model" in err

    not_annotations = tmp_path / "notes.txt"
    not_annotations.write_bytes(np.arange(300, dtype=np.uint8).tobytes())
    assert main([str(demo_study.dicom_dir), "--annotations", str(not_annotations), "--model", str(bundle)]) == 1
    assert "neither a DICOM SEG nor a liverview annotation JSON" in capsys.readouterr().err
