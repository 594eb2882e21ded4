"""How far the phase reader's measured contrast lies from the contrast the simulator drew, per lesion size.

For every HCC and metastasis of a multiphase `liverview-synth` dataset, on each phase its patch holds:
the lesion-minus-liver difference the phase reader measures on the key slice
(`imaging.lesion_enhancement`) against the one the simulator drew (the lesion's core in that phase,
`synth.phases.lesion_in_phase`, minus the patient's liver in that phase). Reported per size band of
the drawn diameter (not the outline's measured long axis, which the reader's size bands use), for
both classes together and each alone: the median difference (bias) and a robust spread
(interquartile range / 1.35). Exit status 1, and the results file left alone, when no lesion carries
the simulator's record.
These two classes are the ones the reader mixes up; without the arterial phase what tells them apart
is how their contrast changes between phases, a few HU at these contrasts (docs/model.md).

    .venv/bin/python benchmarks/bench_measured_contrast.py build/phase-reader-heldout/dataset
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from liverview.annotations.dataset_format import read_patch  # noqa: E402
from liverview.annotations.labels import LesionClass  # noqa: E402
from liverview.imaging.lesion_enhancement import FEATURES, measure_lesion_enhancement  # noqa: E402
from liverview.model.transforms import select_key_slice  # noqa: E402
from liverview.synth.lesions import LesionSpec  # noqa: E402
from liverview.synth.phases import TABLES, Phase, attenuation, lesion_in_phase  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "measured_contrast.json"
BANDS_MM = ((8.0, 12.0), (12.0, 20.0), (20.0, 40.0), (40.0, 81.0))
CLASSES = (LesionClass.HCC, LesionClass.METASTASIS)
CONTRAST = FEATURES.index("lesion_minus_liver_hu")
#: What a record needs besides the spec's own defaults to be redrawn (`LesionSpec.from_record`).
SPEC_FIELDS = ("class", "seed", "centre_mm_zyx", "radii_mm_zyx", "core_hu")


def drawn_contrast(synth: dict, phase: Phase) -> float:
    """The simulator's lesion core minus the patient's liver in `phase` (HU)."""
    spec = LesionSpec.from_record(synth)
    liver, blood = float(synth["patient"]["liver_hu"]), float(synth["patient"]["blood_pool_hu"])
    scale = blood / TABLES[Phase.PORTAL_VENOUS].portal_vein
    return lesion_in_phase(spec, phase, liver, scale).core_hu - attenuation(phase, liver, 0.0, scale).liver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a liverview-synth --phases dataset folder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    differences: dict[tuple[str, str, int], list[float]] = {}
    skipped = 0
    for line in (args.dataset / "lesions.jsonl").read_text().splitlines():
        record = json.loads(line)
        synth = record.get("synth") or {}
        if record.get("label") not in {c.value for c in CLASSES}:
            continue
        if "patient" not in synth or "requested_diameter_mm" not in synth or any(k not in synth for k in SPEC_FIELDS):
            skipped += 1  # not drawn by this simulator (a reader's lesion, or an older generator's record)
            continue
        band = next((k for k, (lo, hi) in enumerate(BANDS_MM) if lo <= synth["requested_diameter_mm"] < hi), None)
        if band is None:
            continue
        patch = read_patch(args.dataset / record["file"])
        z = select_key_slice(patch.mask)
        spacing = (float(patch.spacing_mm[-2]), float(patch.spacing_mm[-1]))
        for name in patch.phase_names:
            measured = measure_lesion_enhancement(patch.hu_of(name)[z], patch.mask[z], spacing)[CONTRAST]
            difference = float(measured - drawn_contrast(synth, Phase(name)))
            for group in ("both", record["label"]):
                differences.setdefault((name, group, band), []).append(difference)
    rows = []
    for phase in Phase:
        for group in ("both", *(c.value for c in CLASSES)):
            for band, (lo, hi) in enumerate(BANDS_MM):
                d = np.asarray(differences.get((phase.value, group, band), []))
                if d.size == 0:
                    continue
                q1, median, q3 = np.percentile(d, [25, 50, 75])
                rows.append({"phase": phase.value, "classes": group, "diameter_mm": [lo, hi], "n": int(d.size),
                             "median_measured_minus_drawn_hu": round(float(median), 1),
                             "spread_hu": round(float((q3 - q1) / 1.349), 1)})
                print(f"{phase.value:14s} {group:10s} {lo:4.0f}-{hi:<3.0f} mm  n {d.size:4d}  measured - drawn: "
                      f"median {median:+6.1f} HU, spread {(q3 - q1) / 1.349:5.1f} HU")
    if not rows:
        print(f"nothing measured: no HCC or metastasis of {args.dataset} carries the simulator's record "
              f"({skipped} skipped); {args.out} left as it was", file=sys.stderr)
        return 1
    result = {
        "what": "lesion-minus-liver HU measured on the key slice (the phase reader's number) minus the simulator's "
                "drawn core-minus-liver, HCC and metastasis, per phase and drawn diameter (simulated only)",
        "command": "benchmarks/bench_measured_contrast.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "dataset": str(args.dataset), "skipped_not_simulated": skipped, "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": describe_machine(("numpy",)),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
