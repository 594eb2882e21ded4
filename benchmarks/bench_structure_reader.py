"""The phase reader's structure network (`liverview.model.structure_reader`) trained and scored per subset
of phases, for designing it.

Trains the network on a dataset's training split plus training-only datasets and scores it per subset
of phases on the split's validation and test lesions and on a held-out dataset, with 95 % intervals
over patients and per LI-RADS size band. With `--bundle`, the bundle's phase reader is scored on the
same held-out lesions, and so is the mean of both readers' probabilities; `--cnn-inputs` also gives
the network the CNN's answer on each phase. Nothing is chosen on the held-out lesions: fixed epochs,
no early stopping. Give it the development lesions (seed 41, `build/phase-reader-dev`), never the
bundled reader's held-out set (`build/phase-reader-heldout`, seed 51), or that set stops being a test.

Simulated lesions only; nothing here changes the bundle (`make phase-reader` trains the bundled one).

    .venv/bin/liverview-synth build/phase-reader-dev/dataset -n 250 --seed 41 --min-diameter 8 --workers 2 \
        --phases non_contrast,arterial,portal_venous,delayed -q
    .venv/bin/python benchmarks/bench_structure_reader.py build/phase-reader/dataset \
        --train-only build/phase-reader/dataset-extra --heldout build/phase-reader-dev/dataset \
        [--bundle resources/models/liver-lesion-classifier [--cnn-inputs]] [--epochs 40] [--out FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from liverview.annotations.dataset_format import read_patch  # noqa: E402
from liverview.model.data import DEFAULT_CLASSES, LesionRecord, load_records  # noqa: E402
from liverview.model.inference import load_bundle, predict_flips  # noqa: E402
from liverview.model.metrics import confusion_matrix, macro_f1_interval, metrics_from_confusion  # noqa: E402
from liverview.model.phase_reader import SIZE_BAND_MM, size_band  # noqa: E402
from liverview.model.phase_reader_cli import read_records  # noqa: E402
from liverview.model.split import split_records  # noqa: E402
from liverview.model.phase_reader import MIN_PROBABILITY, PHASE_READER_FILE, phase_subsets  # noqa: E402
from liverview.model.structure_reader import (CONTEXT_MM, CROP_PX, NEIGHBOUR_SLICES, InputArrays,  # noqa: E402
                                              StructureNet, lesion_inputs, predict_subsets, train_network)
from liverview.model.transforms import PHASE_NAMES, select_key_slice, select_slab  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "structure_reader" / "run.json"
PHASES = PHASE_NAMES
SUBSETS = tuple(phase_subsets(PHASES))


def prepare(records: Sequence[LesionRecord], cnn: np.ndarray | None = None) -> InputArrays:
    """Every record's inputs, read from its patch as the app reads a study (`structure_reader.lesion_inputs`),
    on `NEIGHBOUR_SLICES` slices each side of the key slice (`phase_reader_cli --neighbour-slices` trains
    on other numbers); with `cnn` ((n, phases, classes) probabilities), their logs join each phase's numbers."""
    lesions = []
    for record in records:
        patch = read_patch(record.patch_path)
        z = select_key_slice(patch.mask)
        spacing = (float(patch.spacing_mm[-2]), float(patch.spacing_mm[-1]))
        slabs = {p: select_slab(patch.hu_of(p), z, NEIGHBOUR_SLICES) for p in patch.phase_names if p in PHASES}
        lesions.append(lesion_inputs(slabs, patch.mask[z], spacing, PHASES))
    arrays = InputArrays.stack(lesions)
    if cnn is not None:
        logs = np.log(np.clip(cnn, MIN_PROBABILITY, 1.0)) * arrays.present[..., None]
        arrays.numbers = np.concatenate([arrays.numbers, logs.astype(np.float32)], axis=2)
    return arrays


def read_bundle(bundle: Path, records: Sequence[LesionRecord], cache: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The bundled CNN's answer on each phase of each record ((n, phases, classes), zeros where a phase is
    missing) and the bundled phase reader's probabilities per subset name ((n, classes)), as
    `phase_reader_cli` computes them. Kept under `cache` per dataset, by the CNN's and the reader's files'
    hashes and the lesions."""
    loaded = load_bundle(bundle, phase_reader=True)
    reader = loaded.phase_reader
    if reader is None:
        raise SystemExit(f"{bundle} holds no phase reader fitted to its CNN")
    cnn = np.zeros((len(records), len(PHASE_NAMES), len(loaded.classes)))
    probabilities = {" + ".join(s): np.zeros((len(records), len(loaded.classes))) for s in SUBSETS}
    for dataset in dict.fromkeys(r.dataset for r in records):
        rows = [i for i, r in enumerate(records) if r.dataset == dataset]
        digest = hashlib.sha256("\n".join(records[i].uid for i in rows).encode()).hexdigest()[:16]
        reader_sha = hashlib.sha256((bundle / PHASE_READER_FILE).read_bytes()).hexdigest()[:12]
        path = cache / f"{str(loaded.info.get('sha256'))[:12]}-{reader_sha}-{digest}.npz"
        if not path.is_file():
            print(f"reading {dataset} with {bundle.name}", flush=True)
            read = read_records(loaded, [records[i] for i in rows], PHASE_NAMES,
                                neighbour_slices=reader.network.neighbour_slices if reader.network is not None
                                else NEIGHBOUR_SLICES)
            part = np.array([[answers.get(p, np.zeros(len(loaded.classes))) for p in PHASE_NAMES]
                             for answers in read.answers])
            readers = {}
            for subset in reader.subsets():
                # Either kind of reader answers through `probabilities_of`; a lesion lacking a phase gets NaN.
                answer = np.full((len(rows), len(loaded.classes)), np.nan)
                held = [k for k, f in enumerate(read.features) if set(subset) <= set(f)]
                if held:
                    answer[held] = reader.probabilities_of(subset, [read.features[k] for k in held],
                                                           [read.answers[k] for k in held],
                                                           [read.inputs[k] for k in held])
                readers[" + ".join(subset)] = answer
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(path, cnn=part, **{f"reader:{k}": v for k, v in readers.items()})
        with np.load(path) as stored:
            cnn[rows] = stored["cnn"]
            for name in probabilities:
                probabilities[name][rows] = stored[f"reader:{name}"]
    return cnn, probabilities


def score(probabilities: np.ndarray, labels: np.ndarray, groups: Sequence[str] | None = None) -> dict:
    predicted = probabilities.argmax(axis=1)
    metrics = metrics_from_confusion(confusion_matrix(labels, predicted, len(DEFAULT_CLASSES)), DEFAULT_CLASSES)
    result = {"n": int(len(labels)), "macro_f1": round(float(metrics["macro_f1"]), 4),
              "accuracy": round(float(metrics["accuracy"]), 4)}
    if groups is not None:
        low, high = macro_f1_interval(labels, predicted, groups, len(DEFAULT_CLASSES))
        result["macro_f1_interval"] = [round(low, 4), round(high, 4)]
    return result


def score_subsets(predicted: dict[tuple[str, ...], np.ndarray], labels: np.ndarray, long_axes: np.ndarray,
                  groups: Sequence[str], by_size: bool) -> dict:
    """Per subset name: `score` of its probabilities, and per size band with `by_size`."""
    bands = np.array([size_band(float(a)) for a in long_axes])
    result = {}
    for subset, probabilities in predicted.items():
        entry = score(probabilities, labels, groups)
        if by_size:
            entry["by_size"] = {str(band): score(probabilities[bands == band], labels[bands == band])
                                for band in sorted(set(bands))}
        result[" + ".join(subset)] = entry
    return result


def measure_latency(net: StructureNet, inputs: InputArrays, bundle: Path | None, record: LesionRecord,
                    repeats: int = 21) -> dict:
    """Median milliseconds, on one intra-op thread as the app classifies: the network reading one lesion in
    all four phases (the eight flips and turns included), and for reference, with a bundle, its CNN
    reading the first lesion's portal-venous phase (with its flips) as the app does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = np.array([0])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predict_subsets(net, inputs, one, PHASES, [PHASES])
            times.append((time.perf_counter() - start) * 1000)
        result = {"structure_reader_four_phases": round(float(np.median(times)), 1)}
        if bundle is not None:
            loaded = load_bundle(bundle, phase_reader=False)
            patch = read_patch(record.patch_path)
            z = select_key_slice(patch.mask)
            slab = select_slab(patch.hu_of("portal_venous"), z, loaded.preprocess_config.neighbour_slices)
            tensor = loaded.preprocess(slab, patch.mask[z], (float(patch.spacing_mm[-2]), float(patch.spacing_mm[-1])))
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                predict_flips(loaded, tensor)
                times.append((time.perf_counter() - start) * 1000)
            result["cnn_one_phase"] = round(float(np.median(times)), 1)
            result["ratio"] = round(result["structure_reader_four_phases"] / result["cnn_one_phase"], 2)
        return result
    finally:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="multiphase dataset split 70/15/15 by patient")
    parser.add_argument("--train-only", type=Path, action="append", default=[], help="datasets that only train")
    parser.add_argument("--heldout", type=Path, required=True, help="dataset of other patients, scored only")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1, help="split and training seed")
    parser.add_argument("--bundle", type=Path, help="score this bundle's phase reader on the same held-out lesions, "
                        "and the mean of its probabilities and the network's")
    parser.add_argument("--cnn-inputs", action="store_true",
                        help="give the network the bundle's CNN answer on each phase too (as the phase reader takes it)")
    parser.add_argument("--cache", type=Path, default=Path("build/structure/cache"),
                        help="where the bundle's answers are kept between runs")
    parser.add_argument("--save", type=Path, help="keep the trained network's state_dict here (torch.save)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.heldout.resolve() in {d.resolve() for d in [args.dataset, *args.train_only]}:
        parser.error(f"{args.heldout} is also trained on: a held-out test needs other lesions")
    if args.cnn_inputs and not args.bundle:
        parser.error("--cnn-inputs needs --bundle")
    torch.set_num_threads(2)
    started = time.perf_counter()
    loaded = load_records([args.dataset], DEFAULT_CLASSES, args.train_only).records
    split = split_records(loaded, args.seed)
    heldout = load_records([args.heldout], DEFAULT_CLASSES).records
    print(f"reading {len(loaded)} + {len(heldout)} patches", flush=True)
    cnn, cnn_heldout, reader_heldout = None, None, {}
    if args.bundle:
        cnn_heldout, reader_heldout = read_bundle(args.bundle, heldout, args.cache)
    if args.cnn_inputs:
        cnn, _ = read_bundle(args.bundle, loaded, args.cache)
    data = prepare(loaded, cnn)
    heldout_data = prepare(heldout, cnn_heldout if args.cnn_inputs else None)
    prepared_s = time.perf_counter() - started
    index = {r.uid: i for i, r in enumerate(loaded)}
    rows = {name: np.array(sorted(index[u] for u in split.subset(name))) for name in ("train", "val", "test")}
    labels = np.array([DEFAULT_CLASSES.index(r.label) for r in loaded])
    heldout_labels = np.array([DEFAULT_CLASSES.index(r.label) for r in heldout])
    net: StructureNet = train_network(data, labels, rows["train"], len(DEFAULT_CLASSES), epochs=args.epochs,
                                      seed=args.seed, progress=lambda f, m: print(m, flush=True))
    trained_s = time.perf_counter() - started - prepared_s
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), args.save)
    latency = measure_latency(net, heldout_data, args.bundle, heldout[0])

    def scored(inputs: InputArrays, chosen: np.ndarray, records: Sequence[LesionRecord], truth: np.ndarray,
               by_size: bool) -> tuple[dict, dict]:
        predicted = predict_subsets(net, inputs, chosen, PHASES, SUBSETS)
        return predicted, score_subsets(predicted, truth[chosen], inputs.long_axis_mm[chosen],
                                        [records[i].group for i in chosen], by_size)

    _, val = scored(data, rows["val"], loaded, labels, False)
    _, test = scored(data, rows["test"], loaded, labels, False)
    every = np.arange(len(heldout))
    held_probabilities, held = scored(heldout_data, every, heldout, heldout_labels, True)
    both = {subset: (p + reader_heldout[" + ".join(subset)]) / 2.0 for subset, p in held_probabilities.items()
            if " + ".join(subset) in reader_heldout}
    mean_with_reader = score_subsets(both, heldout_labels, heldout_data.long_axis_mm, [r.group for r in heldout],
                                     True)
    reader_scores = score_subsets({tuple(name.split(" + ")): p for name, p in reader_heldout.items()}, heldout_labels,
                                  heldout_data.long_axis_mm, [r.group for r in heldout], True)
    result = {
        "what": "the structure reader (liverview.model.structure_reader) per subset of phases; with a bundle, its "
                "phase reader and the mean of both on the same held-out lesions; simulated lesions only",
        "command": " ".join(["benchmarks/bench_structure_reader.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": describe_machine(),
        "crop_px": CROP_PX, "context_mm": CONTEXT_MM, "epochs": args.epochs, "seed": args.seed,
        "size_band_mm": SIZE_BAND_MM,
        "n": {"train": int(len(rows["train"])), "val": int(len(rows["val"])), "test": int(len(rows["test"])),
              "heldout": len(heldout)},
        "seconds": {"prepare": round(prepared_s, 1), "train": round(trained_s, 1)},
        "latency_ms": latency,
        "bundle": str(args.bundle) if args.bundle else None, "cnn_inputs": args.cnn_inputs,
        "val": val, "test": test, "heldout": held, "heldout_mean_with_phase_reader": mean_with_reader,
        "heldout_phase_reader": reader_scores,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, entry in held.items():
        alone, both = (reader_scores.get(name, {}).get("macro_f1"), mean_with_reader.get(name, {}).get("macro_f1"))
        print(f"{name:50s} {entry['macro_f1']:.3f} {entry['macro_f1_interval']}  phase reader {alone}  mean {both}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
