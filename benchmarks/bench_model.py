"""Model benchmark for liverview (run by hand; never part of the test suite).

Measures, on CPU, for each candidate architecture:

1. Training throughput: images/s of forward + backward + Adam step on batches of random
   (9, 224, 224) inputs (the training's 2.5-D input) in train mode, channels-last as the training runs
   and contiguous, with all cores (intra-op threads = CPU count unless --threads).
2. Inference latency per lesion with 1 intra-op thread (what the app's single model worker uses):
   model only (one (1, 3, 224, 224) forward in eval/inference mode) and end to end
   (`prepare_lesion_input` on a 512 x 512 slice + `predict`), median and p95; plus a batch of 20 lesions.
3. Preprocessing cost per lesion (`prepare_lesion_input`) without and with the enhancement transforms.
4. With --accuracy: a small training run per architecture on a simulated dataset (phantom patients
   of `liverview.synth.simulator.write_simulated_dataset`), same data, split and seed for all, reporting test accuracy/macro-F1,
   best validation macro-F1, epochs and wall time, and the classical baseline on the same split; the
   first architecture is also trained with each --variants enhancement (denoising / CLAHE). Runs of
   earlier invocations are kept in the output unless repeated (so seeds and variants can be added).

Usage::

    .venv/bin/python benchmarks/bench_model.py [--archs resnet18,mobilenet_v3_small,...] [--out benchmarks/results/model.json]
    .venv/bin/python benchmarks/bench_model.py --accuracy --accuracy-archs mobilenet_v3_small,resnet18 \
        --variants none,bilateral,nlmeans,clahe,nlmeans+clahe --seeds 7,8 --lesions-per-class 60 --epochs 15
    .venv/bin/python benchmarks/bench_model.py --skip-throughput --accuracy ...   # add accuracy runs only

Nothing here asserts a time limit; targets are reported as pass/fail in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import describe_machine  # noqa: E402 - benchmarks/ is not a package
DEFAULT_OUT = REPO / "benchmarks" / "results" / "model.json"
DEFAULT_ARCHS = "resnet18,mobilenet_v3_small,mobilenet_v3_large,efficientnet_b0"
TARGETS = {"inference_end_to_end_p95_ms": 150.0}  # "within a blink" for one lesion, 1 thread


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _summary_ms(samples: list[float]) -> dict:
    ms = [s * 1000 for s in samples]
    return {"median_ms": statistics.median(ms), "p95_ms": _percentile(ms, 0.95), "min_ms": min(ms), "n": len(ms)}


def _slice_and_mask(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:512, :512]
    mask = (yy - 260) ** 2 / 30**2 + (xx - 300) ** 2 / 24**2 <= 1
    hu = np.where(mask, 45, 105) + rng.normal(0, 12, (512, 512))
    return np.rint(hu).astype(np.int16), mask


def bench_training(arch: str, batch: int, steps: int, threads: int) -> dict:
    """Images/s of training steps on the input the training uses (`TRAINING_NEIGHBOUR_SLICES`: 9
    channels), in the memory layout it trains in (`MEMORY_FORMAT`) and, for comparison, contiguous."""
    import torch

    from liverview.model.network import build_network, count_parameters
    from liverview.model.train import MEMORY_FORMAT, TRAINING_NEIGHBOUR_SLICES
    from liverview.model.transforms import PreprocessConfig

    torch.set_num_threads(threads)
    channels = PreprocessConfig(neighbour_slices=TRAINING_NEIGHBOUR_SLICES).channels
    out: dict = {"batch": batch, "threads": threads, "steps": steps, "channels": channels,
                 "memory_format": str(MEMORY_FORMAT).removeprefix("torch.")}
    for layout, fmt in (("", MEMORY_FORMAT), ("_contiguous", torch.contiguous_format)):
        torch.manual_seed(0)
        model = build_network(arch, 4, channels).to(memory_format=fmt)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(batch, channels, 224, 224).contiguous(memory_format=fmt)
        y = torch.randint(0, 4, (batch,))
        times = []
        for step in range(steps + 2):
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            if step >= 2:  # first steps allocate and warm the allocator
                times.append(time.perf_counter() - started)
        out["parameters"] = count_parameters(model)
        out[f"images_per_second{layout}"] = batch * len(times) / sum(times)
        out[f"step_ms{layout}"] = _summary_ms(times)
    return out


def bench_inference(arch: str, repeats: int) -> dict:
    import torch

    from liverview.model.inference import LoadedModel
    from liverview.model.inference import predict as predict_probs
    from liverview.model.network import build_network, gradcam_target_layer
    from liverview.model.transforms import PreprocessConfig, build_preprocess, prepare_lesion_input

    torch.set_num_threads(1)
    model = build_network(arch, 4).eval()
    config = PreprocessConfig()
    loaded = LoadedModel(model, {"input_size": list(config.input_shape)}, ["a", "b", "c", "d"], ["a", "b", "c", "d"],
                         config, build_preprocess(config), gradcam_target_layer(arch), torch.device("cpu"), Path("."))
    hu, mask = _slice_and_mask()
    x = prepare_lesion_input(hu, mask, (0.78, 0.78), config)
    model_only, end_to_end, batch20 = [], [], []
    with torch.inference_mode():
        for _ in range(5):
            model(x[None])
        for _ in range(repeats):
            started = time.perf_counter()
            model(x[None])
            model_only.append(time.perf_counter() - started)
    for _ in range(3):
        predict_probs(loaded, prepare_lesion_input(hu, mask, (0.78, 0.78), config))
    for _ in range(repeats):
        started = time.perf_counter()
        predict_probs(loaded, prepare_lesion_input(hu, mask, (0.78, 0.78), config))
        end_to_end.append(time.perf_counter() - started)
    for _ in range(max(3, repeats // 10)):
        started = time.perf_counter()
        predict_probs(loaded, [prepare_lesion_input(hu, mask, (0.78, 0.78), config) for _ in range(20)])
        batch20.append(time.perf_counter() - started)
    return {"threads": 1, "model_only": _summary_ms(model_only), "end_to_end": _summary_ms(end_to_end),
            "batch_of_20_lesions": _summary_ms(batch20)}


def bench_preprocessing(repeats: int) -> dict:
    from liverview.model.transforms import PreprocessConfig, prepare_lesion_input

    hu, mask = _slice_and_mask()
    out = {}
    for name, config in {"default": PreprocessConfig(), "bilateral": PreprocessConfig(denoise="bilateral"),
                         "nlmeans": PreprocessConfig(denoise="nlmeans"), "clahe": PreprocessConfig(clahe=True),
                         "nlmeans+clahe": PreprocessConfig(denoise="nlmeans", clahe=True)}.items():
        prepare_lesion_input(hu, mask, (0.78, 0.78), config)
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            prepare_lesion_input(hu, mask, (0.78, 0.78), config)
            samples.append(time.perf_counter() - started)
        out[name] = _summary_ms(samples)
    return out


VARIANTS = {"none": ("none", False), "bilateral": ("bilateral", False), "nlmeans": ("nlmeans", False),
            "clahe": ("none", True), "bilateral+clahe": ("bilateral", True), "nlmeans+clahe": ("nlmeans", True)}


def bench_accuracy(archs: list[str], variants: list[str], seeds: list[int], lesions_per_class: int, epochs: int,
                   patience: int, data_dir: Path | None) -> dict:
    """Small training runs: every architecture with plain preprocessing, and the first architecture with
    each enhancement variant, for every seed (the seed draws the simulated dataset, the split and the init)."""
    import torch

    from liverview.model.train import TrainConfig, train_model
    from liverview.model.transforms import PreprocessConfig
    from liverview.synth.simulator import SimulatorConfig, write_simulated_dataset

    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="liverview-bench-model-"))
    runs, splits = {}, {}
    try:
        for seed in seeds:
            data = data_dir or tmp / f"data-{seed}"
            if data_dir is None:
                write_simulated_dataset(data, lesions_per_class, seed=seed,
                                        config=SimulatorConfig(diameter_mm=(5.0, 60.0), noise_sigma_hu=(10.0, 25.0)))
            plan = [(arch, "none") for arch in archs] + [(archs[0], v) for v in variants if v != "none"]
            for index, (arch, variant) in enumerate(plan):
                denoise, clahe = VARIANTS[variant]
                key = (arch if variant == "none" else f"{arch}+{variant}") + f"@seed{seed}"
                config = TrainConfig(datasets=[str(data)], architecture=arch, epochs=epochs, patience=patience,
                                     seed=seed, batch_size=16, baseline=index == 0,
                                     preprocess=PreprocessConfig(denoise=denoise, clahe=clahe))
                started = time.perf_counter()
                result = train_model(config, tmp / f"run-{key}")
                wall = time.perf_counter() - started
                metrics = json.loads((result.report_dir / "metrics.json").read_text())
                cnn = metrics["results"]["cnn"]
                runs[key] = {
                    "architecture": arch, "variant": variant, "seed": seed, "wall_seconds": wall,
                    "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "stopped_by": result.stopped_by,
                    "best_val_macro_f1": max(h["val_macro_f1"] for h in result.history),
                    "test_accuracy": cnn["accuracy"], "test_macro_f1": cnn["macro_f1"],
                    "test_macro_roc_auc": cnn["macro_roc_auc"], "test_ece": cnn["ece"],
                    "train_images_per_second": statistics.median(h["images_per_second"] for h in result.history),
                }
                if "baseline" in metrics["results"]:
                    runs[f"baseline@seed{seed}"] = {"architecture": "baseline", "variant": "none", "seed": seed,
                                                    "test_accuracy": metrics["results"]["baseline"]["accuracy"],
                                                    "test_macro_f1": metrics["results"]["baseline"]["macro_f1"]}
                    splits[seed] = json.loads((tmp / f"run-{key}" / "split.json").read_text())["counts"]
                print(f"  {key}: test macro-F1 {cnn['macro_f1']:.3f} in {wall:.0f} s", flush=True)
        return {"dataset": str(data_dir) if data_dir else f"write_simulated_dataset(lesions_per_class="
                f"{lesions_per_class}, seed=SEED, diameter 5-60 mm, noise 10-25 HU)", "splits": {str(k): v for k, v in splits.items()},
                "epochs": epochs, "patience": patience, "runs": runs}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_accuracy(old: dict | None, new: dict, old_seed: int) -> dict:
    """Runs of an earlier invocation stay unless this one repeated them (older entries get seed/variant)."""
    if not old:
        return new
    runs = {}
    for key, run in old.get("runs", {}).items():
        run = dict(run)
        run.setdefault("seed", old_seed)
        run.setdefault("variant", {(d, c): v for v, (d, c) in VARIANTS.items()}.get(
            (run.get("denoise", "none"), run.get("clahe", False)), "none"))
        run.pop("denoise", None)
        run.pop("clahe", None)
        run.setdefault("architecture", key.split("@")[0].split("+")[0])
        runs[key if "@" in key else f"{key}@seed{run['seed']}"] = run
    runs.update(new["runs"])
    splits = dict(old.get("splits", {}))
    if "split" in old:
        splits.setdefault(str(old_seed), old.pop("split"))
    splits.update(new["splits"])
    return {**old, **new, "runs": dict(sorted(runs.items())), "splits": splits}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default=DEFAULT_ARCHS)
    p.add_argument("--batch", type=int, default=32, help="training batch (liverview-train's default)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--accuracy", action="store_true", help="also train each architecture on a small toy dataset")
    p.add_argument("--accuracy-archs", default="resnet18,mobilenet_v3_small,mobilenet_v3_large")
    p.add_argument("--lesions-per-class", type=int, default=40)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--patience", type=int, default=6)
    p.add_argument("--seeds", default="7", help="comma-separated seeds for the accuracy runs")
    p.add_argument("--variants", default="none",
                   help=f"enhancement variants for the first accuracy architecture: {', '.join(VARIANTS)}")
    p.add_argument("--skip-throughput", action="store_true",
                   help="keep the throughput/latency numbers of the existing output file")
    p.add_argument("--data", type=Path, help="train on this dataset folder instead of a generated toy dataset")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    archs = [a for a in args.archs.split(",") if a]
    result: dict = {"machine": describe_machine(("numpy", "torch", "cv2")), "parameters": vars(args) | {"out": str(args.out), "data": str(args.data)},
                    "method": {
                        "training": "forward+backward+Adam step on random (batch, channels, 224, 224) inputs "
                                    "(the training's 2.5-D input), train mode, in the training's memory format "
                                    f"and contiguous, {args.threads} intra-op threads; 2 warm-up steps excluded",
                        "inference": "1 intra-op thread; model only = one forward of (1, 3, 224, 224) under "
                                     "inference_mode; end to end = prepare_lesion_input on a 512x512 slice + predict",
                    }, "architectures": {}}
    existing = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.skip_throughput and existing.get("architectures"):
        result["architectures"] = existing["architectures"]
        result["preprocessing"] = existing.get("preprocessing", {})
        result["machine_throughput"] = existing.get("machine")
    else:
        for arch in archs:
            print(f"{arch}: training throughput ...", flush=True)
            train = bench_training(arch, args.batch, args.steps, args.threads)
            print(f"{arch}: inference latency ...", flush=True)
            infer = bench_inference(arch, args.repeats)
            result["architectures"][arch] = {"training": train, "inference": infer}
            print(f"  {train['images_per_second']:.1f} img/s training; inference median "
                  f"{infer['end_to_end']['median_ms']:.1f} ms, p95 {infer['end_to_end']['p95_ms']:.1f} ms", flush=True)
        result["preprocessing"] = bench_preprocessing(args.repeats)
    old_accuracy = existing.get("accuracy")
    old_seed = int(existing.get("parameters", {}).get("seed", 7))
    if args.accuracy:
        print("small training runs ...", flush=True)
        new = bench_accuracy([a for a in args.accuracy_archs.split(",") if a],
                             [v for v in args.variants.split(",") if v], [int(x) for x in args.seeds.split(",")],
                             args.lesions_per_class, args.epochs, args.patience, args.data)
        result["accuracy"] = _merge_accuracy(old_accuracy, new, old_seed)
    elif old_accuracy:
        result["accuracy"] = _merge_accuracy(old_accuracy, {"runs": {}, "splits": {}}, old_seed)
    result["targets"] = {
        arch: {name: {"target": limit, "value": v["inference"]["end_to_end"]["p95_ms"],
                      "pass": v["inference"]["end_to_end"]["p95_ms"] <= limit}
               for name, limit in TARGETS.items()}
        for arch, v in result["architectures"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
