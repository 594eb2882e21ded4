"""The phase reader: a lesion's class from its enhancement in every contrast phase read, with the CNN.

The bundled CNN reads the portal-venous key slice: shape, margin, texture. A radiologist reads the
lesion's enhancement across phases as well (`imaging.lesion_enhancement`). The phase reader combines
both: for every subset of the phases a lesion can be read on, one multinomial logistic regression
over the standardised enhancement numbers of those phases and the log of the CNN's answer on each
of them. The CNN was trained on portal-venous slices; on another phase its answer is one more
number whose meaning the regression learns from the training lesions. A missing phase is handled
explicitly, by the reader of the subset that is there, never by zeros that look like data.

A reader may instead be a structure network (`structure_reader`): one small network that reads each
phase's crop of the lesion beside the same numbers and answers every subset of the phases. Either
kind answers through `subset_for` and `probabilities_of`, is scored the same way, and is quoted the
same way in the app.

It is fitted to one CNN (`cnn_sha256`): the CNN's answers on lesions it never trained on are part of
the regressions' input, and its held-out scores stand beside the CNN's, so a new CNN needs a new fit
(`phase_reader_cli`). Stored beside the CNN's weights in its bundle as `PHASE_READER_FILE` (and a
network's weights beside it, `PHASE_READER_WEIGHTS_PREFIX`); the regressions are numpy at inference (scikit-learn
fits them, the `train` extra).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liverview.atomic_write import write_text_atomic
from liverview.imaging.lesion_enhancement import FEATURES
from liverview.model.metrics import confusion_matrix, macro_f1_interval, metrics_from_confusion
from liverview.model.uncertainty import metrics_by_uncertainty, normalised_entropy, uncertainty_level
from liverview.progress import Progress, ShouldStop

if TYPE_CHECKING:  # torch is imported where a network is read or trained: the window opens without it
    from liverview.model.structure_reader import LesionInputs, StructureNet

PHASE_READER_FILE = "phase_reader.json"
#: A structure network's weights (its state_dict, read with torch.load(weights_only=True)) are saved as
#: phase_reader-<first 16 hex digits of their SHA-256>.pt: new weights never overwrite the ones the JSON
#: names, so a crash between the two writes leaves the old reader whole.
PHASE_READER_WEIGHTS_PREFIX = "phase_reader-"
#: The CNN's probabilities enter as logs, clipped here (a 0 would be minus infinity).
MIN_PROBABILITY = 1e-4
#: The reader's card, beside the CNN's MODEL_CARD.md.
PHASE_READER_CARD = "PHASE_READER.md"
#: A structure network is trained this many epochs unless told otherwise (a fixed number: nothing is
#: chosen on the test lesions).
STRUCTURE_EPOCHS = 40
#: Version 2 may hold a structure network; version 1 files (regressions only) still load.
FORMAT, FORMAT_VERSION = "liverview.phase-reader", 2


class PhaseReaderError(ValueError):
    """A phase reader file cannot be used; the message says why."""


#: Ends the model id stored with the phase reader's answers (`answer_id`).
_ANSWER_SUFFIX = " + phase reader"


def answer_id(cnn_id: str) -> str:
    """The model id stored with an answer the phase reader gave on top of the CNN `cnn_id`."""
    return cnn_id + _ANSWER_SUFFIX


def answered_by_reader(model_id: str) -> bool:
    """Whether a stored answer's `model_id` is a phase reader's (`answer_id`)."""
    return model_id.endswith(_ANSWER_SUFFIX)


def subset_name(phases: Iterable[str]) -> str:
    return " + ".join(phases)


#: The CNN's answer (class probabilities) per phase it read.
CnnAnswers = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class SubsetReader:
    """The reader of one subset of phases: softmax(coef @ ((x - mean) / scale) + intercept), x being the
    phases' enhancement numbers, then the log of the CNN's answer on each of `cnn_phases`."""

    phases: tuple[str, ...]
    cnn_phases: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (classes, inputs)
    intercept: np.ndarray  # (classes,)

    def inputs(self, features: Mapping[str, np.ndarray], cnn: CnnAnswers) -> np.ndarray:
        parts = [np.asarray(features[p], dtype=np.float64) for p in self.phases]
        for phase in self.cnn_phases:
            if phase not in cnn:
                raise ValueError(f"the reader of {subset_name(self.phases)} needs the CNN's answer on {phase}")
            parts.append(np.log(np.clip(np.asarray(cnn[phase], dtype=np.float64), MIN_PROBABILITY, 1.0)))
        return np.concatenate(parts)

    def probabilities(self, features: Mapping[str, np.ndarray], cnn: CnnAnswers) -> np.ndarray:
        z = (self.inputs(features, cnn) - self.mean) / self.scale
        logits = self.coef @ z + self.intercept
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def to_dict(self) -> dict[str, Any]:
        return {"phases": list(self.phases), "cnn_phases": list(self.cnn_phases), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubsetReader:
        return cls(tuple(data["phases"]), tuple(data["cnn_phases"]), np.asarray(data["mean"], dtype=np.float64),
                   np.asarray(data["scale"], dtype=np.float64), np.asarray(data["coef"], dtype=np.float64),
                   np.asarray(data["intercept"], dtype=np.float64))


@dataclass
class PhaseReader:
    classes: list[str]
    #: Every phase it reads, in its order.
    phases: tuple[str, ...]
    #: The phase the CNN was trained on: read on that phase alone, a lesion is the CNN's alone.
    cnn_phase: str
    #: SHA-256 of the CNN weights it was fitted to.
    cnn_sha256: str
    readers: dict[tuple[str, ...], SubsetReader]
    #: Per subset name: what it scored on the held-out lesions ({"val": {...}, "test": {...}}).
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The data and recipe it was fitted with.
    training: dict[str, Any] = field(default_factory=dict)
    #: A structure network answering every subset of `phases` (`structure_reader`), instead of `readers`.
    network: StructureNet | None = None

    @property
    def kind(self) -> str:
        return "structure network" if self.network is not None else "logistic regressions"

    def subsets(self) -> list[tuple[str, ...]]:
        """Every subset of phases it answers, each in `phases` order."""
        return phase_subsets(self.phases) if self.network is not None else list(self.readers)

    def subset_for(self, available: Iterable[str]) -> tuple[str, ...] | None:
        """The phases of `available` it reads (None when it answers none of them)."""
        here = set(available)
        subset = tuple(p for p in self.phases if p in here)
        return subset if subset in self.subsets() else None

    def reader_for(self, available: Iterable[str]) -> SubsetReader | None:
        """The regression of the phases in `available` (None for a network, or when it knows none of them)."""
        subset = self.subset_for(available)
        return self.readers.get(subset) if subset is not None else None

    def probabilities_of(self, subset: tuple[str, ...], features: Sequence[Mapping[str, np.ndarray]],
                         cnn: Sequence[CnnAnswers], inputs: Sequence[LesionInputs] | None = None) -> np.ndarray:
        """(n, classes): each lesion read on `subset` - from its numbers and the CNN's answers for the
        regressions, from its `inputs` (`structure_reader.lesion_inputs`) for a network."""
        if self.network is not None:
            return self.network_answers(inputs, [subset])[subset]
        sub = self.readers[subset]
        return np.stack([sub.probabilities(f, c) for f, c in zip(features, cnn)])

    def network_answers(self, inputs: Sequence[LesionInputs] | None,
                        subsets: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], np.ndarray]:
        """The network's (n, classes) answers per subset, from one pass (`structure_reader.predict_subsets`);
        phases in none of `subsets` are not encoded."""
        if self.network is None:
            raise ValueError("this reader is logistic regressions, not a network")
        if inputs is None:
            raise ValueError("the structure network reads each phase's crop of the lesion; none was given")
        from liverview.model.structure_reader import InputArrays, predict_subsets

        arrays = InputArrays.stack(inputs)
        arrays.present &= np.array([any(p in s for s in subsets) for p in self.phases])
        return predict_subsets(self.network, arrays, np.arange(len(inputs)), self.phases, subsets)

    def to_dict(self) -> dict[str, Any]:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION if self.network is not None else 1,
                "classes": self.classes, "phases": list(self.phases), "cnn_phase": self.cnn_phase,
                "cnn_sha256": self.cnn_sha256, "features": list(FEATURES),
                "readers": [r.to_dict() for r in self.readers.values()], "metrics": self.metrics,
                "training": self.training}
        if self.network is not None:
            data["network"] = {**self.network.shape, **_crop_spec()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseReader:
        if data.get("format") != FORMAT or int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise PhaseReaderError(f"not a {FORMAT} file of version {FORMAT_VERSION} or older")
        if list(data.get("features", [])) != list(FEATURES):
            raise PhaseReaderError(f"it reads the features {data.get('features')}, this liverview measures {list(FEATURES)}")
        readers = [SubsetReader.from_dict(r) for r in data["readers"]]
        return cls(list(data["classes"]), tuple(data["phases"]), str(data["cnn_phase"]), str(data["cnn_sha256"]),
                   {r.phases: r for r in readers}, dict(data.get("metrics", {})), dict(data.get("training", {})))

    def save(self, folder: str | Path) -> Path:
        """Write the reader into `folder`: a network's weights first, under a name of their own (their
        hash), then the JSON that names them, then any weights it no longer names."""
        folder = Path(folder)
        data = self.to_dict()
        if self.network is not None:
            import torch

            staging = folder / (PHASE_READER_WEIGHTS_PREFIX + "new.pt.tmp")
            torch.save(self.network.state_dict(), staging)
            digest = hashlib.sha256(staging.read_bytes()).hexdigest()
            weights = folder / f"{PHASE_READER_WEIGHTS_PREFIX}{digest[:16]}.pt"
            staging.replace(weights)
            data["network"].update({"file": weights.name, "sha256": digest})
        path = folder / PHASE_READER_FILE
        write_text_atomic(path, json.dumps(data, indent=1))
        named = data.get("network", {}).get("file")
        for old in folder.glob(PHASE_READER_WEIGHTS_PREFIX + "*.pt"):
            if old.name != named:
                old.unlink()
        return path

    @classmethod
    def load(cls, folder: str | Path) -> PhaseReader:
        path = Path(folder) / PHASE_READER_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            reader = cls.from_dict(data)
            if "network" in data:
                reader.network = _load_network(Path(folder), data["network"], len(reader.classes), len(reader.phases))
            return reader
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise PhaseReaderError(f"{path}: {exc}") from exc


def _crop_spec() -> dict[str, Any]:
    """How this liverview crops a phase for the network; a network saved with another crop is refused."""
    from liverview.model.structure_reader import CONTEXT_MM, CROP_PX, CROP_VERSION, HU_SCALE

    return {"crop_px": CROP_PX, "context_mm": CONTEXT_MM, "hu_scale": HU_SCALE, "crop_version": CROP_VERSION}


def _load_network(folder: Path, spec: Mapping[str, Any], n_classes: int, n_phases: int) -> StructureNet:
    """The structure network `spec` describes, its weights checked against their recorded hash."""
    import torch

    from liverview.model.structure_reader import StructureNet

    crop = _crop_spec()
    # A reader saved without a crop version is read as version 1.
    saved = {key: spec.get(key, 1 if key == "crop_version" else None) for key in crop}
    if saved != crop:
        raise ValueError(f"its network reads crops of {saved}; this liverview crops {crop}: train it again")
    if int(spec["n_numbers"]) != len(FEATURES):
        raise ValueError(f"its network reads {spec['n_numbers']} numbers per phase; this liverview gives it the "
                         f"{len(FEATURES)} enhancement numbers")
    weights = folder / str(spec["file"])
    if hashlib.sha256(weights.read_bytes()).hexdigest() != spec.get("sha256"):
        raise ValueError(f"{weights.name} is not the file the reader was saved with (its sha256 differs)")
    # A network saved before the number of slices was recorded reads one on each side of the key slice.
    net = StructureNet(n_classes, int(spec["n_numbers"]), n_phases, int(spec["width"]), int(spec["embed"]),
                       int(spec.get("neighbour_slices", 1)))
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


def phase_subsets(phases: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of `phases`, each in their order."""
    return [combo for n in range(1, len(phases) + 1) for combo in itertools.combinations(phases, n)]


def _readable(subset: Sequence[str], features: Mapping[str, np.ndarray], cnn: CnnAnswers | None) -> bool:
    """Measured in every phase of `subset`, and answered there by the CNN where `cnn` is asked about."""
    return all(p in features and (cnn is None or p in cnn) for p in subset)


def fit_phase_reader(features: Sequence[Mapping[str, np.ndarray]], cnn: Sequence[CnnAnswers], labels: Sequence[str],
                     classes: Sequence[str], phases: Sequence[str], cnn_phase: str, cnn_sha256: str) -> PhaseReader:
    """One logistic regression per subset of `phases`, each on the lesions measured and answered by the
    CNN in all of its phases."""
    from sklearn.linear_model import LogisticRegression

    readers: dict[tuple[str, ...], SubsetReader] = {}
    for subset in phase_subsets(phases):
        rows = [i for i in range(len(features)) if _readable(subset, features[i], cnn[i])]
        if len({labels[i] for i in rows}) < 2:
            continue
        probe = SubsetReader(subset, subset, np.zeros(1), np.ones(1), np.zeros((1, 1)), np.zeros(1))
        x = np.stack([probe.inputs(features[i], cnn[i]) for i in rows])
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        model = LogisticRegression(max_iter=5000).fit((x - mean) / scale, [labels[i] for i in rows])
        order = [list(model.classes_).index(c) if c in model.classes_ else None for c in classes]
        coef = np.array([model.coef_[k] if k is not None else np.zeros(x.shape[1]) for k in order])
        intercept = np.array([model.intercept_[k] if k is not None else -1e3 for k in order])
        readers[subset] = SubsetReader(subset, subset, mean, scale, coef, intercept)
    return PhaseReader(list(classes), tuple(phases), cnn_phase, cnn_sha256, readers)


def fit_structure_reader(inputs: Sequence[LesionInputs], labels: Sequence[str], classes: Sequence[str],
                         phases: Sequence[str], cnn_phase: str, cnn_sha256: str, *, epochs: int = STRUCTURE_EPOCHS,
                         seed: int = 1,
                         progress: Progress | None = None, should_stop: ShouldStop | None = None) -> PhaseReader:
    """A reader whose answers come from one structure network (`structure_reader.train_network`) trained
    on `inputs` (read on `phases`, in that order) and `labels`."""
    from liverview.model.structure_reader import InputArrays, train_network

    arrays = InputArrays.stack(inputs)
    truth = np.array([list(classes).index(label) for label in labels])
    net = train_network(arrays, truth, np.arange(len(inputs)), len(classes), epochs=epochs, seed=seed,
                        progress=progress, should_stop=should_stop)
    return PhaseReader(list(classes), tuple(phases), cnn_phase, cnn_sha256, {}, network=net)


def reader_uncertainty(probabilities: np.ndarray) -> str:
    """The uncertainty shown with a reader's answer: its normalised entropy's level (the enhancement
    numbers do not change under the flips that the CNN's own uncertainty also looks at)."""
    return uncertainty_level(normalised_entropy(probabilities))


#: LI-RADS sizes observations below and from 20 mm apart (a major feature of its diagnostic table): the
#: held-out scores are also given per band, since what the reader misses lies mostly in the smaller one.
SIZE_BAND_MM = 20.0


def size_band(long_axis_mm: float) -> str:
    """The size band (`SIZE_BAND_MM`) of a lesion whose long axis on its key slice is `long_axis_mm`."""
    return f"under {SIZE_BAND_MM:.0f} mm" if long_axis_mm < SIZE_BAND_MM else f"{SIZE_BAND_MM:.0f} mm and over"


#: The size bands' names, smaller first.
SIZE_BANDS = (size_band(0.0), size_band(SIZE_BAND_MM))


def score_phase_reader(reader: PhaseReader, features: Sequence[Mapping[str, np.ndarray]], cnn: Sequence[CnnAnswers],
                       labels: Sequence[str], groups: Sequence[str] | None = None,
                       long_axes_mm: Sequence[float] | None = None,
                       inputs: Sequence[LesionInputs] | None = None) -> dict[str, Any]:
    """Per subset name: the metrics (`metrics.metrics_from_confusion`) on the lesions measured in all of
    its phases, each read on that subset alone (a network from `inputs`); with `groups` (each lesion's
    patient), also the 95 % bootstrap interval of the macro-F1 over patients; with `long_axes_mm`, also
    `by_size`: n, accuracy and macro-F1 (with its interval where `groups` are given) per `size_band`."""
    out: dict[str, Any] = {}
    n_classes = len(reader.classes)
    # Every subset from one pass: each phase is encoded once per flip, only the head sees the subset.
    every = reader.network_answers(inputs, reader.subsets()) if reader.network is not None else {}
    for subset in reader.subsets():
        rows = [i for i in range(len(features))
                if _readable(subset, features[i], cnn[i] if reader.network is None else None)]
        if not rows:
            continue
        answers = list(every[subset][rows] if reader.network is not None else
                       reader.probabilities_of(subset, [features[i] for i in rows], [cnn[i] for i in rows]))
        predicted = [int(np.argmax(p)) for p in answers]
        truth = [reader.classes.index(labels[i]) for i in rows]
        metrics = metrics_from_confusion(confusion_matrix(truth, predicted, n_classes), reader.classes)
        levels = [reader_uncertainty(p) for p in answers]
        scores: dict[str, Any] = {"n": len(rows), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                                  "per_class": metrics["per_class"], "confusion_matrix": metrics["confusion_matrix"],
                                  "by_uncertainty": metrics_by_uncertainty(truth, predicted, levels, reader.classes)}
        if groups is not None:
            scores["macro_f1_interval"] = list(macro_f1_interval(truth, predicted, [groups[i] for i in rows], n_classes))
        if long_axes_mm is not None:
            scores["by_size"] = {}
            bands = [size_band(long_axes_mm[i]) for i in rows]
            for band in SIZE_BANDS:
                ks = [k for k, b in enumerate(bands) if b == band]
                if not ks:
                    continue
                part = metrics_from_confusion(confusion_matrix([truth[k] for k in ks], [predicted[k] for k in ks],
                                                               n_classes), reader.classes)
                scores["by_size"][band] = {"n": len(ks), "accuracy": part["accuracy"], "macro_f1": part["macro_f1"]}
                if groups is not None:
                    scores["by_size"][band]["macro_f1_interval"] = list(macro_f1_interval(
                        [truth[k] for k in ks], [predicted[k] for k in ks], [groups[rows[k]] for k in ks], n_classes))
        out[subset_name(subset)] = scores
    return out


def quoted_scores(scores: Mapping[str, Any]) -> Mapping[str, Any]:
    """The scores quoted for a subset of phases: the held-out lesions' where the reader was scored on
    some (more lesions), else its fit's test split."""
    return scores.get("heldout") or scores.get("test") or {}


def reader_scores_simulated(reader: PhaseReader | None) -> bool:
    """Whether the lesions of the reader's quoted scores (`quoted_scores`) were all simulated: the held-out
    lesions' where it was scored on some, else those it was fitted and tested on (False without a reader:
    it has no scores)."""
    if reader is None:
        return False
    training = reader.training
    fitted = bool(training.get("simulated", True))
    heldout = training.get("heldout")
    return bool(heldout.get("simulated", fitted)) if heldout else fitted


def reader_macro_f1(reader: PhaseReader | None) -> float | None:
    """The reader's quoted macro-F1 with every phase read (None without a reader or a score)."""
    if reader is None:
        return None
    value = quoted_scores(reader.metrics.get(subset_name(reader.phases)) or {}).get("macro_f1")
    return float(value) if isinstance(value, (int, float)) else None


def reader_subset_scores(reader: PhaseReader | None) -> dict[str, dict[str, Any]]:
    """Per subset of phases (`subset_name`): the reader's quoted macro-F1 and, where it was scored by size
    (held-out scores are; a fit's test split is not), the lesions and macro-F1 per `size_band`
    ({"macro_f1": .., "by_size": {band: {"n": .., "macro_f1": ..}}}); subsets without a score left out.
    The subsets differ widely (non-contrast + delayed against all four phases), and so do the bands."""
    if reader is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for subset, scores in reader.metrics.items():
        quoted = quoted_scores(scores)
        if not isinstance(quoted.get("macro_f1"), (int, float)):
            continue
        by_size = {band: {"n": int(part.get("n", 0)), "macro_f1": float(part["macro_f1"])}
                   for band, part in (quoted.get("by_size") or {}).items()
                   if isinstance(part.get("macro_f1"), (int, float))}
        out[subset] = {"macro_f1": float(quoted["macro_f1"]), "by_size": by_size}
    return out


def shown_long_axis_mm(long_axis_mm: float) -> float:
    """A long axis as shown (0.1 mm), rounded down: a 19.96 mm lesion shown as "20.0 mm" under "under 20
    mm" would read as a mistake, and a band read from the shown value stays the lesion's own."""
    return math.floor(long_axis_mm * 10.0) / 10.0


def format_subset_score(scores: Mapping[str, Any] | None, long_axis_mm: float | None = None) -> str:
    """The phase reader's macro-F1 on the phases it read (`reader_subset_scores`) and on the size band of a
    lesion whose outline's long axis on its key slice is `long_axis_mm`, as "0.954; on those under 20 mm,
    as this one is (14.2 mm): 0.903 (411 lesions)."; every band where the lesion's size is not given;
    "" without scores. Reading non-contrast + delayed is not reading all four, and a 12 mm lesion is
    not a 40 mm one."""
    if not scores:
        return ""
    by_size = scores.get("by_size", {})
    overall = f"{scores['macro_f1']:.3f}"
    if long_axis_mm is not None and by_size:
        band = size_band(long_axis_mm)
        shown = f"{shown_long_axis_mm(long_axis_mm):.1f} mm"
        part = by_size.get(band)
        if part is None:
            return f"{overall}; none of those was {band}, as this one is ({shown})."
        return f"{overall}; on those {band}, as this one is ({shown}): {part['macro_f1']:.3f} ({part['n']} lesions)."
    bands = "; ".join(f"{band}, {part['n']} lesions: {part['macro_f1']:.3f}" for band, part in by_size.items())
    return overall + (f" ({bands})." if bands else ".")


def reader_by_uncertainty(reader: PhaseReader | None) -> dict[str, list[dict]]:
    """Per subset of phases (`subset_name`), the reader's quoted `metrics_by_uncertainty` rows."""
    if reader is None:
        return {}
    return {subset: list(quoted_scores(scores).get("by_uncertainty") or []) for subset, scores in reader.metrics.items()}


__all__ = ["CnnAnswers", "FORMAT", "PHASE_READER_FILE", "PHASE_READER_WEIGHTS_PREFIX", "SIZE_BANDS", "SIZE_BAND_MM",
           "PhaseReader", "PhaseReaderError", "SubsetReader", "answer_id", "answered_by_reader", "format_subset_score",
           "fit_phase_reader", "fit_structure_reader", "phase_subsets", "quoted_scores", "reader_by_uncertainty",
           "reader_macro_f1", "reader_scores_simulated", "reader_subset_scores", "reader_uncertainty",
           "score_phase_reader", "shown_long_axis_mm", "size_band", "subset_name"]
