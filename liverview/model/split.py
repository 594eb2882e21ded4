"""Train/validation/test split (70/15/15 by default), stratified by class and grouped by patient.

Every lesion of a patient (or, without a patient pseudonym, of a series) lands in the same split, so
the test score never benefits from having seen the same liver, scanner noise or reader in training.
Within that constraint the per-class proportions follow the requested fractions as closely as the
group sizes allow: groups are placed one at a time, largest first (ties in a seeded random order),
each into the split where it reduces the squared deviation from the target class counts most.
The split is deterministic for a seed and is saved as JSON with the run.

Lesions from datasets given for training only (`LesionRecord.training_only`), and every other lesion of
their patients, go to the training subset; the fractions apply to the rest. A clinic can so add
simulated lesions to its own cases and still validate and test on its own cases alone.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverview.model.data import LesionRecord

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


@dataclass
class Split:
    """Lesion uids per split, plus how they were made."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    groups: dict[str, str] = field(default_factory=dict)  # uid -> group key
    labels: dict[str, str] = field(default_factory=dict)  # uid -> label
    training_only: list[str] = field(default_factory=list)  # uids of train from training-only datasets

    def subset(self, name: str) -> list[str]:
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; one of {SPLIT_NAMES}")
        return list(getattr(self, name))

    def class_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name in SPLIT_NAMES:
            counts: dict[str, int] = {}
            for uid in self.subset(name):
                label = self.labels.get(uid, "?")
                counts[label] = counts.get(label, 0) + 1
            out[name] = dict(sorted(counts.items()))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": "liverview.split", "version": 1, "seed": self.seed, "fractions": list(self.fractions),
                "group_by": "patient, else series, else lesion", "counts": self.class_counts(),
                "train": self.train, "val": self.val, "test": self.test, "groups": self.groups,
                "labels": self.labels, "training_only": self.training_only}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Split:
        if data.get("format") != "liverview.split":
            raise ValueError("not a liverview split file")
        return cls(train=list(data["train"]), val=list(data["val"]), test=list(data["test"]), seed=int(data["seed"]),
                   fractions=tuple(data.get("fractions", DEFAULT_FRACTIONS)), groups=dict(data.get("groups", {})),
                   labels=dict(data.get("labels", {})), training_only=list(data.get("training_only", [])))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Split:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def split_records(records: Sequence[LesionRecord], seed: int = 0,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Split:
    """Split lesions into train/val/test, grouped by `LesionRecord.group`, stratified by label; the
    patients of training-only records go to train whole."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, not {fractions}")
    forced = {r.group for r in records if r.training_only}
    regular = [r for r in records if r.group not in forced]
    labels = sorted({r.label for r in regular})
    label_index = {label: i for i, label in enumerate(labels)}
    groups: dict[str, list[LesionRecord]] = {}
    for record in sorted(regular, key=lambda r: r.uid):
        groups.setdefault(record.group, []).append(record)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(keys))
    order = sorted(range(len(keys)), key=lambda i: (-len(groups[keys[i]]), tiebreak[i]))

    totals = np.zeros(len(labels))
    for record in regular:
        totals[label_index[record.label]] += 1
    frac = np.asarray(fractions)
    target = frac[:, None] * totals[None, :]  # (split, class)
    counts = np.zeros_like(target)
    weight = 1.0 / np.maximum(totals, 1.0)  # rare classes count as much as common ones
    assigned: dict[str, int] = {}
    for i in order:
        key = keys[i]
        vector = np.zeros(len(labels))
        for record in groups[key]:
            vector[label_index[record.label]] += 1
        best, best_cost, best_room = 0, None, 0.0
        for s in range(3):
            if frac[s] == 0:
                continue
            trial = counts.copy()
            trial[s] += vector
            cost = float((((trial - target) ** 2) * weight[None, :]).sum())
            # Ties: the split with the most room left (relative to its size) takes the group.
            room = float((target[s] - counts[s]).sum() / max(frac[s], 1e-9))
            if best_cost is None or cost < best_cost - 1e-12 or (abs(cost - best_cost) <= 1e-12 and room > best_room):
                best, best_cost, best_room = s, cost, room
        counts[best] += vector
        assigned[key] = best
    parts: list[list[str]] = [[], [], []]
    for key in keys:
        parts[assigned[key]].extend(r.uid for r in groups[key])
    parts[0].extend(r.uid for r in records if r.group in forced)
    return Split(train=sorted(parts[0]), val=sorted(parts[1]), test=sorted(parts[2]), seed=seed, fractions=fractions,
                 groups={r.uid: r.group for r in records}, labels={r.uid: r.label for r in records},
                 training_only=sorted(r.uid for r in records if r.training_only))


def find_group_leaks(split: Split) -> list[str]:
    """Groups that occur in more than one split (empty when the split is clean)."""
    where: dict[str, set[str]] = {}
    for name in SPLIT_NAMES:
        for uid in split.subset(name):
            where.setdefault(split.groups.get(uid, uid), set()).add(name)
    return sorted(g for g, names in where.items() if len(names) > 1)


def check_split_matches(split: Split, records: Sequence[LesionRecord]) -> list[str]:
    """Problems that make a saved split unusable with these records (resumed runs check this)."""
    known = {r.uid for r in records}
    listed = set(split.train) | set(split.val) | set(split.test)
    problems = []
    if missing := sorted(listed - known):
        problems.append(f"{len(missing)} lesion(s) of the saved split are no longer in the datasets "
                        f"(first: {missing[0]})")
    if added := sorted(known - listed):
        problems.append(f"{len(added)} lesion(s) in the datasets are not in the saved split (first: {added[0]})")
    return problems


__all__ = ["DEFAULT_FRACTIONS", "SPLIT_NAMES", "Split", "check_split_matches", "find_group_leaks", "split_records"]
