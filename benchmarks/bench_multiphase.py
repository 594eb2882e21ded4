"""Inference time of a model reading every phase against the bundled CNN on the portal-venous series alone.

Target (issue #15): at most 150 ms per lesion per phase read on the CPU, one intra-op thread, with
the heatmaps the app computes (the combined Grad-CAM and, for a multiphase network, one per phase).

    .venv/bin/python benchmarks/bench_multiphase.py --model resources/models/liver-lesion-classifier  # its phase reader
    .venv/bin/python benchmarks/bench_multiphase.py --model build/mp2/run/bundle                      # a multiphase network

Simulates phantom patients in the four contrast phases (liverview.synth), reads each lesion on every
phase of its study as the app does (`classify_lesion(..., other_phases=...)`) and, interleaved, on the
portal-venous series alone with the bundled model. Writes benchmarks/results/multiphase_inference.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import describe_machine  # noqa: E402

PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")
DEFAULT_OUT = HERE / "results" / "multiphase_inference.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="a multiphase model bundle, or a bundle with a phase reader")
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import torch

    from liverview.annotations.export_dataset import PhaseSource
    from liverview.imaging.contrast_phase import ContrastPhase, DecidedBy, PhaseDecision
    from liverview.model.classify import classify_lesion
    from liverview.model.inference import load_bundle
    from liverview.paths import default_model_path
    from liverview.synth.simulator import SimulatorConfig, patient_document, patient_volume, simulate_patient

    torch.set_num_threads(1)
    multiphase, single = load_bundle(args.model, "cpu"), load_bundle(default_model_path(), "cpu")
    pv = PhaseDecision(ContrastPhase.PORTAL_VENOUS, DecidedBy.IMAGES, "benchmark")
    cases = []
    for seed in range(args.patients):
        patient = simulate_patient(100 + seed, config=SimulatorConfig(phases=PHASES, diameter_mm=(12.0, 40.0)))
        volume = patient_volume(patient)
        others = [PhaseSource(p, patient_volume(patient, p)) for p in PHASES if p != "portal_venous"]
        cases += [(volume, lesion, others) for lesion in patient_document(patient, volume).lesions]
    for volume, lesion, others in cases[:2]:  # warm-up: first calls pay for allocations
        classify_lesion(multiphase, volume, lesion, phase=pv, other_phases=others)
        classify_lesion(single, volume, lesion, phase=pv)
    per_phase, multi_total, single_total, parts = [], [], [], {"preprocess": [], "classify": [], "gradcam": []}
    for _ in range(args.repeats):
        for volume, lesion, others in cases:
            t0 = time.perf_counter()
            answer = classify_lesion(multiphase, volume, lesion, phase=pv, other_phases=others)
            elapsed = (time.perf_counter() - t0) * 1000
            multi_total.append(elapsed)
            per_phase.append(elapsed / len(answer.phases_read))
            for key in parts:
                parts[key].append(answer.timings_ms.get(key, 0.0))
            t0 = time.perf_counter()
            classify_lesion(single, volume, lesion, phase=pv)
            single_total.append((time.perf_counter() - t0) * 1000)
    per_phase.sort()
    result = {
        "machine": describe_machine(("numpy", "torch")),
        "command": "benchmarks/bench_multiphase.py " + " ".join(argv or sys.argv[1:]),
        "model": str(args.model), "reference": "bundled one-phase model on the portal-venous series alone",
        "lesions": len(cases), "repeats": args.repeats, "threads": 1,
        "multiphase_per_lesion_median_ms": statistics.median(multi_total),
        "multiphase_per_phase_median_ms": statistics.median(per_phase),
        "multiphase_per_phase_p95_ms": per_phase[int(0.95 * (len(per_phase) - 1))],
        "multiphase_parts_median_ms": {k: statistics.median(v) for k, v in parts.items()},
        "one_phase_per_lesion_median_ms": statistics.median(single_total),
        "ratio_multiphase_lesion_to_one_phase_lesion": statistics.median(multi_total) / statistics.median(single_total),
        "target_per_phase_ms": 150,
    }
    result["target_met"] = result["multiphase_per_phase_p95_ms"] <= 150
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
