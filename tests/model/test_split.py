"""70/15/15 split: grouped by patient (no leakage), stratified by class, deterministic."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from liverview.model.data import LesionRecord, load_records
from liverview.model.split import Split, check_split_matches, find_group_leaks, split_records

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


def _records(n_patients=80, seed=0, with_patient=True):
    """Patients with 1-4 lesions each, classes drawn with unequal frequencies."""
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n_patients):
        for k in range(int(rng.integers(1, 5))):
            label = CLASSES[rng.choice(4, p=[0.4, 0.3, 0.2, 0.1])]
            records.append(LesionRecord(uid=f"p{p}-l{k}", label=label, patch_path=Path("x.npz"),
                                        patient=f"P{p}" if with_patient else None, series_uid=f"S{p // 2}"))
    return records


def test_no_patient_in_two_splits():
    records = _records()
    split = split_records(records, seed=1)
    assert find_group_leaks(split) == []
    where = {}
    for name in ("train", "val", "test"):
        for uid in split.subset(name):
            patient = next(r.patient for r in records if r.uid == uid)
            where.setdefault(patient, set()).add(name)
    assert all(len(v) == 1 for v in where.values())
    assert sorted(split.train + split.val + split.test) == sorted(r.uid for r in records)


def test_falls_back_to_series_then_lesion():
    records = _records(with_patient=False)
    split = split_records(records, seed=1)
    assert find_group_leaks(split) == []
    assert set(split.groups.values()) == {f"series:S{p // 2}" for p in range(80)}
    alone = LesionRecord(uid="u", label="hcc", patch_path=Path("x"))
    assert alone.group == "lesion:u"


def test_fractions_and_stratification_within_tolerance():
    records = _records(n_patients=120)
    split = split_records(records, seed=3)
    n = len(records)
    assert len(split.train) / n == pytest.approx(0.70, abs=0.03)
    assert len(split.val) / n == pytest.approx(0.15, abs=0.03)
    assert len(split.test) / n == pytest.approx(0.15, abs=0.03)
    counts = split.class_counts()
    for label in CLASSES:
        total = sum(r.label == label for r in records)
        for name, fraction in zip(("train", "val", "test"), (0.70, 0.15, 0.15)):
            assert counts[name].get(label, 0) == pytest.approx(fraction * total, abs=max(3, 0.15 * fraction * total))


def test_deterministic_for_a_seed_and_saved_as_json(tmp_path):
    records = _records()
    a, b, c = split_records(records, seed=5), split_records(list(reversed(records)), seed=5), split_records(records, 6)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert (a.train, a.val, a.test) != (c.train, c.val, c.test)
    a.save(tmp_path / "split.json")
    loaded = Split.load(tmp_path / "split.json")
    assert (loaded.train, loaded.val, loaded.test, loaded.seed) == (a.train, a.val, a.test, 5)
    assert check_split_matches(loaded, records) == []
    assert check_split_matches(loaded, records[:-1])  # a lesion went missing


def test_real_dataset_folders_split_by_pseudo_patient(toy_dataset, toy_dataset_b):
    loaded = load_records([toy_dataset, toy_dataset_b])
    assert len(loaded.records) == 36
    split = split_records(loaded.records, seed=0)
    assert find_group_leaks(split) == []
    assert all(split.subset(name) for name in ("train", "val", "test"))


def test_training_only_records_stay_in_train_and_leave_the_rest_as_it_was(tmp_path):
    records = _records(n_patients=60, seed=2)
    extra = [dataclasses.replace(r, uid=f"sim-{r.uid}", patient=f"SIM{r.patient}", training_only=True)
             for r in _records(n_patients=40, seed=3)]
    # One of the clinic's own patients also appears in the training-only data: that patient trains whole.
    shared = records[0].patient
    extra.append(LesionRecord(uid="sim-shared", label="hcc", patch_path=Path("x.npz"), patient=shared,
                              training_only=True))
    plain = split_records([r for r in records if r.patient != shared], seed=4)
    mixed = split_records(records + extra, seed=4)
    assert find_group_leaks(mixed) == []
    assert (mixed.val, mixed.test) == (plain.val, plain.test)
    own_of_shared = {r.uid for r in records if r.patient == shared}
    assert set(mixed.train) == set(plain.train) | {r.uid for r in extra} | own_of_shared
    assert mixed.training_only == sorted(r.uid for r in extra)
    mixed.save(tmp_path / "split.json")
    assert Split.load(tmp_path / "split.json").training_only == mixed.training_only


def test_load_records_marks_training_only_folders(toy_dataset, toy_dataset_b):
    loaded = load_records([toy_dataset], training_only=[toy_dataset_b])
    own = [r for r in loaded.records if not r.training_only]
    extra = [r for r in loaded.records if r.training_only]
    assert (len(own), len(extra)) == (24, 12)
    assert {r.dataset for r in extra} == {str(toy_dataset_b)}
    assert [d.get("role") for d in loaded.datasets] == [None, "training only"]
    split = split_records(loaded.records, seed=0)
    assert {r.uid for r in extra} <= set(split.train)
    assert split.val and split.test and not {r.uid for r in extra} & set(split.val + split.test)
