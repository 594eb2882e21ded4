"""Several bundles' structure networks, alone and with their class probabilities averaged, per subset of
phases, on one dataset: whether an ensemble of phase readers is worth building into the app.

Each bundle's phase reader reads every lesion as `phase_reader_cli --evaluate` reads it (its own number
of slices around the key slice); the ensemble averages the readers' probabilities. Macro-F1 per subset
of phases and the mean over the subsets of two or more phases. Give it the development lesions (seed
41, `build/phase-reader-dev`), never the bundled reader's held-out set (seed 51). Simulated lesions only.

    .venv/bin/python benchmarks/bench_reader_ensemble.py build/phase-reader-dev/dataset BUNDLE BUNDLE... --out FILE
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402 - benchmarks/ is not a package

from liverview.model.data import load_records  # noqa: E402
from liverview.model.inference import load_bundle  # noqa: E402
from liverview.model.metrics import confusion_matrix, metrics_from_confusion  # noqa: E402
from liverview.model.phase_reader import phase_subsets, subset_name  # noqa: E402
from liverview.model.phase_reader_cli import read_records  # noqa: E402
from liverview.model.transforms import PHASE_NAMES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    classes = load_bundle(args.bundles[0], phase_reader=False).classes
    records = load_records([args.dataset], classes).records
    truth = [classes.index(r.label) for r in records]
    subsets = phase_subsets(PHASE_NAMES)
    inputs: dict[int, list] = {}
    answers = []
    for bundle in args.bundles:
        loaded = load_bundle(bundle)
        reader = loaded.phase_reader
        if reader is None or reader.network is None:
            raise SystemExit(f"{bundle} holds no structure network")
        n = reader.network.neighbour_slices
        if n not in inputs:
            inputs[n] = read_records(loaded, records, PHASE_NAMES, cnn_phases=(), neighbour_slices=n).inputs
        answers.append(reader.network_answers(inputs[n], subsets))
        print(f"read {bundle}", flush=True)

    def macro_f1(probabilities: np.ndarray) -> float:
        predicted = probabilities.argmax(axis=1).tolist()
        return round(float(metrics_from_confusion(confusion_matrix(truth, predicted, len(classes)), classes)["macro_f1"]), 4)

    readers = {str(b): answers[k] for k, b in enumerate(args.bundles)}
    readers["ensemble (mean of the probabilities)"] = {s: np.mean([a[s] for a in answers], axis=0) for s in subsets}
    table = {name: {subset_name(s): macro_f1(p[s]) for s in subsets} for name, p in readers.items()}
    multi = [subset_name(s) for s in subsets if len(s) > 1]
    for name, row in table.items():
        row["mean of the subsets of two or more phases"] = round(float(np.mean([row[s] for s in multi])), 4)
        print(f"{name}: mean {row['mean of the subsets of two or more phases']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "macro-F1 per subset of phases of each bundle's structure network and of their averaged probabilities",
        "dataset": str(args.dataset), "n_lesions": len(records), "simulated": all(r.simulated for r in records),
        "macro_f1": table, "machine": describe_machine(("numpy", "torch")),
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
