"""How often the contrast-phase detector is right on simulated multiphase studies (run by hand).

Each simulated patient is one anatomy (`make_abdomen_phantom`, its own seed) painted in the four
phases of `liverview.synth.phases`, with the simulator's patient ranges (portal-venous liver 92-135 HU,
blood pool 150-205 HU) and, per phase, its own noise (7-20 HU) and slice thickness (non-contrast and
delayed 5 mm, arterial and portal-venous 3 mm). Every series is written as DICOM and read back through
`detect_series_phases`, the code path of `liverview-inspect` and the app, in three settings:

- ``images, each series alone``: empty descriptions, every series with the study's time as its
  acquisition time (nothing to order them by, as anonymisers often leave it); every series detected on
  its own, as if it were the only series of its study;
- ``images``: the same four series detected together, as the study they are;
- ``images+timing``: empty descriptions, the series' acquisition times of a 4-phase protocol
  (non-contrast, then arterial, portal-venous and delayed at 35, 70 and 180 s after injection);
- ``images+description``: the descriptions a scanner protocol writes.

Usage::

    .venv/bin/python benchmarks/bench_contrast_phase.py [--patients 20] [--seed 1] [--out benchmarks/results/contrast_phase.json]

The phantom is simulated, the thresholds come from the literature (docs/contrast-phase.md), and
neither was tuned to these results.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import describe_machine  # noqa: E402 - benchmarks/ is not a package

from liverview.imaging.contrast_phase import ContrastPhase, detect_series_phases  # noqa: E402
from liverview.io import scan_paths  # noqa: E402
from liverview.synth.acquisition import simulate_acquisition, to_int16_hu  # noqa: E402
from liverview.synth.dicom_writer import PatientInfo, make_series_placement, write_ct_series  # noqa: E402
from liverview.synth.phantom import make_abdomen_phantom  # noqa: E402
from liverview.synth.phases import Phase  # noqa: E402
from liverview.synth.simulator import SimulatorConfig  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "contrast_phase.json"
PHASES = (Phase.NON_CONTRAST, Phase.ARTERIAL, Phase.PORTAL_VENOUS, Phase.DELAYED)
#: Seconds after injection; the non-contrast series is taken a minute before it.
PROTOCOL_S = {Phase.NON_CONTRAST: -60, Phase.ARTERIAL: 35, Phase.PORTAL_VENOUS: 70, Phase.DELAYED: 180}
THICKNESS_MM = {Phase.NON_CONTRAST: 5.0, Phase.ARTERIAL: 3.0, Phase.PORTAL_VENOUS: 3.0, Phase.DELAYED: 5.0}
DESCRIPTIONS = {Phase.NON_CONTRAST: "ABD NON CON 5mm", Phase.ARTERIAL: "LIVER ARTERIAL 3mm",
                Phase.PORTAL_VENOUS: "PORTAL VENOUS 3mm", Phase.DELAYED: "DELAYED 3 MIN 5mm"}
SETTINGS = ("images, each series alone", "images", "images+timing", "images+description")
#: The files each setting writes (the first two differ only in how the series are detected).
WRITTEN_AS = {"images, each series alone": "images"}
#: 120 mm of the upper abdomen at 1.5625 mm pixels (a 40 cm field of view on 256 x 256).
EXTENT_Z_MM, MATRIX, PIXEL_MM = 120.0, 256, 400.0 / 256
INJECTION = _dt.datetime(2026, 12, 6, 10, 0, 0)


def write_patient(folder: Path, seed: int, setting: str, rng: np.random.Generator) -> None:
    config = SimulatorConfig()
    liver = float(rng.uniform(*config.liver_hu))
    blood = float(rng.uniform(*config.blood_pool_hu))
    for number, phase in enumerate(PHASES, start=1):
        dz = THICKNESS_MM[phase]
        shape = (int(round(EXTENT_Z_MM / dz)), MATRIX, MATRIX)
        spacing = (dz, PIXEL_MM, PIXEL_MM)
        phantom = make_abdomen_phantom(shape, spacing, np.random.default_rng(seed), liver_hu=liver,
                                       blood_pool_hu=blood, phase=phase, top_s_mm=-20.0)
        simulate_acquisition(phantom.hu, spacing, rng, noise_sigma_hu=float(rng.uniform(*config.noise_sigma_hu)))
        identity = make_series_placement(["bench-contrast-phase", str(seed), setting], INJECTION, number)
        if setting == "images+timing":
            identity = dataclasses.replace(identity, acquired=INJECTION + _dt.timedelta(seconds=PROTOCOL_S[phase]))
        description = DESCRIPTIONS[phase] if setting == "images+description" else ""
        write_ct_series(to_int16_hu(phantom.hu), spacing, folder / phase.value, PatientInfo(), description, identity,
                        contrast_agent="" if phase is Phase.NON_CONTRAST else "Iohexol 350 mgI/ml")


def confusion(pairs: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    labels = [p.value for p in PHASES] + [ContrastPhase.UNKNOWN.value]
    return {truth: {said: sum(1 for t, s in pairs if t == truth and s == said) for said in labels}
            for truth in labels[:-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    results: dict = {"settings": {}}
    timings: list[float] = []
    for setting in SETTINGS:
        pairs: list[tuple[str, str]] = []
        rng = np.random.default_rng(args.seed)
        for patient in range(args.patients):
            with tempfile.TemporaryDirectory(prefix="lv-phase-") as tmp:
                write_patient(Path(tmp), args.seed * 1000 + patient, WRITTEN_AS.get(setting, setting), rng)
                infos = scan_paths(tmp).series
                start = time.perf_counter()
                if setting in WRITTEN_AS:
                    phases = {info.key: detect_series_phases([info])[info.key] for info in infos}
                else:
                    phases = detect_series_phases(infos)
                timings.append((time.perf_counter() - start) / len(infos))
                for info in infos:
                    truth = Path(info.frames[0].path).parent.name
                    pairs.append((truth, phases[info.key].phase.value))
        right = sum(t == s for t, s in pairs)
        results["settings"][setting] = {"series": len(pairs), "right": right, "accuracy": round(right / len(pairs), 4),
                                        "confusion_truth_by_decision": confusion(pairs)}
        print(f"{setting:<26} {right}/{len(pairs)} right ({right / len(pairs):.1%})")
        for truth, row in results["settings"][setting]["confusion_truth_by_decision"].items():
            print(f"    {truth:<14}", "  ".join(f"{k}={v}" for k, v in row.items() if v))
    results["median_detection_s_per_series"] = round(float(np.median(timings)), 4)
    results["patients"], results["seed"] = args.patients, args.seed
    results["simulated"] = True
    results["machine"] = describe_machine()
    results["date"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"median detection {results['median_detection_s_per_series'] * 1000:.0f} ms per series; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
