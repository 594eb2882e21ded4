"""Releasing a training run as the bundled model: only when better, with the real-data check in the card."""
from __future__ import annotations

import csv
import json

import pytest

from liverview.model.inference import load_bundle
from liverview.imaging.lesion_enhancement import FEATURES
from liverview.model.phase_reader import PhaseReader
from liverview.model.structure_reader import StructureNet
from liverview.model.release import PAPER, ReleaseError, main, release_model


@pytest.fixture(scope="module")
def runs(toy_dataset, tmp_path_factory):
    from liverview.model.train_cli import main as train

    root = tmp_path_factory.mktemp("release")
    common = [str(toy_dataset), "--arch", "tiny_cnn", "--input-size", "48", "--epochs", "2", "--batch-size", "8",
              "--seed", "4", "-q"]
    assert train(common + ["--out", str(root / "plain")]) == 0
    assert train(common + ["--out", str(root / "enhanced"), "--denoise", "bilateral", "--clahe"]) == 0
    return root / "plain", root / "enhanced"


@pytest.fixture(scope="module")
def metastases(demo_study, tmp_path_factory):
    """The demo study's metastases only: a reference set with one label, like the real series'."""
    truth = json.loads(demo_study.ground_truth_path.read_text())
    truth["lesions"] = [lesion for lesion in truth["lesions"] if lesion["label"] == "metastasis"]
    truth["lesions"][0]["note"] = "outlined by a developer, not a radiologist"
    path = tmp_path_factory.mktemp("refs") / "metastases.json"
    path.write_text(json.dumps(truth))
    return path, len(truth["lesions"])


def test_release_installs_a_verified_bundle_with_its_card(runs, demo_study, metastases, tmp_path):
    plain, enhanced = runs
    target = tmp_path / "models" / "liver-lesion-classifier"
    references, n = metastases
    info = release_model(plain, target, sanity_series=demo_study.dicom_dir, sanity_annotations=references,
                         compare=[enhanced], recipe="make model")
    loaded = load_bundle(target)
    assert loaded.info["sha256"] == info["sha256"]
    check = info["sanity_checks"]["dicom"]
    assert check["lesions"] == n and check["expected"] == "metastasis"
    assert sum(check["predicted_counts"].values()) == n
    assert [row["preprocessing"] for row in info["enhancement_comparison"]] == [
        "key slice +- 1, denoise none, CLAHE off, answer averaged over flips",
        "key slice +- 1, denoise bilateral, CLAHE on, answer averaged over flips"]
    trained = json.loads((plain / "split.json").read_text())["train"]
    assert [row["n_train"] for row in info["enhancement_comparison"]] == [len(trained)] * 2
    assert "replaces" not in info and "## What it replaces" not in (target / "MODEL_CARD.md").read_text()
    card = (target / "MODEL_CARD.md").read_text()
    for needle in ("simulated lesions", "Confusion matrix", "Real-data sanity check", PAPER[:40], "make model",
                   "With and without image enhancement", "Not a medical device"):
        assert needle in card, needle
    assert (target / "confusion_cnn.png").stat().st_size > 1000
    bands = info["accuracy_by_size"]
    with open(plain / "report" / "predictions_cnn.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(band["n"] for band in bands) == len(rows)
    correct = sum(row["true"] == row["predicted"] for row in rows)
    assert sum(band["accuracy"] * band["n"] for band in bands) == pytest.approx(correct)
    assert "## Accuracy by lesion size" in card
    variants = info["accuracy_by_variant"]
    assert sum(row["n"] for row in variants) == len(rows)
    assert sum(row["accuracy"] * row["n"] for row in variants) == pytest.approx(correct)
    assert {row["variant"].split(":")[0] for row in variants} <= {row["true"] for row in rows}
    assert "## Accuracy by simulated appearance" in card and variants[0]["variant"] in card
    noise = info["accuracy_by_noise"]
    assert sum(row["n"] for row in noise) == len(rows)
    assert sum(row["accuracy"] * row["n"] for row in noise) == pytest.approx(correct)
    assert {row["size"] for row in noise} <= {"< 20 mm", ">= 20 mm"} and "## Accuracy by image noise" in card
    assert "outlined by a developer, not a radiologist" in card
    assert "Below the project's target of test macro-F1 >= 0.95" in card  # two epochs of a tiny CNN
    assert not list(target.parent.glob(".*staging"))


def test_a_model_that_is_not_better_is_refused(runs, tmp_path):
    plain, enhanced = runs
    target = tmp_path / "bundled"
    release_model(plain, target)
    release_model(plain, target)  # the same weights again (`make model` reproduced them): the card is refreshed
    installed = json.loads((target / "model.json").read_text())
    installed["metrics"]["macro_f1"] = 1.0  # as if the bundled model were better than any run here
    (target / "model.json").write_text(json.dumps(installed))
    with pytest.raises(ReleaseError, match="not better"):
        release_model(enhanced, target)
    before = (target / "model.json").read_text()
    assert main([str(enhanced), str(target)]) == 2
    assert (target / "model.json").read_text() == before
    assert main([str(enhanced), str(target), "--force"]) == 0
    replaced = json.loads(before)
    info = json.loads((target / "model.json").read_text())
    assert info["replaces"]["sha256"] == replaced["sha256"]
    assert info["replaces"]["macro_f1"] == replaced["metrics"]["macro_f1"]
    assert "Its weights stay in the repository history" in (target / "MODEL_CARD.md").read_text()
    # The same weights released again (say for a newer card) still replace what they replaced.
    assert main([str(enhanced), str(target), "--force"]) == 0
    assert json.loads((target / "model.json").read_text())["replaces"] == info["replaces"]


def test_the_card_says_when_the_replaced_models_figures_come_from_other_test_lesions(runs, tmp_path):
    """1.4.0 replaced 1.3.0 after the simulator changed: the card quoted 1.3.0's test macro-F1 (0.914, on
    generator 1's lesions) under 1.4.0's (0.945, on generator 2's) as if they compared. The same run
    released over itself keeps its phase reader (fitted to those weights) and compares like with like."""
    plain, enhanced = runs
    target = tmp_path / "bundled"
    release_model(plain, target)
    info = json.loads((target / "model.json").read_text())
    for dataset in info["training_data"]["datasets"]:
        dataset["created"] = "2020-01-01T00:00:00+00:00"  # as if drawn by an older simulator
    (target / "model.json").write_text(json.dumps(info))
    release_model(enhanced, target, force=True)
    card = (target / "MODEL_CARD.md").read_text()
    assert json.loads((target / "model.json").read_text())["replaces"]["same_test_lesions"] is False
    assert "they do not compare with the figures above" in card
    installed = load_bundle(target)
    network = StructureNet(len(installed.classes), len(FEATURES), 1)
    PhaseReader(list(installed.classes), ("portal_venous",), "portal_venous", installed.info["sha256"], {},
                network=network).save(target)
    (target / "PHASE_READER.md").write_text("# reader")
    release_model(enhanced, target, force=True)
    kept = load_bundle(target).phase_reader
    assert kept is not None and kept.network is not None and (target / "PHASE_READER.md").is_file()
    other = tmp_path / "other"
    release_model(plain, other)
    release_model(enhanced, other, force=True)
    assert json.loads((other / "model.json").read_text())["replaces"]["same_test_lesions"] is True
    assert "do not compare" not in (other / "MODEL_CARD.md").read_text()


def test_an_unfinished_run_is_refused(tmp_path):
    with pytest.raises(ReleaseError, match="no finished model bundle"):
        release_model(tmp_path / "nothing", tmp_path / "target")
