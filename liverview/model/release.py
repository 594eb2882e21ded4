"""`python -m liverview.model.release RUN TARGET`: make a finished training run the bundled model.

`make model` runs the whole recipe (simulate, train, evaluate, release); this is its last step:
- refuses a model that is not better (test macro-F1) than the one already in TARGET, because every
  committed version stays in the repository's history and the bundle should only improve;
- runs the real-data sanity check: the reference outlines of a real CT series (by default the
  colorectal liver metastases of crlm-ct-1004) classified by the new model, reported as they come out;
- adds the comparison with runs trained with image enhancement (`--compare`), if given;
- copies weights, model.json (with the checks added), the training history and the report's figures
  into TARGET and writes MODEL_CARD.md citing the method paper and the data.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverview.model.bundle_format import HISTORY_FILE, MODEL_CARD, MODEL_JSON, BundleError, read_bundle_info, write_json
from liverview.model.inference import load_bundle
from liverview.model.model_card import render_model_card
from liverview.model.number_format import format_number
from liverview.model.phase_reader import PHASE_READER_CARD, PHASE_READER_FILE, PHASE_READER_WEIGHTS_PREFIX
from liverview.model.data import LesionRecord, load_records
from liverview.model.train import load_run_config
from liverview.synth.lesions import LesionSpec

log = logging.getLogger(__name__)

FIGURES = ("confusion_cnn.png", "roc_cnn.png", "reliability_cnn.png", "accuracy_curves.png", "loss_curves.png")
PAPER = ("Bharath N Y, Bhimesha V J, Chandresh M, Pramod kumar H R, Lakshmi D L, Goutham V (2025). Machine "
         "Learning-Driven Analysis of Liver Lesions from Medical Images. IJIRE 6(3):94-98 (IJIRE-V6I3-94-98). "
         "CC BY 4.0.")
CRLM_CITATION = ("Simpson AL, Peoples J, Creasy JM, et al. (2023). Preoperative CT and Survival Data for Patients "
                 "Undergoing Resection of Colorectal Liver Metastases (Colorectal-Liver-Metastases), Version 2. "
                 "The Cancer Imaging Archive. https://doi.org/10.7937/QXK2-QG03. CC BY 4.0.")


class ReleaseError(Exception):
    """The run cannot become the bundled model; the message says why."""


@dataclass
class SanityCheck:
    name: str
    expected: str
    predictions: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        counts = Counter(p["predicted"] for p in self.predictions)
        hits = counts.get(self.expected, 0)
        return {"series": self.name, "expected": self.expected, "lesions": len(self.predictions),
                "predicted_as_expected": hits, "predicted_counts": dict(counts), "predictions": self.predictions}


def run_sanity_check(bundle: Path, series: Path, annotations: Path, name: str) -> SanityCheck:
    """Classify the reference outlines of a real series; every lesion's expected class is its label."""
    from liverview.annotations.annotated_study import open_annotated_study
    from liverview.model.classify import classify_lesions

    opened = open_annotated_study(series, annotations)
    loaded = load_bundle(bundle)
    lesions = [lesion for lesion in opened.document.lesions if lesion.rois]
    labels = {lesion.label for lesion in lesions}
    if len(labels) != 1 or None in labels:
        raise ReleaseError(f"{annotations}: the sanity-check lesions must share one label (found {sorted(map(str, labels))})")
    batch = classify_lesions(loaded, opened.volume, lesions, heatmap=False)
    if batch.errors:
        raise ReleaseError(f"sanity check on {name}: " + "; ".join(f"{k}: {v}" for k, v in batch.errors.items()))
    from liverview.annotations.measurements import measure_lesion
    from liverview.imaging.orientation import slice_number

    by_id = {lesion.id: lesion for lesion in lesions}
    predictions = []
    for p in batch.predictions:
        m = measure_lesion(opened.volume, by_id[p.lesion_id])
        predictions.append({"id": p.lesion_id, "predicted": p.predicted, "probability": round(p.probability, 3),
                            "probabilities": {k: round(v, 3) for k, v in p.probabilities.items()},
                            "uncertainty": p.uncertainty, "slice": slice_number(opened.volume, p.slice_index),
                            "long_axis_mm": round(m.long_axis_mm, 1), "mean_hu": round(m.mean, 1),
                            "reference_confidence": by_id[p.lesion_id].confidence,
                            "reference_note": by_id[p.lesion_id].note})
    return SanityCheck(name, labels.pop(), predictions)


def _macro_f1(info: dict[str, Any]) -> float | None:
    value = (info.get("metrics") or {}).get("macro_f1")
    return float(value) if isinstance(value, (int, float)) else None


def _describe_preprocessing(info: dict[str, Any]) -> str:
    pre = info.get("preprocessing") or {}
    neighbours = int(pre.get("neighbour_slices", 0))
    flips = bool((info.get("inference") or {}).get("flip_average"))
    parts = ["key slice" + (f" +- {neighbours}" if neighbours else " only"),
             f"denoise {pre.get('denoise', 'none')}", f"CLAHE {'on' if pre.get('clahe') else 'off'}",
             "answer averaged over flips" if flips else "one pass per lesion"]
    return ", ".join(parts)


def compare_runs(runs: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        _, info = read_bundle_info(run / "bundle")
        metrics = info.get("metrics") or {}
        train_counts = ((info.get("training_data") or {}).get("split_counts") or {}).get("train") or {}
        rows.append({"run": run.name, "n_train": sum(train_counts.values()) or None,
                     "preprocessing": _describe_preprocessing(info),
                     "accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"),
                     "ece": metrics.get("ece"), "n_test": metrics.get("n")})
    return rows


TARGET_MACRO_F1 = 0.95
SIZE_BINS_MM = (0.0, 12.0, 20.0, 35.0, float("inf"))
NOISE_BINS_HU = (0.0, 10.0, 15.0, float("inf"))
NOISE_SIZE_SPLIT_MM = 20.0


def _long_axis_mm(record: dict[str, Any]) -> float | None:
    """In-plane extent of the lesion's bounding box (the larger of its y and x sides), in mm."""
    box, spacing = record.get("lesion_bbox_zyx"), record.get("spacing_mm")
    if not box or not spacing:
        return None
    return max((box[1][1] - box[1][0]) * spacing[1], (box[2][1] - box[2][0]) * spacing[2])


Scored = list[tuple[LesionRecord, str, str]]


def scored_test_lesions(run: Path) -> Scored:
    """(record, true, predicted) per test lesion the run's CNN scored (report/predictions_cnn.csv); read
    once for all the card's per-group tables."""
    predictions = run / "report" / "predictions_cnn.csv"
    if not predictions.is_file():
        return []
    config = load_run_config(run)
    by_uid = {record.uid: record for record in load_records(config.datasets, config.classes).records}
    with open(predictions, newline="", encoding="utf-8") as fh:
        return [(by_uid[row["lesion_uid"]], row["true"], row["predicted"]) for row in csv.DictReader(fh)
                if row["lesion_uid"] in by_uid]


def _band_name(low: float, high: float, unit: str) -> str:
    if low == 0:
        return f"< {high:.0f} {unit}"
    return f">= {low:.0f} {unit}" if high == float("inf") else f"{low:.0f}-{high:.0f} {unit}"


def _accuracy_row(group: list[tuple[str, str]], name_true: bool = True) -> dict[str, Any]:
    errors = Counter(f"{t} as {p}" if name_true else f"as {p}" for t, p in group if t != p)
    return {"n": len(group), "accuracy": sum(t == p for t, p in group) / len(group),
            "commonest_error": errors.most_common(1)[0][0] if errors else None}


def accuracy_by_size(scored: Scored) -> list[dict[str, Any]]:
    """Test-split accuracy of the run's CNN per lesion size band (bounding-box long axis): small lesions
    carry fewer of the features that tell the classes apart, so the card says where the errors are."""
    sized = [(size, t, p) for record, t, p in scored if (size := _long_axis_mm(record.extra)) is not None]
    rows = []
    for low, high in zip(SIZE_BINS_MM, SIZE_BINS_MM[1:]):
        band = [(t, p) for size, t, p in sized if low <= size < high]
        if band:
            rows.append({"band": _band_name(low, high, "mm"), **_accuracy_row(band)})
    return rows


def _synth(record: LesionRecord) -> dict[str, Any] | None:
    synth = record.extra.get("synth")
    return synth if isinstance(synth, dict) and "class" in synth else None


def accuracy_by_variant(scored: Scored) -> list[dict[str, Any]]:
    """Test-split accuracy per simulated appearance (class and variant, e.g. "hcc: no capsule, no mosaic")
    for lesions made by the simulator; empty for datasets of real lesions."""
    named = [(f"{record.label}: {LesionSpec.from_record(synth).variant}", t, p) for record, t, p in scored
             if (synth := _synth(record))]
    return [{"variant": variant, **_accuracy_row([(t, p) for v, t, p in named if v == variant], name_true=False)}
            for variant in sorted({v for v, _, _ in named})]


def accuracy_by_noise(scored: Scored) -> list[dict[str, Any]]:
    """Test-split accuracy per simulated image noise (SD in HU, drawn per patient) and lesion size (below
    or above 20 mm): on small lesions the noise hides a capsule or rim a few pixels wide, and a larger
    network did not recover it (docs/model.md). Empty for datasets of real lesions."""
    measured = []
    for record, t, p in scored:
        noise = ((_synth(record) or {}).get("patient") or {}).get("noise_sigma_hu")
        size = _long_axis_mm(record.extra)
        if noise is not None and size is not None:
            measured.append((float(noise), size, t, p))
    rows = []
    for low, high in zip(NOISE_BINS_HU, NOISE_BINS_HU[1:]):
        for size_low, size_high in ((0.0, NOISE_SIZE_SPLIT_MM), (NOISE_SIZE_SPLIT_MM, float("inf"))):
            group = [(t, p) for noise, size, t, p in measured if low <= noise < high and size_low <= size < size_high]
            if group:
                rows.append({"noise": _band_name(low, high, "HU"), "size": _band_name(size_low, size_high, "mm"),
                             **_accuracy_row(group)})
    return rows


def _accuracy_table(title: str, intro: str, columns: Sequence[tuple[str, str]],
                    rows: list[dict[str, Any]]) -> list[str]:
    """A card section: `columns` are (header, row key) before the lesions / accuracy / commonest error columns."""
    headers = [h for h, _ in columns] + ["lesions", "accuracy", "commonest error"]
    lines = [f"## {title}", "", intro, "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join([str(row[key]) for _, key in columns]
                                + [str(row["n"]), f"{row['accuracy']:.3f}", row["commonest_error"] or "-"]) + " |"
              for row in rows]
    return lines + [""]


def _markdown_sections(info: dict[str, Any], check: SanityCheck | None, comparison: list[dict[str, Any]],
                       recipe: str, sizes: list[dict[str, Any]] | None = None,
                       variants: list[dict[str, Any]] | None = None,
                       noise: list[dict[str, Any]] | None = None) -> str:
    lines = ["", "## How it was made", "", f"Reproduce with `{recipe}` (same seed, same data, same split).", ""]
    lines += ["Figures of the held-out test split: "
              + ", ".join(f"[{name}]({name})" for name in FIGURES) + ".", "",
              "![confusion matrix](confusion_cnn.png)", ""]
    if sizes:
        lines += _accuracy_table("Accuracy by lesion size",
                                 "Held-out test split, by the long axis of the lesion's bounding box on its slices:",
                                 [("long axis", "band")], sizes)
    if variants:
        lines += _accuracy_table("Accuracy by simulated appearance",
                                 "Held-out test split, by the variant the simulator drew (docs/synth.md lists them "
                                 "and how often each occurs):", [("class: appearance", "variant")], variants)
    if noise:
        lines += _accuracy_table("Accuracy by image noise",
                                 "Held-out test split, by the simulated image noise of the lesion's patient (SD in "
                                 "HU) and the lesion's long axis:", [("noise", "noise"), ("long axis", "size")], noise)
    if comparison:
        lines += ["## With and without image enhancement", "",
                  "The method paper enhances images (noise reduction, contrast enhancement) before learning. "
                  "Same test split and seed; the runs differ only in their training lesions and preprocessing, "
                  "as listed:", "",
                  "| run | training lesions | preprocessing | test accuracy | test macro-F1 | ECE | n |",
                  "|---|---|---|---|---|---|---|"]
        for row in comparison:
            lines.append(f"| {row['run']} | {format_number(row.get('n_train'))} | {row['preprocessing']} | "
                         f"{format_number(row['accuracy'])} | {format_number(row['macro_f1'])} | {format_number(row['ece'])} | {row['n_test']} |")
        lines.append("")
    replaced = info.get("replaces")
    if replaced:
        other_lesions = (" Those figures were measured on its own test lesions, drawn from other datasets than this "
                         "model's: they do not compare with the figures above."
                         if replaced.get("same_test_lesions") is False else "")
        lines += ["## What it replaces", "",
                  f"{replaced['name']} {replaced['version']} (weights SHA-256 {str(replaced['sha256'])[:12]}..., "
                  f"{replaced['preprocessing']}): test accuracy {format_number(replaced['accuracy'])}, macro-F1 "
                  f"{format_number(replaced['macro_f1'])}.{other_lesions} Its weights stay in the repository "
                  "history.", ""]
    if check is not None:
        s = check.summary()
        lines += [f"## Real-data sanity check: {check.name}", "",
                  f"{s['lesions']} lesion(s) outlined by hand on this real portal-venous CT series; by collection "
                  f"they are **{check.expected}**. The model predicted {check.expected} for "
                  f"**{s['predicted_as_expected']} of {s['lesions']}** "
                  f"(predictions: {', '.join(f'{k} {v}' for k, v in sorted(s['predicted_counts'].items()))}).", "",
                  "| lesion | slice (1 = top) | long axis (mm) | mean HU | predicted | p | uncertainty | probabilities |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in check.predictions:
            probs = ", ".join(f"{k} {v:.2f}" for k, v in p["probabilities"].items())
            lines.append(f"| {p['id']} | {p['slice']} | {p['long_axis_mm']} | {p['mean_hu']} | {p['predicted']} | "
                         f"{p['probability']:.2f} | {p['uncertainty']} | {probs} |")
        lines += [""] + [f"- {p['id']} (reference: {p['reference_confidence'] or 'no confidence given'}): "
                         f"{p['reference_note']}" for p in check.predictions if p.get("reference_note")]
        lines += ["", "One patient is not an evaluation: this only shows whether the simulated training data "
                      "carry over to a real scan at all. " + _sanity_verdict(s), ""]
    lines += ["## References", "", f"- Method: {PAPER}",
              "- Lesion appearance of the simulator: the radiology sources listed in docs/synth.md.",
              f"- Real-data sanity check series: {CRLM_CITATION}", ""]
    return "\n".join(lines)


def _test_datasets(info: dict[str, Any]) -> list[str]:
    """The datasets a model's validation and test lesions came from (not the training-only ones), by
    when each was written: two models share test lesions only where these agree."""
    datasets = (info.get("training_data") or {}).get("datasets") or []
    return sorted(str(d.get("created")) for d in datasets if d.get("role") != "training only")


def _sanity_verdict(summary: dict[str, Any]) -> str:
    if summary["lesions"] and summary["predicted_as_expected"] == summary["lesions"]:
        return "Here it agrees with the collection's diagnosis for every lesion."
    return ("Where it disagrees, the simulator's picture of that class differs from this real scan; treat the "
            "model's output on real data as unvalidated.")


def release_model(run: Path, target: Path, *, sanity_series: Path | None = None,
                  sanity_annotations: Path | None = None, compare: list[Path] | None = None,
                  force: bool = False, recipe: str = "make model") -> dict[str, Any]:
    """Install `run`'s bundle as `target`; returns the new model.json. Raises ReleaseError."""
    bundle = run / "bundle"
    try:
        _, info = read_bundle_info(bundle)
    except BundleError as exc:
        raise ReleaseError(f"{run} has no finished model bundle ({exc})") from exc
    new_f1 = _macro_f1(info)
    if new_f1 is None:
        raise ReleaseError(f"{bundle} was not evaluated on a test split; nothing to compare")
    previous = json.loads((target / MODEL_JSON).read_text(encoding="utf-8")) if (target / MODEL_JSON).is_file() else None
    # The bundled weights again (`make model` run once more, reproducing them) refresh the card and keep
    # what was fitted to them; any other model must beat the bundled one.
    same_weights = previous is not None and previous.get("sha256") == info.get("sha256")
    if previous is not None and not force and not same_weights:
        old_f1 = _macro_f1(previous)
        if old_f1 is not None and new_f1 <= old_f1:
            raise ReleaseError(f"the new model's test macro-F1 {new_f1:.4f} is not better than the bundled "
                               f"model's {old_f1:.4f}; keeping the bundled model (use --force to replace it anyway)")
    check = None
    if sanity_series is not None and sanity_annotations is not None:
        check = run_sanity_check(bundle, sanity_series, sanity_annotations, sanity_series.name)
        info["sanity_checks"] = {check.name: check.summary()}
    comparison = compare_runs([run, *(compare or [])]) if compare else []
    if comparison:
        info["enhancement_comparison"] = comparison
    scored = scored_test_lesions(run)
    sizes, variants, noise = accuracy_by_size(scored), accuracy_by_variant(scored), accuracy_by_noise(scored)
    for key, rows in (("accuracy_by_size", sizes), ("accuracy_by_variant", variants), ("accuracy_by_noise", noise)):
        if rows:
            info[key] = rows
    if previous is not None and same_weights:
        # The installed weights again (a card or metrics update): they replace what they replaced before.
        if previous.get("replaces"):
            info["replaces"] = previous["replaces"]
    elif previous is not None:
        old_metrics = previous.get("metrics") or {}
        info["replaces"] = {"name": previous.get("name"), "version": previous.get("version"),
                            "sha256": previous.get("sha256"), "preprocessing": _describe_preprocessing(previous),
                            "accuracy": old_metrics.get("accuracy"), "macro_f1": old_metrics.get("macro_f1"),
                            "same_test_lesions": _test_datasets(previous) == _test_datasets(info)}
    notes = ["Trained on simulated lesions only: the simulator's idea of each class, not real radiology."]
    if new_f1 < TARGET_MACRO_F1:
        notes.append(f"Below the project's target of test macro-F1 >= {TARGET_MACRO_F1:.2f} on simulated lesions "
                     f"({new_f1:.3f}); see the confusion matrix and the accuracy by size for where it errs"
                     + (", and the metrics by uncertainty for how far the uncertainty shown flags it."
                        if (info.get("metrics") or {}).get("by_uncertainty") else "."))
    if check is not None:
        s = check.summary()
        notes.append(f"On the real series {check.name} it called {s['predicted_as_expected']} of {s['lesions']} "
                     f"{check.expected} lesion(s) {check.expected} (see the sanity check below).")
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in (info["weights"]["file"], HISTORY_FILE):
        if (bundle / name).is_file():
            shutil.copy2(bundle / name, staging / name)
    for name in FIGURES:
        if (run / "report" / name).is_file():
            shutil.copy2(run / "report" / name, staging / name)
    write_json(staging / MODEL_JSON, info)
    card = render_model_card(info, notes) + _markdown_sections(info, check, comparison, recipe, sizes, variants, noise)
    (staging / MODEL_CARD).write_text(card, encoding="utf-8")
    if same_weights:
        # The phase reader is fitted to these weights: a new card keeps it.
        kept = [target / PHASE_READER_FILE, target / PHASE_READER_CARD,
                *target.glob(PHASE_READER_WEIGHTS_PREFIX + "*.pt")]
        for path in kept:
            if path.is_file():
                shutil.copy2(path, staging / path.name)
    load_bundle(staging)  # the installed bundle must load and verify exactly as the app will
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m liverview.model.release", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="finished liverview-train run folder")
    parser.add_argument("target", type=Path, help="bundle folder to (re)place, e.g. resources/models/liver-lesion-classifier")
    parser.add_argument("--sanity-series", type=Path, help="real CT series for the sanity check")
    parser.add_argument("--sanity-annotations", type=Path, help="reference outlines of that series (one label)")
    parser.add_argument("--compare", type=Path, nargs="*", default=[],
                        help="other runs on the same data (e.g. with enhancement) for the card's comparison table")
    parser.add_argument("--force", action="store_true", help="replace the bundled model even if it is not better")
    parser.add_argument("--recipe", default="make model", help="the command that reproduces this model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        info = release_model(args.run, args.target, sanity_series=args.sanity_series,
                             sanity_annotations=args.sanity_annotations, compare=args.compare, force=args.force,
                             recipe=args.recipe)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 2
    metrics = info.get("metrics") or {}
    print(f"installed {info.get('name')} {info.get('version')} into {args.target}: test accuracy "
          f"{metrics.get('accuracy', float('nan')):.3f}, macro-F1 {metrics.get('macro_f1', float('nan')):.3f}")
    for name, check in (info.get("sanity_checks") or {}).items():
        print(f"sanity check {name}: {check['predicted_as_expected']}/{check['lesions']} predicted {check['expected']} "
              f"({check['predicted_counts']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
