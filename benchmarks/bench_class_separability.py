"""What the simulator's own per-phase numbers say about telling its classes apart (no images).

The phase reader misses macro-F1 >= 0.97 on several subsets of two or more phases (docs/model.md).
This asks a narrower question: do the simulated classes overlap in the parameters the simulator
draws them with? Each lesion is drawn as the simulator draws it (`sample_varied_lesion_spec`,
`lesion_in_phase`, the patient's liver and blood pool), and a classifier is given parameters the
renderer paints in each phase read, exactly, with no image in between:
- per phase: the core's, the enhancing part's and the necrotic centre's attenuation against that
  phase's liver; the enhancing part's width where it differs from the core; the mosaic's spread;
  the blood pool against the liver;
- input sets: all of these plus the shape (size, axes, lobulation, lobe and nodule counts, margin
  width, texture grain), which every phase shows; the shape alone; the enhancement numbers alone;
  the core alone (one number per phase, the one a reader measures best); the core and the mosaic's
  spread.

It is not a ceiling for a reader of the images, in either direction: the images add noise, blur
and partial volume that can destroy what the parameters hold, and they also show the class's own
drawing (nodules, capsule, rim), which is not among the inputs. A score near 1 says only that the
simulator's classes are separable given its exact parameters, so a reader's shortfall is not built
into the class definitions; it cannot tell a weak reader from images too noisy to read. Two
classifiers are reported (how well one learns from the drawn lesions matters). Nothing here feeds
back into the simulator or the reader.

    .venv/bin/python benchmarks/bench_class_separability.py [--lesions-per-class 10000] [--seed 5]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from liverview.annotations.labels import LesionClass  # noqa: E402
from liverview.synth.lesions import Enhancement, LesionSpec, sample_varied_lesion_spec  # noqa: E402
from liverview.synth.phases import TABLES, Phase, attenuation, lesion_in_phase  # noqa: E402
from liverview.synth.simulator import DEFAULT_CONFIG, draw_diameters  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "class_separability.json"
#: (name, with the shape, which per-phase columns of `phase_features`).
INPUT_SETS = (("all_parameters", True, [0, 1, 2, 3, 4, 5, 6]),
              ("shape_only", True, []),
              ("enhancement_only", False, [0, 1, 2, 3, 4, 5, 6]),
              ("core_only", False, [0]),
              ("core_and_texture", False, [0, 3]))
#: As `make phase-reader` draws its lesions (`--min-diameter 8`).
MIN_DIAMETER_MM = 8.0
CLASSES = tuple(LesionClass)
PHASES = tuple(Phase)
#: The held-out figures of the bundled phase reader, for the side-by-side table.
READER_HELDOUT = Path(__file__).resolve().parent / "results" / "phase_reader_heldout.json"


def shape_features(spec: LesionSpec) -> list[float]:
    radii = sorted(spec.radii_mm_zyx)
    return [spec.diameter_mm, radii[0] / radii[2], radii[1] / radii[2], spec.lobulation, float(spec.lobe_count),
            spec.margin_mm, spec.texture_mm, float(spec.nodule_count)]


def phase_features(spec: LesionSpec, phase: Phase, liver_portal_hu: float, blood_hu: float) -> list[float]:
    blood_scale = blood_hu / TABLES[Phase.PORTAL_VENOUS].portal_vein
    now = attenuation(phase, liver_portal_hu, 0.0, blood_scale)
    seen = lesion_in_phase(spec, phase, liver_portal_hu, blood_scale)
    enhancing = 0.0 if seen.enhancing_hu is None else seen.enhancing_hu - seen.core_hu
    return [seen.core_hu - now.liver, enhancing, seen.enhancing_mm if enhancing else 0.0, seen.texture_hu,
            seen.necrosis_fraction, (seen.necrosis_hu - now.liver) if seen.necrosis_fraction else 0.0,
            now.portal_vein - now.liver]


def draw_lesions(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shape features, per-phase features [lesion, phase, feature], class index) of drawn lesions."""
    rng = np.random.default_rng(seed)
    lo, hi = DEFAULT_CONFIG.liver_hu
    blo, bhi = DEFAULT_CONFIG.blood_pool_hu
    config = dataclasses.replace(DEFAULT_CONFIG, diameter_mm=(MIN_DIAMETER_MM, DEFAULT_CONFIG.diameter_mm[1]))
    shapes, phases, labels = [], [], []
    for index, lesion_class in enumerate(CLASSES):
        diameters = draw_diameters(rng, n_per_class, config)
        for diameter in diameters:
            liver, blood = float(rng.uniform(lo, hi)), float(rng.uniform(blo, bhi))
            spec = sample_varied_lesion_spec(lesion_class, (0.0, 0.0, 0.0), diameter, int(rng.integers(2**31)),
                                             Enhancement(liver, blood))
            shapes.append(shape_features(spec))
            phases.append([phase_features(spec, phase, liver, blood) for phase in PHASES])
            labels.append(index)
    return np.asarray(shapes), np.asarray(phases), np.asarray(labels)


def subset_matrix(shapes: np.ndarray, phases: np.ndarray, subset: tuple[Phase, ...], with_shape: bool) -> np.ndarray:
    columns = [phases[:, PHASES.index(p), :] for p in subset]
    return np.concatenate([shapes, *columns] if with_shape else columns, axis=1)


def subset_name(subset: tuple[Phase, ...]) -> str:
    return " + ".join(p.value for p in subset)


def reader_heldout() -> dict[str, float]:
    if not READER_HELDOUT.exists():
        return {}
    subsets = json.loads(READER_HELDOUT.read_text())["subsets"]
    return {name: float(entry["macro_f1"]) for name, entry in subsets.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesions-per-class", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    train = draw_lesions(args.lesions_per_class, args.seed)
    test = draw_lesions(args.lesions_per_class // 2, args.seed + 1000)
    stored = reader_heldout()
    rows = []
    for size in (1, 2, 3, 4):
        for subset in itertools.combinations(PHASES, size):
            name = subset_name(subset)
            scores: dict[str, object] = {"phases": name}
            for inputs, with_shape, columns in INPUT_SETS:
                x_train = subset_matrix(train[0], train[1][:, :, columns], subset, with_shape)
                x_test = subset_matrix(test[0], test[1][:, :, columns], subset, with_shape)
                for label, model in (
                    ("gradient_boosting", HistGradientBoostingClassifier(max_iter=400, random_state=0)),
                    ("logistic_regression", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
                ):
                    predicted = model.fit(x_train, train[2]).predict(x_test)
                    scores[f"{inputs}_{label}"] = round(float(f1_score(test[2], predicted, average="macro")), 4)
                    if label == "gradient_boosting":
                        scores[f"{inputs}_confusion_matrix"] = confusion_matrix(test[2], predicted).tolist()
            if name in stored:
                scores["phase_reader_heldout"] = stored[name]
            rows.append(scores)
            print(f"{name:55s} " + " ".join(f"{inputs} {scores[inputs + '_gradient_boosting']:.3f}"
                                            for inputs, _, _ in INPUT_SETS)
                  + (f"  reader {stored[name]:.3f}" if name in stored else ""), flush=True)
    result = {
        "what": "macro-F1 of classifiers given the simulator's own per-phase lesion parameters (no image): whether "
                "the simulated classes overlap in what they are drawn with; not a bound for an image reader",
        "command": "benchmarks/bench_class_separability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "lesions_per_class": {"fit": args.lesions_per_class, "test": args.lesions_per_class // 2},
        "seed": args.seed,
        "classes": [c.value for c in CLASSES],
        "min_diameter_mm": MIN_DIAMETER_MM,
        "subsets": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": describe_machine(("numpy", "sklearn")),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
