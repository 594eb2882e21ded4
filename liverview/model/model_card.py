"""MODEL_CARD.md: what a bundle's model.json says, written for a reader (intended use, model, data,
metrics, known limits). `release` adds its own sections after this text."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from liverview.model.bundle_format import INTENDED_USE
from liverview.model.number_format import format_number
from liverview.model.report import uncertainty_table


def _trained_phases(info: dict) -> str:
    """The contrast phases the model was trained on, in words (a model trained on arterial lesions too
    was described as reading portal-venous slices)."""
    phases = [str(p).replace("_", "-") for p in (info.get("training_domain") or {}).get("phases") or []]
    if not phases:
        return "contrast phase not recorded in its training data"
    return " or ".join(phases) + " phase"


def _describe_slices(neighbours: int) -> str:
    if neighbours <= 0:
        return "key slice of the ROI"
    return (f"key slice of the ROI and {neighbours} slice{'s' if neighbours > 1 else ''} on each side "
            f"(2.5-D: every window of every slice is a channel)")


def _describe_slice_limit(neighbours: int) -> str:
    if neighbours <= 0:
        return "One axial slice per lesion (the slice with the largest outline)"
    return (f"{2 * neighbours + 1} adjacent axial slices per lesion around the one with the largest outline, "
            f"whatever their thickness: the rest of a larger lesion is not seen")


def _describe_windows(windows: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{w.get('name', '')} W{float(w['width']):g}/L{float(w['center']):g}" for w in windows)


#: The training settings the card lists (model.json keeps them all, run_dir among them).
CARD_TRAINING_KEYS = ("epochs_run", "best_epoch", "seed", "batch_size", "lr", "lr_schedule", "weight_average",
                      "optimizer", "loss", "monitor", "patience", "world_size", "device", "stopped_by")


def _describe_start(training: dict[str, Any]) -> str:
    start = training.get("initial_weights")
    if not start:
        return "trained from scratch"
    new = start.get("new_classes") or []
    return (f"fine-tuned from {start.get('name')} {start.get('version')}, weights SHA-256 "
            f"{str(start.get('sha256'))[:12]}..." + (f"; classes new to it: {', '.join(new)}" if new else ""))


def render_model_card(info: dict[str, Any], notes: Sequence[str] = ()) -> str:
    """MODEL_CARD.md for a bundle's model.json: intended use, model, data, metrics, limits."""
    classes = [c["id"] if isinstance(c, dict) else str(c) for c in info.get("classes", [])]
    metrics = info.get("metrics") or {}
    data = info.get("training_data") or {}
    training = info.get("training") or {}
    pre = info.get("preprocessing") or {}
    lines = [f"# Model card: {info.get('name', 'liverview model')} {info.get('version', '')}".rstrip(), "",
             f"Created {info.get('created', '?')} with liverview {info.get('liverview_version', '?')} and torch "
             f"{info.get('torch_version', '?')}.", "",
             "## Intended use", "", info.get("intended_use", INTENDED_USE), "",
             f"Task: classify one outlined focal liver lesion on a contrast-enhanced CT slice ({_trained_phases(info)}) "
             f"into {', '.join(classes)}. The reader outlines the lesion; the model does not detect lesions.", "",
             "## Model", "",
             f"- Architecture: {info.get('architecture')} (torchvision, {_describe_start(training)})",
             f"- Input: {' x '.join(str(v) for v in info.get('input_size', []))} (channels x height x width), "
             f"values 0..1",
             f"- Preprocessing: {_describe_slices(int(pre.get('neighbour_slices', 0)))}, square crop of side max("
             f"{pre.get('crop_min_mm')} mm, extent x {pre.get('crop_scale')} + 2 x {pre.get('crop_margin_mm')} mm), "
             f"HU windows {_describe_windows(pre.get('windows', []))}, denoising {pre.get('denoise', 'none')}, CLAHE {'on' if pre.get('clahe') else 'off'}",
             "- Answer: " + ("the mean of the class probabilities of the input and its horizontal, vertical "
                             "and double flips (test metrics measured the same way)"
                             if (info.get("inference") or {}).get("flip_average") else "one pass per lesion"),
             f"- Grad-CAM target layer: `{info.get('gradcam_target_layer')}`",
             f"- Weights SHA-256: `{info.get('sha256', '')}`", "",
             "## Training data", ""]
    if data.get("description"):
        lines += [str(data["description"]), ""]
    if data.get("simulated"):
        lines += ["**The training data are simulated lesions**, not patient images. Performance on real CT is "
                  "unknown until measured on real, independently labelled cases.", ""]
    if data.get("n_training_only"):
        lines += [f"{data['n_training_only']} of the training lesions come from datasets given for training only; "
                  "validation and test use none of them.", ""]
    for key in ("n_lesions", "class_counts", "split_counts", "datasets"):
        if key in data:
            lines.append(f"- {key}: `{json.dumps(data[key], default=str)}`")
    if training:
        lines += ["", "## Training", ""] + [f"- {k}: `{json.dumps(v, default=str)}`" for k, v in training.items()
                                          if k in CARD_TRAINING_KEYS]
    lines += ["", "## Metrics (held-out test split)", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        for key in ("n", "accuracy", "macro_f1", "macro_precision", "macro_recall", "macro_roc_auc", "ece"):
            if key in metrics:
                lines.append(f"| {key} | {format_number(metrics[key])} |")
        per_class = metrics.get("per_class") or {}
        if per_class:
            lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            for name, m in per_class.items():
                scores = " | ".join(format_number(m[key]) for key in ("precision", "recall", "f1"))
                lines.append(f"| {name} | {scores} | {m['support']} |")
        cm = metrics.get("confusion_matrix")
        if cm:
            lines += ["", "Confusion matrix (rows: truth, columns: prediction):", "",
                      "| truth \\ predicted | " + " | ".join(classes) + " |",
                      "|---" * (len(classes) + 1) + "|"]
            lines += [f"| {classes[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(cm)]
        if metrics.get("by_uncertainty"):
            lines += ["", "By the uncertainty the app shows with each answer (from the answer's entropy and from how "
                          "the input's flipped copies agree):", ""] + uncertainty_table(metrics["by_uncertainty"])
            lines += ["", "Measured on the same held-out lesions as above; on other data, such as real scans, what a "
                          "level means is unmeasured."]
        if metrics.get("by_phases"):
            lines += ["", "By the contrast phases read (the same test lesions read on those phases only, the others "
                          "marked missing):", "", "| phases read | lesions | accuracy | macro-F1 |", "|---|---|---|---|"]
            lines += [f"| {' + '.join(row['phases'])} | {row['n']} | {format_number(row['accuracy'])} | "
                      f"{format_number(row['macro_f1'])} |" for row in metrics["by_phases"]]
        baseline = metrics.get("baseline")
        if baseline:
            lines += ["", f"Classical baseline on the same split ({baseline.get('classifier', 'random forest')}): "
                          f"accuracy {format_number(baseline.get('accuracy'))}, macro-F1 "
                          f"{format_number(baseline.get('macro_f1'))}."]
    else:
        lines.append("Not evaluated.")
    lines += ["", "## Known limits", "",
              f"- {_describe_slice_limit(int(pre.get('neighbour_slices', 0)))}; "
              + (f"reads the contrast phases {', '.join(pre['phases'])} (any of them may be missing)."
                 if pre.get("phases") else "the network reads one contrast phase; a bundled phase reader "
                 "(PHASE_READER.md, where present) adds the others."),
              ("- Trained from scratch on the data above only" if not training.get("initial_weights") else
               "- Trained on the data above, starting from a model trained on other data (see that model's card)")
              + "; other scanners, phases, reconstruction kernels and lesion types (abscess, FNH, adenoma, ...) are "
              "outside what it has seen.",
              "- Probabilities are calibrated only as well as the ECE above says." if (metrics or {}).get("ece") is not None
              else "- Not tested on held-out lesions: how often it is right, and how far its probabilities can be "
                   "trusted, is not known."]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"



__all__ = ["CARD_TRAINING_KEYS", "render_model_card"]
