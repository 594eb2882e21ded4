"""The phase reader: a lesion's class from its enhancement in every contrast phase read, with the CNN.

The bundled CNN reads the portal-venous key slice: shape, margin, texture. A radiologist reads the
lesion's enhancement across phases as well (`imaging.lesion_enhancement`). The phase reader combines
both: for every subset of the phases a lesion can be read on, one multinomial logistic regression
over the standardised enhancement numbers of those phases and the log of the CNN's answer on each
of them. The CNN was trained on portal-venous slices; on another phase its answer is one more
number whose meaning the regression learns from the training lesions. A missing phase is handled
explicitly, by the reader of the subset that is there, never by zeros that look like data.

It is fitted to one CNN (`cnn_sha256`): the CNN's answers on lesions it never trained on are part of
its input, so a new CNN needs a new fit (`phase_reader_cli`). Stored beside the CNN's weights in its
bundle as `PHASE_READER_FILE`; numpy only at inference (scikit-learn fits it, the `train` extra).
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverview.atomic_write import write_text_atomic
from liverview.imaging.lesion_enhancement import FEATURES
from liverview.model.metrics import confusion_matrix, macro_f1_interval, metrics_from_confusion
from liverview.model.uncertainty import metrics_by_uncertainty, normalised_entropy, uncertainty_level

PHASE_READER_FILE = "phase_reader.json"
#: The reader's card, beside the CNN's MODEL_CARD.md.
PHASE_READER_CARD = "PHASE_READER.md"
FORMAT, FORMAT_VERSION = "liverview.phase-reader", 1
#: The CNN's probabilities enter as logs, clipped here (a 0 would be minus infinity).
MIN_PROBABILITY = 1e-4


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

    def reader_for(self, available: Iterable[str]) -> SubsetReader | None:
        """The reader of the phases in `available` that this reader knows (None when there are none)."""
        here = set(available)
        return self.readers.get(tuple(p for p in self.phases if p in here))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "classes": self.classes,
                "phases": list(self.phases), "cnn_phase": self.cnn_phase, "cnn_sha256": self.cnn_sha256,
                "features": list(FEATURES), "readers": [r.to_dict() for r in self.readers.values()],
                "metrics": self.metrics, "training": self.training}

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
        path = Path(folder) / PHASE_READER_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> PhaseReader:
        path = Path(folder) / PHASE_READER_FILE
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PhaseReaderError(f"{path}: {exc}") from exc


def phase_subsets(phases: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of `phases`, each in their order."""
    return [combo for n in range(1, len(phases) + 1) for combo in itertools.combinations(phases, n)]


def _readable(subset: Sequence[str], features: Mapping[str, np.ndarray], cnn: CnnAnswers) -> bool:
    return all(p in features and p in cnn for p in subset)


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
                       long_axes_mm: Sequence[float] | None = None) -> dict[str, Any]:
    """Per subset name: the metrics (`metrics.metrics_from_confusion`) on the lesions measured in all of
    its phases, each read on that subset alone; with `groups` (each lesion's patient), also the 95 %
    bootstrap interval of the macro-F1 over patients; with `long_axes_mm`, also `by_size`: n, accuracy
    and macro-F1 (with its interval where `groups` are given) per `size_band`."""
    out: dict[str, Any] = {}
    n_classes = len(reader.classes)
    for subset, sub in reader.readers.items():
        rows = [i for i in range(len(features)) if _readable(subset, features[i], cnn[i])]
        if not rows:
            continue
        answers = [sub.probabilities(features[i], cnn[i]) for i in rows]
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


def reader_by_uncertainty(reader: PhaseReader | None) -> dict[str, list[dict]]:
    """Per subset of phases (`subset_name`), the reader's quoted `metrics_by_uncertainty` rows."""
    if reader is None:
        return {}
    return {subset: list(quoted_scores(scores).get("by_uncertainty") or []) for subset, scores in reader.metrics.items()}


__all__ = ["CnnAnswers", "FORMAT", "PHASE_READER_FILE", "SIZE_BANDS", "SIZE_BAND_MM", "PhaseReader", "PhaseReaderError", "SubsetReader",
           "answer_id", "answered_by_reader", "fit_phase_reader", "phase_subsets", "quoted_scores", "reader_by_uncertainty",
           "reader_macro_f1", "reader_scores_simulated", "reader_uncertainty", "score_phase_reader", "size_band",
           "subset_name"]
