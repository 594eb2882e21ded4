"""liverview-predict: the app's "Classify" for every lesion of a study, from the command line.

    liverview-predict STUDY --annotations FILE [--model BUNDLE] [--json] [--heatmaps DIR]
                      [--series UID] [--device auto|cpu|cuda]

FILE is the app's annotation JSON or a DICOM SEG (one lesion per segment). STUDY may be the whole
study folder: every series of the annotated series' Frame of Reference gets its contrast phase, and
when the annotated series' phase is one the model was not trained on, each lesion is carried to a
series of a phase it was (by patient coordinates, breathing shift aligned) and read there; a
multiphase model reads each lesion on every series of a phase it reads. The JSON
written with --json is {"model": {...}, "series": {...}, "study_series": [{"series_uid",
"contrast_phase", ...}], "lesions": [{"id", "number", "label", "predicted", "probabilities", "phases_read",
"outside_training", "refusal", "slice", "read_on", ...}], "errors": [{"id", "number", "reason"}]}:
`number` is the app's L1, L2, …; `slice` the slice number the app shows (1 at the top of an axial
series), `slice_index` the array index; `refusal` says why an answer is no suggestion to take as the
label (null when it is one); `label` (the reader's) and `predicted` are label-taxonomy ids and compare
directly. --heatmaps DIR writes one Grad-CAM overlay PNG per lesion. Exit status 0 when every lesion
was classified, 1 on an error that stops the run, 3 when some lesions could not be.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from liverview.log_setup import CliFailed, run_cli_job
from liverview.annotations.annotated_study import (AnnotatedStudyError, open_annotated_study, other_phase_sources,
                                                   study_phases)
from liverview.annotations.measurements import slice_long_axis_mm, slice_masks
from liverview.annotations.transfer import TransferError, transfer_lesion
from liverview.imaging.contrast_phase import DecidedBy, PhaseDecision, how_decided
from liverview.imaging.orientation import slice_number
from liverview.imaging.window import CT_PRESETS, apply_window
from liverview.io import SeriesInfo
from liverview.progress import Cancelled
from liverview.io.seg_import import SegImportError
from liverview.io.volume import Volume, load_series
from liverview.model.bundle_format import BundleError
from liverview.model.inference import LoadedModel, load_bundle, resolve_device
from liverview.model.classify import (Heatmap, LesionPrediction, classify_lesions, loaded_domain, model_id,
                                      phases_read_by)
from liverview.model.phase_reader import (answered_by_reader, format_subset_score, reader_by_uncertainty,
                                         reader_scores_simulated, reader_subset_scores, shown_long_axis_mm,
                                         subset_name)
from liverview.model.uncertainty import describe_measured_level, format_percent
from liverview.paths import default_model_path

HEATMAP_PNG_SIZE = 448


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liverview-predict",
                                     description="Classify every annotated lesion of a study with a liverview model "
                                                 "(research use only, not for diagnosis).",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n"
                                            "  liverview-predict /data/study --annotations annotations.json\n"
                                            "  liverview-predict /data/study --annotations lesions-seg.dcm --json "
                                            "--heatmaps heatmaps/")
    parser.add_argument("study", help="folder, zip file, DICOMDIR or DICOM file(s) of the study")
    parser.add_argument("--annotations", required=True, metavar="FILE",
                        help="liverview annotation JSON or DICOM SEG (one lesion per segment)")
    parser.add_argument("--model", metavar="BUNDLE", type=Path, default=None,
                        help="model bundle folder (default: the bundled model)")
    parser.add_argument("--json", action="store_true", help="write the results as JSON to stdout")
    parser.add_argument("--heatmaps", metavar="DIR", type=Path, help="write one Grad-CAM overlay PNG per lesion")
    parser.add_argument("--series", metavar="UID", help="Series Instance UID (default: the annotated series)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def model_summary(loaded: LoadedModel) -> dict[str, Any]:
    metrics = loaded.info.get("metrics") or {}
    return {"id": model_id(loaded), "name": loaded.name, "version": loaded.version, "path": str(loaded.path),
            "sha256": loaded.info.get("sha256"), "architecture": loaded.info.get("architecture"),
            "classes": list(loaded.classes), "device": str(loaded.device), "macro_f1": metrics.get("macro_f1"),
            "tested": metrics.get("macro_f1") is not None,
            "by_uncertainty": metrics.get("by_uncertainty") or [],
            "reader_by_uncertainty": reader_by_uncertainty(loaded.phase_reader),
            "reader_simulated": reader_scores_simulated(loaded.phase_reader),
            "reader_scores": reader_subset_scores(loaded.phase_reader),
            "intended_use": loaded.info.get("intended_use"),
            "simulated": bool((loaded.info.get("training_data") or {}).get("simulated"))}


def measured_accuracy(model: dict[str, Any], entry: dict[str, Any]) -> str:
    """What the app's Model panel says under an answer: how often the model (its phase reader, for the
    phases it read) was right on its test lesions at the answer's uncertainty, and a reader's macro-F1
    on those phases and on the lesion's size band ("" when unmeasured)."""
    if answered_by_reader(entry["model_id"]):
        subset = subset_name(entry["phases_read"])
        rows = model["reader_by_uncertainty"].get(subset, [])
        return describe_measured_level(entry["uncertainty"], {row["uncertainty"]: row for row in rows},
                                       model["reader_simulated"], read_on_phases=True,
                                       macro_f1=format_subset_score(model["reader_scores"].get(subset),
                                                                    entry.get("long_axis_mm")))
    return describe_measured_level(entry["uncertainty"], {row["uncertainty"]: row for row in model["by_uncertainty"]},
                                   model["simulated"])


def render_heatmap_png(volume: Volume, prediction: LesionPrediction, mask: np.ndarray, path: Path,
                       size: int = HEATMAP_PNG_SIZE, opacity: float = 0.6) -> None:
    """The heatmap's square of the slice at the liver window, the map blended over it (the app's colour
    map, opacity rising with the value) and the outline in white."""
    heatmap: Heatmap = prediction.heatmap  # type: ignore[assignment]
    x0, y0, width, height = heatmap.extent_px()
    # Same resampling grid as the network input: output pixel centres at edge + (i + 0.5) * step.
    step_x, step_y = width / size, height / size
    matrix = np.array([[step_x, 0.0, x0 + 0.5 * step_x], [0.0, step_y, y0 + 0.5 * step_y]])
    liver = CT_PRESETS[0]
    grey = apply_window(volume.array[heatmap.slice_index], liver.center, liver.width)
    crop = cv2.warpAffine(grey, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    outline = cv2.warpAffine(mask.astype(np.uint8), matrix, (size, size),
                             flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
    cam = cv2.resize(heatmap.cam, (size, size), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(cam * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    alpha = (np.clip(cam * 1.4, 0.0, 1.0) * opacity)[..., None]
    image = (cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR) * (1 - alpha) + colour * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, (255, 255, 255), 1, lineType=cv2.LINE_AA)
    label = f"{prediction.predicted} {prediction.probability:.0%}"
    cv2.putText(image, label, (8, size - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "lesion"


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    opened = open_annotated_study(args.study, args.annotations, args.series)
    volume, document = opened.volume, opened.document
    for note in opened.notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as exc:
        raise BundleError(f"device {args.device!r}: {exc}") from exc
    loaded = load_bundle(args.model or default_model_path(), device)
    lesions = [lesion for lesion in document.lesions if lesion.rois]
    numbers = document.lesion_numbers()  # L1, L2, …: what the app's table and tags call them
    study, phases = study_phases(opened)
    phase = phases[volume.info.key]
    read_volume, read_phase, moved = volume, phase, {}
    reads = phases_read_by(loaded)
    others = other_phase_sources(opened, study, phases, lambda phase: phase in reads)
    other = None if reads else _series_to_read(loaded, study, phases, volume)
    if other is not None:
        read_volume, read_phase = load_series(other), phases[other.key]
        for lesion in lesions:
            try:
                moved[lesion.id] = transfer_lesion(lesion, volume, read_volume)
            except TransferError as exc:
                print(f"note: lesion {numbers[lesion.id]} ({lesion.id}) is read on its own series: {exc}", file=sys.stderr)
        print(f"note: the annotated series is {phase.phase.words}, a phase the model was not trained on; each "
              f"lesion is read on series {other.describe()!r} ({read_phase.phase.words}) of the same study",
              file=sys.stderr)
    stay = [lesion for lesion in lesions if lesion.id not in moved]
    batches = [classify_lesions(loaded, read_volume, [moved[lesion.id].lesion for lesion in lesions if lesion.id in moved],
                                heatmap=args.heatmaps is not None, phase=read_phase)] if moved else []
    batches.append(classify_lesions(loaded, volume, stay, heatmap=args.heatmaps is not None, phase=phase,
                                    other_phases=others))
    by_id = {p.lesion_id: p for batch in batches for p in batch.predictions}
    errors = {lesion_id: reason for batch in batches for lesion_id, reason in batch.errors.items()}
    if args.heatmaps is not None:
        args.heatmaps.mkdir(parents=True, exist_ok=True)
    results = []
    for lesion in lesions:
        prediction = by_id.get(lesion.id)
        if prediction is None:
            continue
        on, outline = (read_volume, moved[lesion.id].lesion) if lesion.id in moved else (volume, lesion)
        long_axis = slice_long_axis_mm(on, outline, prediction.slice_index)
        entry = {**prediction.to_json(), "id": lesion.id, "number": numbers[lesion.id], "label": lesion.label,
                 "reader": lesion.reader, "slice": slice_number(on, prediction.slice_index),
                 "long_axis_mm": None if long_axis is None else shown_long_axis_mm(long_axis),
                 "refusal": prediction.to_ai_result().refusal()}
        if lesion.id in moved:
            entry["read_on"] = {"series_uid": read_volume.series_uid, "contrast_phase": read_phase.phase.value,
                                "breathing_shift_mm": [round(v, 1) for v in moved[lesion.id].shift_mm]}
        if args.heatmaps is not None and prediction.heatmap is not None:
            path = args.heatmaps / f"{safe_name(lesion.id)}.png"
            render_heatmap_png(on, prediction, slice_masks(on, outline)[prediction.slice_index], path)
            entry["heatmap"] = str(path)
        results.append(entry)
    output = {"model": model_summary(loaded),
              "study_series": [{"series_uid": info.series_uid, "description": info.describe(),
                                "contrast_phase": phases[info.key].phase.value,
                                "contrast_phase_evidence": phases[info.key].evidence()} for info in study],
              "series": {"study_uid": volume.study_uid, "series_uid": volume.series_uid,
                         "description": volume.info.describe(), "slices": volume.shape[0],
                         "contrast_phase": phase.phase.value, "contrast_phase_evidence": phase.evidence()},
              "lesions": results,
              "errors": [{"id": lesion_id, "number": numbers.get(lesion_id, ""), "reason": reason}
                         for lesion_id, reason in errors.items()]}
    return output, 3 if errors else 0


def _series_to_read(loaded: LoadedModel, study: list[SeriesInfo], phases: dict[str, PhaseDecision],
                    annotated: Volume) -> SeriesInfo | None:
    """Another series of the study to read the lesions on, when the annotated series' phase is outside
    what the model was trained on and one of the study's series (same Frame of Reference) is inside."""
    trained = loaded_domain(loaded).phases
    if not trained or phases[annotated.info.key].phase in trained:
        return None
    for phase in trained:
        for info in study:
            if info.key != annotated.info.key and phases[info.key].phase is phase:
                return info
    return None


def print_table(output: dict[str, Any]) -> None:
    model = output["model"]
    tested = "" if model["tested"] else "; untested: no held-out test lesions, nobody knows how often it is right"
    print(f"model {model['id']} on {model['device']} — research use only, not for diagnosis{tested}")
    series = output["series"]
    evidence = series["contrast_phase_evidence"]
    how = how_decided(DecidedBy(evidence["decided_by"]), evidence.get("reader", ""))
    print(f"series: {series['description']}, contrast phase {series['contrast_phase']} ({how})")
    for entry in output["lesions"]:
        agreement = ("" if entry["label"] is None else f"  (label: {entry['label']})" if entry["refusal"]
                     or entry["label"] != entry["predicted"] else "  (agrees with the label)")
        share = format_percent(entry["probability"])
        where = f"slice {entry['slice']}"
        if entry["outside_training"]:
            # As in the app's panel: the warning leads; a class and a percentage first would sound sure.
            answer = (f"outside the model's training data; it would answer {entry['predicted']}, but its percentages "
                      "mean nothing here: do not rely on it")
        elif entry["refusal"]:
            answer = f"no class leads ({entry['predicted']} {share}): label this lesion yourself"
        else:
            answer = f"{entry['predicted']:<12} {share:>5}  uncertainty {entry['uncertainty']}"
        print(f"{entry['number']:>4} {entry['id']:>12}  {answer}  {where}{agreement}")
        for reason in entry["outside_training"]:
            print(f"{'':>17}  outside the model's training data: {reason}")
        if entry["phases_read"]:
            print(f"{'':>17}  read on the {', '.join(p.replace('_', '-') for p in entry['phases_read'])} "
                  f"phase{'s' if len(entry['phases_read']) > 1 else ''}")
        if not entry["refusal"] and (measured := measured_accuracy(model, entry)):
            print(textwrap.fill(measured, width=100, initial_indent=" " * 19, subsequent_indent=" " * 19))
    for error in output["errors"]:
        print(f"{error['number']:>4} {error['id']:>12}  not classified: {error['reason']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        output, status = run_cli_job("liverview-predict", args.verbose, lambda: run(args),
                                     (AnnotatedStudyError, BundleError, SegImportError, LookupError, Cancelled))
    except CliFailed:
        return 1
    if args.json:
        json.dump(output, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(output)
    return status


if __name__ == "__main__":
    sys.exit(main())
