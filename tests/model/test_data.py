"""Dataset folders: reading, skipped lines listed with reasons, clear errors; inference imports stay light."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from liverview.model.data import DatasetError, LesionDataset, load_records
from liverview.model.transforms import PreprocessConfig, build_preprocess


def test_several_folders_are_read_together(toy_dataset, toy_dataset_b):
    loaded = load_records([toy_dataset, toy_dataset_b])
    assert len(loaded.records) == 36 and not loaded.skipped
    assert loaded.class_counts(["benign_cyst", "hemangioma", "hcc", "metastasis"]) == {
        "benign_cyst": 9, "hemangioma": 9, "hcc": 9, "metastasis": 9}
    assert [d["n_used"] for d in loaded.datasets] == [24, 12]


def test_unusable_lines_are_skipped_with_a_reason(toy_dataset, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(toy_dataset, folder)
    lines = (folder / "lesions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    records[0]["label"] = None
    records[1]["label"] = "abscess"
    (folder / records[2]["file"]).unlink()
    records.append(dict(records[3]))  # duplicate uid
    (folder / "lesions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = load_records([folder])
    assert len(loaded.records) == 21  # 24 - 3; the duplicate line was extra
    reasons = [s.reason for s in loaded.skipped]
    assert any("no label" in r for r in reasons) and any("'abscess' is not one of" in r for r in reasons)
    assert any("is missing" in r for r in reasons) and any("duplicate" in r for r in reasons)
    assert all("lesions.jsonl:" in r for r in reasons)  # file and line number


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_records([tmp_path / "missing"])
    with pytest.raises(DatasetError, match="no dataset.json"):
        load_records([tmp_path])
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DatasetError, match="not a liverview dataset"):
        load_records([tmp_path])


def test_a_model_reads_no_more_neighbour_slices_than_the_export_kept(toy_dataset, tmp_path):
    classes = ["benign_cyst", "hemangioma", "hcc", "metastasis"]
    two = build_preprocess(PreprocessConfig(size=32, neighbour_slices=2))
    records = load_records([toy_dataset]).records[:2]
    assert LesionDataset(records, classes, two)[0][0].shape == (15, 32, 32)  # 5 slices x 3 windows

    folder = tmp_path / "old-export"
    shutil.copytree(toy_dataset, folder)
    manifest = json.loads((folder / "dataset.json").read_text())
    manifest.pop("patch")  # written before the margin was recorded: 1 slice
    (folder / "dataset.json").write_text(json.dumps(manifest))
    old = load_records([folder]).records[:2]
    one = build_preprocess(PreprocessConfig(size=32, neighbour_slices=1))
    assert LesionDataset(old, classes, one)[0][0].shape[0] == 9
    with pytest.raises(DatasetError, match="keeps 1 slice.* reads 2 on each side"):
        LesionDataset(old, classes, two)


def test_training_items_vary_by_epoch_but_repeat_for_a_seed(toy_dataset):
    records = load_records([toy_dataset]).records[:3]
    pre = build_preprocess(PreprocessConfig(size=32))
    classes = ["benign_cyst", "hemangioma", "hcc", "metastasis"]
    a = LesionDataset(records, classes, pre, train=True, seed=1)
    b = LesionDataset(records, classes, pre, train=True, seed=1)
    first = a[0][0]
    assert (first == b[0][0]).all()
    a.set_epoch(1)
    assert not (first == a[0][0]).all()


def test_inference_modules_do_not_import_training_extras():
    code = ("import sys\n"
            "import liverview.model.inference, liverview.model.classify, liverview.model.transforms, liverview.model.data\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'sklearn', 'matplotlib', 'scipy'})\n"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_the_package_does_not_import_torch():
    """The window must not wait for torch: `import liverview.model` is lazy; names load on first use."""
    code = ("import sys, liverview.model as m\n"
            "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
            "assert callable(m.load_bundle) and 'torch' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
