"""Where the bundled model's Grad-CAM looks: the share of the heatmap's mass inside each lesion's outline
grown by 5 mm (run by hand).

Lesions: simulated phantom patients of `liverview.synth.simulator.simulate_patient` (the simulator's
own ranges, never the model's training or test patients: other seeds), plus the outlined metastasis of
the real crlm-ct-1004. Each lesion goes through `classify_lesions`, the app's path.

With `--phases`, the phantom patients are rendered in the four contrast phases and each lesion, outlined
on the portal-venous series, is read on all of them: the bundle's phase reader answers, and its heatmaps
are measured, the outlined series' map and each phase's map over the crop it read (crlm-ct-1004 has one
phase, which the CNN answers, and is left out).

Usage::

    .venv/bin/python benchmarks/bench_gradcam.py [--patients 40] [--seed 900001] [--out benchmarks/results/gradcam.json] [--model BUNDLE]
    .venv/bin/python benchmarks/bench_gradcam.py --phases --out benchmarks/results/gradcam_phase_reader.json
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import describe_machine  # noqa: E402 - benchmarks/ is not a package

from liverview.annotations.document import AnnotationDocument  # noqa: E402
from liverview.io import load_series  # noqa: E402
from liverview.model.inference import load_bundle  # noqa: E402
from liverview.model.classify import classify_lesions  # noqa: E402
from liverview.model.uncertainty import HEATMAP_INSIDE_MIN  # noqa: E402
from liverview.paths import default_model_path  # noqa: E402
from liverview.synth.simulator import DEFAULT_CONFIG, patient_document, patient_volume, simulate_patient  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "gradcam.json"
CRLM = REPO.parent / "shared" / "data" / "series" / "crlm-ct-1004" / "image"
CRLM_ANNOTATIONS = REPO / "tests" / "data" / "crlm-ct-1004-metastases.json"


def summary(shares: list[float]) -> dict:
    values = np.asarray(shares, dtype=float)
    return {"n": int(values.size), "median": round(float(np.median(values)), 3),
            "p10": round(float(np.percentile(values, 10)), 3), "p90": round(float(np.percentile(values, 90)), 3),
            f"below_{HEATMAP_INSIDE_MIN}": int((values < HEATMAP_INSIDE_MIN).sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--seed", type=int, default=900001)
    parser.add_argument("--phases", action="store_true", help="read each lesion on four phases with the phase reader")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--model", type=Path, help="a model bundle folder (default: the bundled model)")
    args = parser.parse_args()
    loaded = load_bundle(args.model or default_model_path())
    if args.phases:
        return measure_phase_reader(loaded, args)
    simulated: dict[str, list[float]] = {}
    right: list[bool] = []
    for k in range(args.patients):
        patient = simulate_patient(args.seed + k, config=DEFAULT_CONFIG)
        volume = patient_volume(patient)
        document = patient_document(patient, volume)
        batch = classify_lesions(loaded, volume, document.lesions)
        for lesion, prediction in zip(document.lesions, batch.predictions):
            simulated.setdefault(lesion.label, []).append(prediction.heatmap_inside)
            right.append(prediction.predicted == lesion.label)
    volume = load_series(CRLM)
    document = AnnotationDocument.from_dict(json.loads(CRLM_ANNOTATIONS.read_text()))
    real = [p.heatmap_inside for p in classify_lesions(loaded, volume, document.lesions).predictions]
    every = [v for values in simulated.values() for v in values]
    results = {
        "model": loaded.info.get("version"), "margin_mm": 5.0, "simulated": True,
        "simulated_lesions": {"all": summary(every), **{label: summary(v) for label, v in sorted(simulated.items())}},
        "simulated_accuracy": round(float(np.mean(right)), 3),
        "crlm_ct_1004": [round(v, 3) for v in real],
        "patients": args.patients, "seed": args.seed,
        "machine": describe_machine(("numpy", "torch")),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["simulated_lesions"], indent=1), "\ncrlm-ct-1004:", results["crlm_ct_1004"])
    return 0


def measure_phase_reader(loaded, args: argparse.Namespace) -> int:
    """The phase reader's heatmaps on phantom patients rendered in every phase, lesions outlined on the
    portal-venous series: the overlay's share within 5 mm of the outline, and each phase's."""
    from liverview.annotations.export_dataset import PhaseSource
    from liverview.model.classify import Heatmap, key_slice, lesion_slice_masks
    from liverview.model.structure_reader import crop_square

    from liverview.imaging.contrast_phase import ContrastPhase, DecidedBy, PhaseDecision

    phases = ("non_contrast", "arterial", "portal_venous", "delayed")
    venous = PhaseDecision(ContrastPhase.PORTAL_VENOUS, DecidedBy.READER, "outlined on the portal-venous series")
    config = dataclasses.replace(DEFAULT_CONFIG, phases=phases)
    overlay: dict[str, list[float]] = {}
    per_phase: dict[str, list[float]] = {p: [] for p in phases}
    right: list[bool] = []
    for k in range(args.patients):
        patient = simulate_patient(args.seed + k, config=config)
        volume = patient_volume(patient)
        others = [PhaseSource(p, patient_volume(patient, p)) for p in phases if p != "portal_venous"]
        document = patient_document(patient, volume)
        # The phantom's series carry no DICOM text, and the phase is not what is measured here.
        batch = classify_lesions(loaded, volume, document.lesions, other_phases=others, phase=venous)
        for lesion, prediction in zip(document.lesions, batch.predictions):
            overlay.setdefault(lesion.label, []).append(prediction.heatmap_inside)
            right.append(prediction.predicted == lesion.label)
            masks = lesion_slice_masks(volume, lesion)
            mask = masks[key_slice(masks)]
            spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
            cy, cx, side = crop_square(mask, spacing)
            for phase, cam in prediction.phase_cams.items():
                per_phase[phase].append(Heatmap(prediction.slice_index, cam, (cy, cx), side, spacing,
                                                prediction.predicted).share_inside(mask))
    every = [v for values in overlay.values() for v in values]
    results = {
        "model": f"{loaded.info.get('version')} + phase reader ({loaded.phase_reader.kind if loaded.phase_reader else 'none'})",
        "margin_mm": 5.0, "simulated": True, "phases_read": list(phases),
        "overlay_portal_venous": {"all": summary(every), **{label: summary(v) for label, v in sorted(overlay.items())}},
        "per_phase": {phase: summary(v) for phase, v in per_phase.items() if v},
        "simulated_accuracy": round(float(np.mean(right)), 3),
        "patients": args.patients, "seed": args.seed,
        "machine": describe_machine(("numpy", "torch")),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("overlay_portal_venous", "per_phase", "simulated_accuracy")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
