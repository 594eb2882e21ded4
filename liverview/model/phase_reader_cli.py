"""`python -m liverview.model.phase_reader_cli`: fit the bundled CNN's phase reader.

Measures every lesion's enhancement in each phase its patch holds (`imaging.lesion_enhancement`),
has the bundle's CNN answer each lesion on each of those phases (as the app answers: the same
preprocessing and flips), crops each phase around the lesion (`structure_reader.lesion_inputs`), and
fits on the split's training lesions either a structure network (`--kind structure`, the default:
`phase_reader.fit_structure_reader`) or one logistic regression per subset of phases (`--kind
logistic`: `phase_reader.fit_phase_reader`); scores it on the validation and test lesions, and writes
`phase_reader.json` (and a network's weights) into the bundle. `make phase-reader` runs it on the
simulated multiphase data.

    python -m liverview.model.phase_reader_cli BUNDLE DATASET... [--train-only DATASET...] [--split RUN/split.json]
        [--kind structure|logistic] [--epochs N] [--neighbour-slices N]
    python -m liverview.model.phase_reader_cli BUNDLE DATASET... --evaluate OUT.json [--store]   (score the stored reader)
Exit status: 0 done, 1 error, 2 usage (including options that would be ignored: fitting options with
`--evaluate`, `--epochs` or `--neighbour-slices` with `--kind logistic`, `--store` without `--evaluate`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from liverview.annotations.dataset_format import read_patch
from liverview.atomic_write import write_text_atomic
from liverview.imaging.lesion_enhancement import measure_lesion_enhancement
from liverview.imaging.measure import mask_long_axis_mm
from liverview.model.data import LesionRecord, load_records
from liverview.model.domain import domain_from_records
from liverview.model.inference import LoadedModel, load_bundle, predict_flips
from liverview.model.metrics import confusion_matrix, macro_f1_interval, metrics_from_confusion
from liverview.model.number_format import format_number
from liverview.model.phase_reader import (PHASE_READER_CARD, SIZE_BANDS, STRUCTURE_EPOCHS, PhaseReader, fit_phase_reader,
                                         fit_structure_reader, reader_scores_simulated, score_phase_reader,
                                         subset_name)
from liverview.model.structure_reader import NEIGHBOUR_SLICES, LesionInputs, lesion_inputs
from liverview.model.split import Split, check_split_matches, split_records
from liverview.model.transforms import PHASE_NAMES, select_key_slice, select_slab
from liverview.model.uncertainty import answer_from_copies

log = logging.getLogger("liverview.model.phase_reader_cli")
#: The options that fit a reader, by fit_for_bundle's parameter, as the command line spells them.
FIT_OPTIONS = {"training_only": "--train-only", "split_path": "--split", "seed": "--seed", "recipe": "--recipe",
               "kind": "--kind", "epochs": "--epochs", "neighbour_slices": "--neighbour-slices"}
#: The fitting options only a structure network has.
NETWORK_OPTIONS = ("epochs", "neighbour_slices")
DEFAULT_RECIPE = "make phase-reader"


@dataclass
class ReadLesions:
    """What `read_records` measured, one entry per record."""

    #: Per phase: the enhancement numbers on the key slice.
    features: list[dict[str, np.ndarray]]
    #: Per phase: the CNN's answer (class probabilities).
    answers: list[dict[str, np.ndarray]]
    #: The outline's long axis on the key slice (mm).
    long_axes_mm: list[float]
    #: What a structure network reads of each lesion (`structure_reader.lesion_inputs`).
    inputs: list[LesionInputs]


def read_records(loaded: LoadedModel, records: Sequence[LesionRecord], phases: Sequence[str],
                 batch_size: int = 32, cnn_phases: Sequence[str] | None = None,
                 neighbour_slices: int = NEIGHBOUR_SLICES) -> ReadLesions:
    """Per record, on the key slice of each of `phases` its patch holds: the enhancement numbers, and the
    CNN's answer (class probabilities) on that phase's slab through the CNN's own preprocessing,
    averaged over the flips as the app does (on `cnn_phases` only, where given: a structure network does
    not read the CNN's answers); the outline's long axis; and a structure network's inputs, read on
    `neighbour_slices` slices each side of the key slice. Each patch is read once."""
    features: list[dict[str, np.ndarray]] = []
    long_axes: list[float] = []
    inputs: list[LesionInputs] = []
    answers: list[dict[str, np.ndarray]] = [{} for _ in records]
    pending: list[tuple[int, str, torch.Tensor]] = []

    def answer() -> None:
        copies = predict_flips(loaded, [tensor for _, _, tensor in pending])
        for (index, phase, _), probabilities in zip(pending, answer_from_copies(copies, loaded.flip_average)):
            answers[index][phase] = probabilities
        pending.clear()

    for index, record in enumerate(records):
        # Only a structure network reads the slabs; a logistic reader (`cnn_phases` None) reads the CNN's answers.
        if cnn_phases is not None and neighbour_slices > record.margin_z_slices:
            raise ValueError(f"{record.dataset} keeps {record.margin_z_slices} slice(s) around each lesion but the "
                             f"network reads {neighbour_slices} on each side: its slab would repeat the patch's end "
                             "slice where the app reads the real one")
        patch = read_patch(record.patch_path)
        z = select_key_slice(patch.mask)
        spacing = (float(patch.spacing_mm[-2]), float(patch.spacing_mm[-1]))
        held = [p for p in patch.phase_names if p in phases]
        features.append({p: measure_lesion_enhancement(patch.hu_of(p)[z], patch.mask[z], spacing) for p in held})
        long_axes.append(mask_long_axis_mm(patch.mask[z], spacing))
        inputs.append(lesion_inputs({p: select_slab(patch.hu_of(p), z, neighbour_slices) for p in held}, patch.mask[z],
                                    spacing, phases, measured=features[-1], neighbour_slices=neighbour_slices))
        for phase in (p for p in held if cnn_phases is None or p in cnn_phases):
            slab = select_slab(patch.hu_of(phase), z, loaded.preprocess_config.neighbour_slices)
            pending.append((index, phase, loaded.preprocess(slab, patch.mask[z], spacing)))
        if len(pending) >= batch_size:
            answer()
        if index % 200 == 0:
            log.info("read %d of %d lesions", index, len(records))
    if pending:
        answer()
    return ReadLesions(features, answers, long_axes, inputs)


def fit_for_bundle(bundle: Path, datasets: Sequence[Path], split_path: Path | None = None,
                   training_only: Sequence[Path] = (), seed: int = 1, phases: Sequence[str] = PHASE_NAMES,
                   cnn_phase: str = "portal_venous", recipe: str = "", kind: str = "structure",
                   epochs: int = STRUCTURE_EPOCHS, neighbour_slices: int = NEIGHBOUR_SLICES) -> PhaseReader:
    """Fit the phase reader of `bundle` (`kind` "structure": a network reading `neighbour_slices` slices on
    each side of the key slice, trained `epochs` epochs with `seed`; "logistic": regressions) on `datasets`
    split by `split_path` (else by patient with `seed`, as `liverview-train --seed` splits), score it and
    write it into the bundle."""
    if kind not in ("structure", "logistic"):
        raise ValueError(f"a phase reader is a structure network or logistic regressions, not {kind!r}")
    loaded = load_bundle(bundle, phase_reader=False)
    records = load_records(datasets, loaded.classes, training_only).records
    if split_path is None:
        split = split_records(records, seed)
    else:
        split = Split.load(split_path)
        problems = check_split_matches(split, records)
        if problems:
            raise ValueError(f"{split_path} does not fit these datasets: {'; '.join(problems)}")
    read = read_records(loaded, records, phases, cnn_phases=(cnn_phase,) if kind == "structure" else None,
                        neighbour_slices=neighbour_slices)
    features, answers = read.features, read.answers
    labels = [r.label for r in records]
    index = {r.uid: i for i, r in enumerate(records)}

    def rows(name: str) -> list[int]:
        return [index[u] for u in split.subset(name)]

    def pick(values: Sequence, chosen: list[int]) -> list:
        return [values[i] for i in chosen]

    train = rows("train")
    sha = str(loaded.info.get("sha256") or "")
    if kind == "structure":
        reader = fit_structure_reader(pick(read.inputs, train), pick(labels, train), loaded.classes, phases, cnn_phase,
                                      sha, epochs=epochs, seed=seed,
                                      progress=lambda fraction, message: log.info("%s", message))
    else:
        reader = fit_phase_reader(pick(features, train), pick(answers, train), pick(labels, train), loaded.classes,
                                  phases, cnn_phase, sha)
    reader.metrics = {}
    for name in ("val", "test"):
        chosen = rows(name)
        for subset, scores in score_phase_reader(reader, pick(features, chosen), pick(answers, chosen),
                                                 pick(labels, chosen), inputs=pick(read.inputs, chosen)).items():
            reader.metrics.setdefault(subset, {})[name] = scores
    cnn_alone = score_cnn_alone(loaded.classes, answers, labels, rows("test"), cnn_phase)
    domain = domain_from_records([records[i] for i in train], read_phases=phases)
    livers = {p: [features[i][p][1] for i in train if p in features[i]] for p in phases}
    domain = replace(domain, liver_hu_by_phase={p: (float(min(v)), float(max(v))) for p, v in livers.items() if v})
    reader.training = {"training_domain": domain.to_dict(), "datasets": [str(Path(d)) for d in datasets], "training_only": [str(Path(d)) for d in training_only],
                       "split": str(split_path) if split_path else f"by patient, seed {seed}", "n_train": len(train), "n_val": len(rows("val")),
                       "n_test": len(rows("test")), "cnn": f"{loaded.name} {loaded.version}",
                       "cnn_alone_test": {"n": cnn_alone["n"], "accuracy": cnn_alone["accuracy"],
                                          "macro_f1": cnn_alone["macro_f1"]},
                       "simulated": all(r.simulated for r in records), "recipe": recipe, "kind": reader.kind,
                       **({"epochs": epochs, "seed": seed, "neighbour_slices": neighbour_slices}
                          if kind == "structure" else {}),
                       "fitted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    reader.save(bundle)
    write_text_atomic(bundle / PHASE_READER_CARD, render_reader_card(reader))
    return reader


def score_cnn_alone(classes: Sequence[str], answers: Sequence[dict[str, np.ndarray]], labels: Sequence[str],
                    rows: Iterable[int], phase: str, groups: Sequence[str] | None = None) -> dict:
    """The CNN's own answer on `phase` scored on the `rows` that hold it (`metrics.metrics_from_confusion`),
    with the macro-F1's interval over `groups` when given: what the app answers without the reader."""
    chosen = [i for i in rows if phase in answers[i]]
    truth = [classes.index(labels[i]) for i in chosen]
    predicted = [int(np.argmax(answers[i][phase])) for i in chosen]
    metrics = metrics_from_confusion(confusion_matrix(truth, predicted, len(classes)), classes)
    if groups is not None:
        metrics["macro_f1_interval"] = list(macro_f1_interval(truth, predicted, [groups[i] for i in chosen],
                                                              len(classes)))
    return metrics


def evaluate_bundle_reader(bundle: Path, datasets: Sequence[Path], phases: Sequence[str] = PHASE_NAMES) -> dict:
    """The bundle's stored phase reader, and its CNN alone on the portal-venous series, scored on every
    lesion of `datasets` (a held-out set none of which was fitted on), with 95 % intervals over patients."""
    loaded = load_bundle(bundle, phase_reader=True)
    reader = loaded.phase_reader
    if reader is None:
        raise ValueError(f"{bundle} holds no phase reader fitted to its CNN")
    used = {Path(d).resolve() for d in reader.training.get("datasets", []) + reader.training.get("training_only", [])}
    reused = [str(d) for d in datasets if Path(d).resolve() in used]
    if reused:
        raise ValueError(f"the reader was fitted on {', '.join(reused)}: a held-out test needs other lesions")
    records = load_records(datasets, loaded.classes).records
    network = reader.network
    read = read_records(loaded, records, phases, cnn_phases=(reader.cnn_phase,) if network is not None else None,
                        neighbour_slices=network.neighbour_slices if network is not None else NEIGHBOUR_SLICES)
    labels = [r.label for r in records]
    groups = [r.group for r in records]
    subsets = score_phase_reader(reader, read.features, read.answers, labels, groups, read.long_axes_mm, read.inputs)
    cnn = score_cnn_alone(loaded.classes, read.answers, labels, range(len(records)), reader.cnn_phase, groups)
    return {
        "bundle": str(bundle), "cnn": f"{loaded.name} {loaded.version}", "cnn_sha256": reader.cnn_sha256,
        "reader_fitted": reader.training.get("fitted"), "datasets": [str(d) for d in datasets],
        "n_lesions": len(records), "n_patients": len(set(groups)), "simulated": all(r.simulated for r in records),
        "classes": list(loaded.classes),
        "cnn_alone": {"phase": reader.cnn_phase, **{key: cnn[key] for key in ("n", "accuracy", "macro_f1",
                                                                              "macro_f1_interval")}},
        "subsets": {name: {key: scores[key] for key in ("n", "accuracy", "macro_f1", "macro_f1_interval", "per_class",
                                                  "confusion_matrix", "by_uncertainty", "by_size")}
                    for name, scores in subsets.items()},
    }


def store_heldout_scores(bundle: Path, result: dict) -> PhaseReader:
    """Write `evaluate_bundle_reader`'s scores into the bundle's reader, beside the scores of its fit (the
    app then quotes them: more lesions than the fit's test split), and re-render its card."""
    reader = PhaseReader.load(bundle)
    if reader.cnn_sha256 != result["cnn_sha256"]:
        raise ValueError(f"{bundle}'s phase reader is not the one these scores are of")
    for subset, scores in result["subsets"].items():
        reader.metrics.setdefault(subset, {})["heldout"] = {key: scores[key] for key in (
            "n", "accuracy", "macro_f1", "macro_f1_interval", "by_uncertainty", "by_size")}
    reader.training["heldout"] = {key: result[key] for key in ("datasets", "n_lesions", "n_patients", "evaluated",
                                                               "cnn_alone", "simulated")}
    reader.save(bundle)
    write_text_atomic(bundle / PHASE_READER_CARD, render_reader_card(reader))
    return reader


def render_reader_card(reader: PhaseReader) -> str:
    """PHASE_READER.md: what the reader is, what it was fitted on, and its scores per subset of phases."""
    t = reader.training
    cnn = t.get("cnn_alone_test") or {}
    lines = [
        "# Phase reader", "",
        ("Trained beside" if reader.network is not None else "Fitted to")
        + f" the CNN {t.get('cnn', '')} (weights sha256 {reader.cnn_sha256[:12]}) on "
        + ("**simulated** " if t.get("simulated") else "") + f"multiphase lesions: {t.get('n_train')} to fit, "
        f"{t.get('n_val')} validation and {t.get('n_test')} test lesions ({t.get('split')}); datasets "
        f"{', '.join(t.get('datasets', []) + t.get('training_only', []))}. Recipe: `{t.get('recipe', '')}`.", "",
        _reader_kind_text(reader) + f" The {reader.cnn_phase.replace('_', '-')} series alone is "
        "answered by the CNN, as without the reader.", "",
        f"The CNN alone on the same test lesions' portal-venous series: macro-F1 {format_number(cnn.get('macro_f1'))} "
        f"({cnn.get('n')} lesions).", "",
    ]
    heldout = t.get("heldout")
    if heldout:
        cnn_held = heldout.get("cnn_alone") or {}
        kind = "simulated lesions" if reader_scores_simulated(reader) else "lesions, not all of them simulated,"
        lines += [f"Held out: the reader as fitted, scored on {heldout.get('n_lesions')} further {kind} of "
                  f"{heldout.get('n_patients')} patients none of which it was fitted on ({', '.join(heldout.get('datasets', []))}; "
                  f"{heldout.get('evaluated')}), with 95 % bootstrap intervals over patients. The app quotes these."
                  + (f" The CNN alone on their portal-venous series: macro-F1 {format_number(cnn_held.get('macro_f1'))}."
                     if cnn_held else ""), ""]
    lines += ["| phases read | validation macro-F1 | test macro-F1 | test lesions |" + (" held-out macro-F1 (95 %) |" if heldout else ""),
              "|---|---|---|---|" + ("---|" if heldout else "")]
    for phases in reader.subsets():
        scores = reader.metrics.get(subset_name(phases), {})
        val, test, held = scores.get("val") or {}, scores.get("test") or {}, scores.get("heldout") or {}
        row = (f"| {subset_name(p.replace('_', '-') for p in phases)} | {format_number(val.get('macro_f1'))} | "
               f"{format_number(test.get('macro_f1'))} | {test.get('n', 0)} |")
        if heldout:
            low, high = held.get("macro_f1_interval") or (None, None)
            row += f" {format_number(held.get('macro_f1'))} ({format_number(low)}-{format_number(high)}) |"
        lines.append(row)
    lines += _size_table(reader)
    lines += ["", f"The {reader.cnn_phase.replace('_', '-')} row is the reader's own reading of that phase alone, "
                  "for comparison; the app answers that phase alone with the CNN.", "",
              "Measured on simulated lesions only; real lesions are measured independently." if reader_scores_simulated(reader)
              else "The quoted scores include lesions that were not simulated.", ""]
    return "\n".join(lines)


def _reader_kind_text(reader: PhaseReader) -> str:
    """What the reader computes, in a sentence or two for its card."""
    numbers = ("the lesion's enhancement measured in those phases (lesion and liver-ring median HU, their "
               "difference, rim minus core, spread, share above the liver, brightest tenth minus liver)")
    if reader.network is not None:
        t = reader.training
        n = reader.network.neighbour_slices
        slices = {0: "the key slice alone", 1: "the key slice and its two neighbours"}.get(
            n, f"the key slice and {n} neighbours on each side")
        return ("One structure network answers every subset of the phases a lesion is read on. Per phase it "
                f"reads {slices} cropped around the outline (in HU against the liver "
                f"ring), the outline, and {numbers}; one encoder is shared by the phases and a phase not read is "
                "left out, not filled in. It does not read the CNN's answers. Trained "
                f"{t.get('epochs', '?')} epochs with seed {t.get('seed', '?')} on random subsets of each "
                "lesion's phases (liverview.model.structure_reader).")
    return (f"For every subset of the phases a lesion is read on, one logistic regression over {numbers} and the "
            f"CNN's answer on each of them (the CNN was trained on {reader.cnn_phase.replace('_', '-')} slices; on "
            "the other phases its answer is a number the regression learnt to weigh).")


def _size_table(reader: PhaseReader) -> list[str]:
    """The held-out scores per size band (`phase_reader.size_band`), where they were stored."""
    held = {subset_name(phases): (reader.metrics.get(subset_name(phases), {}).get("heldout") or {}).get("by_size")
            for phases in reader.subsets()}
    if not any(held.values()):
        return []
    lines = ["", "Held out, by the outline's long axis on the key slice (the LI-RADS size bands):", "",
             "| phases read | " + " | ".join(f"{band}: lesions | macro-F1 (95 %)" for band in SIZE_BANDS) + " |",
             "|---|" + "---|---|" * len(SIZE_BANDS)]
    for phases in reader.subsets():
        by_size = held[subset_name(phases)] or {}
        cells = []
        for band in SIZE_BANDS:
            scores = by_size.get(band) or {}
            low, high = scores.get("macro_f1_interval") or (None, None)
            cells += [str(scores.get("n", 0)),
                      f"{format_number(scores.get('macro_f1'))} ({format_number(low)}-{format_number(high)})"]
        lines.append(f"| {subset_name(p.replace('_', '-') for p in phases)} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liverview.model.phase_reader_cli", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="the CNN's bundle folder; phase_reader.json is written into it")
    p.add_argument("datasets", nargs="+", type=Path, help="multiphase dataset folders (liverview-synth --phases)")
    # Fitting options are left out of `args` unless given, so that one given with --evaluate (which fits
    # nothing) is refused rather than ignored, and their defaults stay those of fit_for_bundle (but for the
    # recipe, which from this command is `make phase-reader`'s).
    fit = p.add_argument_group("fitting (not with --evaluate)")
    fit.add_argument("--train-only", nargs="*", type=Path, default=argparse.SUPPRESS, dest="training_only",
                     metavar="DATASET",
                     help="datasets whose lesions only train")
    fit.add_argument("--split", type=Path, default=argparse.SUPPRESS, dest="split_path",
                     metavar="RUN/split.json",
                     help="split.json of a training run on these datasets (default: split by patient with --seed, "
                          "as liverview-train does)")
    fit.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="the split's and the training's seed (default 1)")
    fit.add_argument("--recipe", default=argparse.SUPPRESS,
                     help=f"the command that reproduces this reader (default {DEFAULT_RECIPE!r})")
    fit.add_argument("--kind", choices=("structure", "logistic"), default=argparse.SUPPRESS,
                     help="a structure network reading each phase's crop (default) or one logistic regression per "
                          "subset of phases")
    fit.add_argument("--epochs", type=int, default=argparse.SUPPRESS,
                     help=f"a structure network's training epochs (default {STRUCTURE_EPOCHS})")
    fit.add_argument("--neighbour-slices", type=int, default=argparse.SUPPRESS, dest="neighbour_slices",
                     help=f"slices a structure network reads on each side of the key slice (default {NEIGHBOUR_SLICES})")
    p.add_argument("--evaluate", type=Path, metavar="OUT.json",
                   help="fit nothing: score the bundle's stored reader on every lesion of DATASET... (held out) "
                        "and write the scores to OUT.json")
    p.add_argument("--store", action="store_true",
                   help="with --evaluate: also keep the scores in the bundle's reader, which the app then quotes")
    args = p.parse_args(argv)
    fitting = {k: v for k, v in vars(args).items() if k in FIT_OPTIONS}
    if args.evaluate is not None and fitting:
        p.error(f"--evaluate scores the stored reader and fits nothing; leave out "
                f"{', '.join(flag for name, flag in FIT_OPTIONS.items() if name in fitting)}")
    if args.store and args.evaluate is None:
        p.error("--store keeps the scores of --evaluate; give --evaluate OUT.json")
    for name in NETWORK_OPTIONS:
        if name in fitting and fitting.get("kind", "structure") != "structure":
            p.error(f"{FIT_OPTIONS[name]} is a structure network's; --kind logistic has none")
    if fitting.get("epochs", 1) < 1:
        p.error("--epochs must be 1 or more")
    if fitting.get("neighbour_slices", 0) < 0:
        p.error("--neighbour-slices must be 0 or more")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.evaluate is not None:
        return _evaluate(args.bundle, args.datasets, args.evaluate, args.store)
    try:
        reader = fit_for_bundle(args.bundle, args.datasets, **{"recipe": DEFAULT_RECIPE, **fitting})
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    for subset, scores in reader.metrics.items():
        test = scores.get("test") or {}
        log.info("%-55s test macro-F1 %.3f on %d lesions", subset, test.get("macro_f1", float("nan")), test.get("n", 0))
    return 0


def _evaluate(bundle: Path, datasets: Sequence[Path], out: Path, store: bool) -> int:
    try:
        result = evaluate_bundle_reader(bundle, datasets)
        result["evaluated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
        if store:
            store_heldout_scores(bundle, result)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    cnn = result["cnn_alone"]
    log.info("%-55s macro-F1 %.3f [%.3f, %.3f] on %d lesions", f"CNN alone, {cnn['phase']}", cnn["macro_f1"],
             *cnn["macro_f1_interval"], cnn["n"])
    for subset, scores in result["subsets"].items():
        log.info("%-55s macro-F1 %.3f [%.3f, %.3f] on %d lesions", subset, scores["macro_f1"],
                 *scores["macro_f1_interval"], scores["n"])
        for band, part in scores["by_size"].items():
            log.info("%-55s macro-F1 %.3f [%.3f, %.3f] on %d lesions", f"  {band}", part["macro_f1"],
                     *part["macro_f1_interval"], part["n"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
