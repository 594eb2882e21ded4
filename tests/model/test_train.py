"""Training on CPU: loss goes down, runs resume exactly, the CLIs write report + bundle."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch

from liverview.progress import Cancelled
from liverview.model.inference import load_bundle
from liverview.model.split import Split, find_group_leaks
from liverview.model.train import TrainConfig, TrainingError, resume_training, train_model
from liverview.model.transforms import AugmentConfig, PreprocessConfig

NO_AUGMENT = AugmentConfig(rotation_deg=0, zoom=0, shift=0, hflip=False, vflip=False, hu_offset=0, hu_scale=0,
                           noise_hu=0, gamma=0)


def _config(datasets, **changes) -> TrainConfig:
    values = dict(datasets=[str(d) for d in datasets], architecture="tiny_cnn", epochs=3, batch_size=8, lr=3e-3,
                  baseline=False, patience=50, preprocess=PreprocessConfig(size=32))
    values.update(changes)
    return TrainConfig(**values)


def test_a_few_epochs_lower_the_loss(toy_dataset, tmp_path):
    messages = []
    config = _config([toy_dataset], epochs=8, preprocess=PreprocessConfig(size=32, augment=NO_AUGMENT))
    result = train_model(config, tmp_path / "run", progress=lambda f, m: messages.append((f, m)))
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 8 and result.stopped_by == "max epochs"
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    assert messages[-1][0] == 1.0 and all(0 <= f <= 1 for f, _ in messages)
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "best.pt").is_file() and (checkpoints / "last.pt").is_file()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
    # Walkthrough review: a clinic's model appeared as "liverview-lesion-classifier 0.1.0", next to the
    # bundled "liver-lesion-classifier 1.4.0". Its name says where it was trained, its version when.
    bundle = load_bundle(tmp_path / "run" / "bundle")
    assert bundle.name == "locally-trained-lesion-classifier"
    assert re.fullmatch(r"20\d\d\.\d\d\.\d\d\.\d{4}", bundle.version)
    # Trained channels-last, stored contiguous: the files keep the layout every reader expects.
    for state in (torch.load(checkpoints / "best.pt", weights_only=True),
                  torch.load(checkpoints / "last.pt", weights_only=True)["model"],
                  torch.load(tmp_path / "run" / "bundle" / "weights.pt", weights_only=True)):
        assert any(t.ndim == 4 for t in state.values())
        assert all(t.is_contiguous() for t in state.values())


def test_stopped_run_resumes_to_the_same_weights(toy_dataset, tmp_path):
    config = _config([toy_dataset], epochs=4, lr_schedule="plateau", lr_patience=0)
    straight = train_model(config, tmp_path / "straight")

    calls = {"n": 0}

    def stop_in_third_epoch() -> bool:  # checked after each of the 2 steps and at each epoch's end
        calls["n"] += 1
        return calls["n"] >= 7  # epoch 3, step 1

    with pytest.raises(Cancelled, match="--resume"):
        train_model(config, tmp_path / "stopped", should_stop=stop_in_third_epoch)
    assert json.loads((tmp_path / "stopped" / "history.json").read_text())[-1]["epoch"] == 2
    assert json.loads((tmp_path / "stopped" / "run.json").read_text())["status"] == "cancelled"
    with pytest.raises(TrainingError, match="already holds a training run"):
        train_model(config, tmp_path / "stopped")
    resumed = resume_training(tmp_path / "stopped")
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in straight.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6) and a["lr"] == b["lr"]
    load = lambda run: torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]  # noqa: E731
    sa, sb = load(tmp_path / "straight"), load(tmp_path / "stopped")
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)
    # More epochs on a finished run continue it.
    longer = resume_training(tmp_path / "straight", overrides={"epochs": 5})
    assert [h["epoch"] for h in longer.history] == [1, 2, 3, 4, 5]
    with pytest.raises(TrainingError, match="cannot change 'lr'"):
        resume_training(tmp_path / "straight", overrides={"lr": 1.0})


def test_training_only_dataset_trains_but_is_never_validated_or_tested(toy_dataset, toy_dataset_b, tmp_path):
    from liverview.model.data import load_records
    from liverview.model.train_cli import _config_from_args, build_parser

    args = build_parser().parse_args([str(toy_dataset), "--train-only", str(toy_dataset_b), "--out", "r"])
    assert _config_from_args(args).training_only_datasets == [str(toy_dataset_b)]
    config = _config([toy_dataset], training_only_datasets=[str(toy_dataset_b)], epochs=1)
    result = train_model(config, tmp_path / "run")
    split = Split.load(tmp_path / "run" / "split.json")
    extra = {r.uid for r in load_records([toy_dataset_b]).records}
    own = {r.uid for r in load_records([toy_dataset]).records}
    assert set(split.training_only) == extra and extra <= set(split.train)
    assert set(split.val) | set(split.test) <= own and split.val and split.test
    tested = [line.split(",")[0] for line in (result.report_dir / "predictions_cnn.csv").read_text().splitlines()[1:]]
    assert sorted(tested) == sorted(split.test)
    bundle = load_bundle(result.bundle_dir)
    assert [d.get("role") for d in bundle.info["training_data"]["datasets"]] == [None, "training only"]
    descriptions = {d["description"] for d in bundle.info["training_data"]["datasets"]}
    assert len(descriptions) == 1 and bundle.info["training_data"]["description"] == descriptions.pop()
    assert f"{len(extra)} of the training lesions come from datasets given for training only" in \
        (result.bundle_dir / "MODEL_CARD.md").read_text()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training_only_datasets"] == [str(toy_dataset_b)]


@pytest.fixture(scope="module")
def cli_run(toy_dataset, toy_dataset_b, tmp_path_factory):
    from liverview.model.train_cli import main

    run = tmp_path_factory.mktemp("cli") / "run"
    code = main([str(toy_dataset), str(toy_dataset_b), "--out", str(run), "--arch", "tiny_cnn", "--input-size", "48",
                 "--epochs", "2", "--batch-size", "8", "--seed", "3", "--denoise", "bilateral", "--clahe", "-q"])
    assert code == 0
    return run


def test_cli_writes_report_and_bundle(cli_run):
    run = cli_run
    report = run / "report"
    for name in ("report.md", "metrics.json", "accuracy_curves.png", "loss_curves.png", "confusion_cnn.png",
                 "roc_cnn.png", "reliability_cnn.png", "confusion_baseline.png", "predictions_cnn.csv"):
        assert (report / name).is_file(), name
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["results"]) == {"cnn", "baseline"}
    cnn = metrics["results"]["cnn"]
    for key in ("accuracy", "macro_f1", "per_class", "roc_auc", "macro_roc_auc", "ece", "confusion_matrix"):
        assert key in cnn
    text = (report / "report.md").read_text()
    assert "![confusion matrix](confusion_cnn.png)" in text and "![loss curves](loss_curves.png)" in text
    split = Split.load(run / "split.json")
    assert find_group_leaks(split) == [] and split.seed == 3
    loaded = load_bundle(run / "bundle")
    assert loaded.info["preprocessing"]["denoise"] == "bilateral" and loaded.preprocess_config.clahe
    assert loaded.info["metrics"]["macro_f1"] == pytest.approx(cnn["macro_f1"])
    assert loaded.info["metrics"]["by_uncertainty"] == cnn["by_uncertainty"]
    assert "| uncertainty shown | lesions |" in (run / "bundle" / "MODEL_CARD.md").read_text()
    assert loaded.flip_average and loaded.info["inference"]["flips"] == [[], [-1], [-2], [-2, -1]]
    # New models read the key slice and its neighbours; a saved config without the setting reads one slice.
    assert loaded.preprocess_config.neighbour_slices == 1 and loaded.input_size == (9, 48, 48)
    from liverview.model.train import TrainConfig

    assert TrainConfig(datasets=["x"]).preprocess.neighbour_slices == 1
    assert TrainConfig.from_dict({"datasets": ["x"], "preprocess": {"size": 48}}).preprocess.neighbour_slices == 0
    config = json.loads((run / "config.json").read_text())
    assert loaded.info["training_data"]["simulated"] is True and loaded.info["training_data"]["n_lesions"] == 36
    # What the training lesions covered travels with the bundle, so the app can say when an input is outside it.
    from liverview.model.data import load_records
    from liverview.model.domain import TrainingDomain

    domain = TrainingDomain.from_model_info(loaded.info)
    assert domain.source == "model.json" and [p.value for p in domain.phases] == ["portal_venous"]
    train_records = [r for r in load_records(config["datasets"]).records if r.uid in set(split.train)]
    pixels = [(r.extra["spacing_mm"][1] * r.extra["spacing_mm"][2]) ** 0.5 for r in train_records]
    assert domain.pixel_mm == pytest.approx((min(pixels), max(pixels)))
    noises = [r.extra["synth"]["patient"]["noise_sigma_hu"] for r in train_records]
    assert domain.noise_hu == pytest.approx((min(noises), max(noises)))
    assert domain.min_lesion_diameter_mm == pytest.approx(
        min(2 * max(r.extra["synth"]["radii_mm_zyx"]) for r in train_records))
    assert config["architecture"] == "tiny_cnn" and len(config["datasets"]) == 2


def test_cli_refuses_an_existing_run_and_resumes_a_finished_one(cli_run, toy_dataset):
    from liverview.model.train_cli import main

    assert main([str(toy_dataset), "--out", str(cli_run), "--arch", "tiny_cnn", "-q"]) == 1
    assert main(["--resume", str(cli_run), "--no-baseline", "-q"]) == 0
    with pytest.raises(SystemExit):
        main(["--out", str(cli_run / "x"), "--arch", "tiny_cnn", "-q"])  # no dataset


def test_a_dataset_the_model_never_saw_gets_no_training_warning(cli_run, tiny_dataset, tmp_path):
    from liverview.model.evaluate_cli import main

    assert main([str(cli_run / "bundle"), str(tiny_dataset), "--out", str(tmp_path / "new"), "-q"]) == 0
    assert "Warning" not in (tmp_path / "new" / "report.md").read_text()


def test_evaluate_cli(cli_run, toy_dataset, toy_dataset_b, tmp_path):
    from liverview.model.evaluate_cli import main

    out = tmp_path / "eval"
    assert main([str(cli_run / "bundle"), str(toy_dataset), str(toy_dataset_b), "--out", str(out), "--split",
                 str(cli_run / "split.json"), "--baseline", "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    run_metrics = json.loads((cli_run / "report" / "metrics.json").read_text())
    assert metrics["results"]["cnn"]["confusion_matrix"] == run_metrics["results"]["cnn"]["confusion_matrix"]
    assert metrics["results"]["cnn"]["macro_f1"] == pytest.approx(run_metrics["results"]["cnn"]["macro_f1"])
    # The end of training and liverview-evaluate read the same uncertainty for every lesion.
    by_level = metrics["results"]["cnn"]["by_uncertainty"]
    assert [r["n"] for r in by_level] == [r["n"] for r in run_metrics["results"]["cnn"]["by_uncertainty"]]
    assert sum(r["n"] for r in by_level[:3]) == metrics["results"]["cnn"]["n"]
    with open(out / "predictions_cnn.csv") as fh, open(cli_run / "report" / "predictions_cnn.csv") as run_fh:
        levels, run_levels = ([row["uncertainty"] for row in csv.DictReader(f)] for f in (fh, run_fh))
    assert levels == run_levels and set(levels) <= {"low", "moderate", "high"}
    assert "By the uncertainty the app shows" in (out / "report.md").read_text()
    assert "baseline" in metrics["results"] and (out / "loss_curves.png").is_file()
    # Without a split: every labelled lesion.
    all_out = tmp_path / "all"
    assert main([str(cli_run / "bundle"), str(toy_dataset), "--out", str(all_out), "-q"]) == 0
    assert json.loads((all_out / "metrics.json").read_text())["results"]["cnn"]["n"] == 24
    # Walkthrough review: evaluating the very lesions the model trained on read as any evaluation.
    assert "**Warning:" in (all_out / "report.md").read_text() and "trained this model" in (all_out / "report.md").read_text()
    assert "Warning" not in (out / "report.md").read_text()  # the run's held-out test subset
    assert main([str(tmp_path / "no-bundle"), str(toy_dataset), "--out", str(tmp_path / "x"), "-q"]) == 1
    # --baseline fits on a run's train part: without --split it is a usage error, not a warning and success.
    with pytest.raises(SystemExit) as usage:
        main([str(cli_run / "bundle"), str(toy_dataset), "--out", str(tmp_path / "y"), "--baseline", "-q"])
    assert usage.value.code == 2 and not (tmp_path / "y").exists()


def test_weight_average_is_what_is_validated_checkpointed_and_resumed(toy_dataset, tmp_path):
    config = _config([toy_dataset], epochs=3, lr_schedule="cosine", ema_decay=0.9)
    straight = train_model(config, tmp_path / "straight")
    last = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    assert int(last["ema"]["n_averaged"]) == 6  # one update per optimizer step: 2 steps x 3 epochs
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert averaged.keys() == last["model"].keys()
    assert any(not torch.equal(averaged[k], last["model"][k]) for k in averaged if averaged[k].is_floating_point())

    one = train_model(_config([toy_dataset], epochs=1, ema_decay=0.9), tmp_path / "one")
    assert one.best_epoch == 1
    best = torch.load(tmp_path / "one" / "checkpoints" / "best.pt", weights_only=True)
    last_one = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(best[k], last_one["ema"]["module." + k]) for k in best)
    assert any(not torch.equal(best[k], last_one["model"][k]) for k in best if best[k].is_floating_point())
    bundle = load_bundle(tmp_path / "one" / "bundle")
    assert all(torch.equal(bundle.model.state_dict()[k].cpu(), best[k]) for k in best)
    card = (tmp_path / "one" / "bundle" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "weight_average: `\"exponential moving average, decay 0.9 per step\"`" in card
    assert "lr_schedule: `\"plateau\"`" in card

    calls = {"n": 0}

    def stop_after_second_epoch() -> bool:
        calls["n"] += 1
        return calls["n"] >= 6  # 2 steps + the epoch's end, twice

    with pytest.raises(Cancelled):
        train_model(config, tmp_path / "stopped", should_stop=stop_after_second_epoch)
    resumed = resume_training(tmp_path / "stopped")
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in straight.history],
                                                                      rel=1e-5)
    again = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=True)["ema"]
    assert all(torch.allclose(again[k].float(), last["ema"][k].float(), atol=1e-6) for k in again)


def test_weight_average_warms_up_from_the_initial_weights():
    from liverview.model.train import _make_ema

    net = torch.nn.Linear(3, 2)
    first = net.weight.detach().clone()
    ema = _make_ema(TrainConfig(datasets=[], ema_decay=0.998), net)
    ema.update_parameters(net)  # the first update copies
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update_parameters(net)  # decay (1 + 1) / (10 + 1), not 0.998: the random start fades fast
    assert torch.allclose(ema.module.weight, first + 9 / 11, atol=1e-6)
    for _ in range(5000):
        ema.update_parameters(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    before = ema.module.weight.detach().clone()
    ema.update_parameters(net)  # long after the warm-up: the configured decay
    assert torch.allclose(ema.module.weight, before + 0.002 * (net.weight - before), atol=1e-6)
    assert _make_ema(TrainConfig(datasets=[]), net) is None


def test_fine_tuning_starts_from_a_bundle_and_maps_the_head_by_class(cli_run, tmp_path):
    from liverview.model.network import build_network, find_class_head
    from liverview.model.train import load_initial_weights

    start = load_bundle(cli_run / "bundle")
    config = _config(["x"], preprocess=start.preprocess_config, init_from=str(cli_run / "bundle"))
    torch.manual_seed(0)
    net = build_network("tiny_cnn", 4, start.preprocess_config.channels)
    record = load_initial_weights(net, config)
    theirs = start.model.state_dict()
    for key, value in net.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    assert record["sha256"] == start.info["sha256"] and record["new_classes"] == []

    # Another order of the classes and one the bundle never saw: rows follow the class ids.
    classes = ["metastasis", "fnh", "benign_cyst", "hcc", "hemangioma"]
    config = _config(["x"], preprocess=start.preprocess_config, classes=classes, init_from=str(cli_run / "bundle"))
    torch.manual_seed(0)
    net = build_network("tiny_cnn", len(classes), start.preprocess_config.channels)
    head = find_class_head(net)
    fresh = net.state_dict()[f"{head}.weight"].clone()
    record = load_initial_weights(net, config)
    weight = net.state_dict()[f"{head}.weight"]
    for i, name in enumerate(classes):
        expected = fresh[i] if name == "fnh" else theirs[f"{head}.weight"][start.classes.index(name)]
        assert torch.equal(weight[i], expected), name
    assert record["new_classes"] == ["fnh"]


def test_fine_tuning_refuses_another_input_or_architecture(cli_run):
    from liverview.model.network import build_network
    from liverview.model.train import load_initial_weights

    start = load_bundle(cli_run / "bundle")
    other_input = _config(["x"], preprocess=PreprocessConfig(size=32, neighbour_slices=1),
                          init_from=str(cli_run / "bundle"))
    with pytest.raises(TrainingError, match="reads its input differently.*denoise.*size"):
        load_initial_weights(build_network("tiny_cnn", 4, 9), other_input)
    other_arch = _config(["x"], architecture="mobilenet_v3_small", preprocess=start.preprocess_config,
                         init_from=str(cli_run / "bundle"))
    with pytest.raises(TrainingError, match="is a tiny_cnn, not a mobilenet_v3_small"):
        load_initial_weights(build_network("mobilenet_v3_small", 4, 9), other_arch)


def test_cli_fine_tunes_the_bundle_of_a_run(cli_run, toy_dataset, tmp_path):
    from liverview.model.train_cli import main

    run = tmp_path / "tuned"
    # No --arch or preprocessing options: the run reads its input as the bundle it starts from does.
    assert main([str(toy_dataset), "--out", str(run), "--init-from", str(cli_run / "bundle"), "--epochs", "1",
                 "--batch-size", "8", "--no-baseline", "-q"]) == 0
    tuned = load_bundle(run / "bundle")
    start = load_bundle(cli_run / "bundle")
    assert tuned.info["architecture"] == "tiny_cnn" and tuned.preprocess_config == start.preprocess_config
    assert tuned.info["training"]["initial_weights"]["sha256"] == start.info["sha256"]
    assert f"fine-tuned from {start.name} {start.version}" in (run / "bundle" / "MODEL_CARD.md").read_text()
    # Resumed for one more epoch, it goes on from its checkpoint and still says where it started.
    assert main(["--resume", str(run), "--epochs", "2", "-q"]) == 0
    assert load_bundle(run / "bundle").info["training"]["initial_weights"]["sha256"] == start.info["sha256"]
    assert json.loads((run / "history.json").read_text())[-1]["epoch"] == 2
    assert main([str(toy_dataset), "--out", str(tmp_path / "clash"), "--init-from", str(cli_run / "bundle"),
                 "--input-size", "64", "-q"]) == 1
    assert main([str(toy_dataset), "--out", str(tmp_path / "none"), "--init-from", str(tmp_path / "nothing"),
                 "-q"]) == 1


def test_a_run_without_validation_or_test_lesions_says_so(tiny_dataset, tmp_path, caplog):
    """Walkthrough step 14: two epochs on three patients printed 'val loss ... macro-F1 0.667' (the training
    numbers), the report named a validation result, and the card promised an ECE it did not have."""
    with caplog.at_level("INFO", logger="liverview.model.train"):
        result = train_model(_config([tiny_dataset], epochs=2), tmp_path / "run")
    split = Split.load(tmp_path / "run" / "split.json")
    assert split.train and not split.val and not split.test
    assert all(h["val_loss"] is None and h["val_macro_f1"] is None for h in result.history)
    assert "val loss" not in caplog.text and "no validation split" in caplog.text
    report = (result.report_dir / "report.md").read_text()
    assert "validation loss" not in report and "there was no validation split" in report
    card = (result.bundle_dir / "MODEL_CARD.md").read_text()
    assert "ECE above" not in card and "Not tested on held-out lesions" in card
    assert load_bundle(result.bundle_dir).info.get("metrics", {}).get("macro_f1") is None
