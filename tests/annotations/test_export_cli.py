"""liverview-export end to end: as a subprocess for SEG from JSON and CSV from a SEG, in-process for
the other formats and for the error paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pydicom
import pytest

from liverview.annotations.export_cli import main

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "liverview.annotations.export_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.fixture
def annotation_file(identified_volume, document, tmp_path) -> Path:
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(document.to_dict()))
    return path


def test_cli_seg_then_csv_from_that_seg(identified_dir, annotation_file, identified_volume, tmp_path, leak):
    out = tmp_path / "out"
    result = _cli(identified_dir, "--annotations", annotation_file, "--to", "seg", "--out", out)
    assert result.returncode == 0, result.stderr
    written = [Path(line.split(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("wrote ")]
    assert len(written) == 1 and written[0].name.endswith("-seg.dcm") and written[0].exists()
    seg = pydicom.dcmread(written[0])
    assert len(seg.SegmentSequence) == 3 and seg.PatientID.startswith("LV-")
    leak.absent(written[0].read_bytes(), "SEG written by the CLI")

    # The SEG as the annotation input: one lesion per segment, then a CSV table of them.
    result = _cli(identified_dir, "--annotations", written[0], "--to", "csv", "--out", out, "--no-pseudonymize")
    assert result.returncode == 0, result.stderr
    assert "read 3 lesion(s) from the SEG (frames matched by sop-instance-uid)" in result.stdout
    csv_path = Path(next(line for line in result.stdout.splitlines() if line.startswith("wrote ")).split(" ", 1)[1])
    text = csv_path.read_text()
    # The lesions are the pseudonymised reader's, as they left (a SEG liverview wrote keeps its readers).
    assert text.count("\n") == 4 and "metastasis" in text and "reader-" in text and "SEG: " not in text
    assert identified_volume.series_uid in text  # not pseudonymised this time


def test_cli_other_formats_in_process(identified_dir, annotation_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(identified_dir), "--annotations", str(annotation_file), "--to", "nifti", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ".nii.gz" in printed and ".json" in printed and "pseudonymised" in printed
    image = next(out.glob("*.nii.gz"))
    assert nib.load(image).shape == (512, 512, 41)
    assert main([str(identified_dir), "--annotations", str(annotation_file), "--to", "sr", "--out", str(out)]) == 0
    sr = pydicom.dcmread(next(out.glob("*-sr.dcm")))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    dataset = tmp_path / "dataset"
    assert main([str(identified_dir), "--annotations", str(annotation_file), "--to", "dataset", "--out", str(dataset),
                 "--all-lesions"]) == 0
    assert "wrote 3 lesion(s) to the dataset, which now holds 3" in capsys.readouterr().out
    assert len((dataset / "lesions.jsonl").read_text().splitlines()) == 3
    # Exported again, the same lesions replace their entries: nothing was added.
    assert main([str(identified_dir), "--annotations", str(annotation_file), "--to", "dataset", "--out", str(dataset),
                 "--all-lesions", "--reader", "Dr Other"]) == 0
    out = capsys.readouterr()
    assert "which now holds 3" in out.out and "--reader Dr Other not used" in out.err


def test_cli_errors_are_one_line_and_exit_1(identified_dir, annotation_file, corpus_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    cases = [
        ([str(identified_dir), "--annotations", str(tmp_path / "missing.json"), "--to", "csv", "--out", out],
         "annotation file not found"),
        ([str(identified_dir), "--annotations", str(annotation_file), "--to", "csv", "--out", out,
          "--series", "1.2.3"], "series 1.2.3 is not in the study"),
        ([str(identified_dir), "--annotations", str(corpus_dir / "pydicom-data" / "liver.dcm"), "--to", "csv",
          "--out", out, "--series", pydicom.dcmread(identified_dir / "1-01.dcm").SeriesInstanceUID],
         "Frame of Reference UID"),
        ([str(tmp_path / "nowhere"), "--annotations", str(annotation_file), "--to", "csv", "--out", out], "error:"),
    ]
    not_annotations = tmp_path / "other.json"
    not_annotations.write_text('{"hello": 1}')
    cases.append(([str(identified_dir), "--annotations", str(not_annotations), "--to", "csv", "--out", out],
                  "not a liverview annotation file"))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    wrong_shape = tmp_path / "wrong-shape.json"
    wrong_shape.write_text(json.dumps({**json.loads(annotation_file.read_text()), "lesions": "nope"}))
    cases += [
        ([str(identified_dir), "--annotations", str(wrong_shape), "--to", "csv", "--out", out],
         "annotation file is damaged"),
        ([str(identified_dir), "--annotations", str(tmp_path), "--to", "csv", "--out", out], "is a folder"),
        ([str(identified_dir), "--annotations", str(deep), "--to", "csv", "--out", out], "nested too deeply"),
        # A mistyped shared key is not a new key: every patient would get another pseudonym.
        ([str(identified_dir), "--annotations", str(annotation_file), "--to", "csv", "--out", out,
          "--key", str(tmp_path / "shared.key")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("liverview-export: error:") and message in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "shared.key").exists()


def test_a_dataset_exported_from_a_study_folder_holds_its_other_phases(crlm_dir, tmp_path, resample_series):
    """liverview-export STUDY --to dataset reads each lesion on the study's other phase too (here another
    reconstruction of the real series that its description names arterial)."""
    import shutil

    from liverview.annotations.dataset_format import read_lesion_lines, read_patch
    from liverview.annotations.export_cli import main
    from liverview.io import load_series

    volume = load_series(crlm_dir)
    study = tmp_path / "study"
    shutil.copytree(crlm_dir, study / "venous")
    resample_series(volume, study / "arterial", (0.0, 0.0, 0.0), volume.frame_of_reference_uid,
                    description="LIVER ARTERIAL 2.5mm")
    annotations = Path(__file__).resolve().parent.parent / "data" / "crlm-ct-1004-metastases.json"
    out = tmp_path / "dataset"
    assert main([str(study), "--annotations", str(annotations), "--to", "dataset", "--out", str(out)]) == 0
    record = read_lesion_lines(out / "lesions.jsonl")[0]
    assert record["contrast_phase"] == "portal_venous" and list(record["phases"]) == ["arterial"]
    assert read_patch(out / record["file"]).phase_names == ["portal_venous", "arterial"]


def test_no_patient_data_on_the_console_or_in_the_log(identified_dir, annotation_file, tmp_path):
    """#16 defect 8: highdicom finds fault with a one-component Patient's Name and quotes it; a
    pseudonymised export must not show it on stdout, stderr or in the log."""
    source = tmp_path / "ct"
    source.mkdir()
    for path in sorted(identified_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientName = "Hepzibah Quartermaine"
        ds.save_as(source / path.name)
    data = tmp_path / "data"
    env = {**os.environ, "LIVERVIEW_DATA_DIR": str(data)}
    for fmt in ("seg", "sr"):
        result = subprocess.run([sys.executable, "-m", "liverview.annotations.export_cli", str(source), "--annotations",
                                 str(annotation_file), "--to", fmt, "--out", str(tmp_path / "out")],
                                capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
        assert result.returncode == 0, result.stderr
        assert "Hepzibah" not in result.stdout + result.stderr
        # highdicom's warning is kept, without the value, in the log file; the console stays quiet (#16 step 13).
        assert "person name" not in result.stderr
    log = (data / "logs" / "liverview-cli.log").read_text()
    assert "person name" in log and "Hepzibah" not in log


def test_the_cli_leaves_logging_as_it_found_it(identified_dir, annotation_file, tmp_path):
    """In-process callers (tests, the app's self-test) keep their logging: the CLI's handlers go at exit."""
    import logging

    before = list(logging.getLogger().handlers)
    assert main([str(identified_dir), "--annotations", str(annotation_file), "--to", "csv", "--out",
                 str(tmp_path / "out"), "--no-pseudonymize"]) == 0
    assert logging.getLogger().handlers == before


def test_an_outline_outside_the_series_is_said_not_dropped_silently(identified_dir, annotation_file, tmp_path, capsys):
    """An outline on slice index 999 of a 41-slice series was left out of the mask with exit status 0 and
    no word."""
    data = json.loads(annotation_file.read_text())
    data["lesions"][0]["rois"][0]["slice_index"] = 999
    data["lesions"][0]["rois"][0]["sop_instance_uid"] = ""  # with its image's UID it would be put back on it
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    assert main([str(identified_dir), "--annotations", str(edited), "--to", "csv", "--out", str(tmp_path / "out"),
                 "--all-lesions"]) == 0
    err = capsys.readouterr().err
    assert "note: lesion L1 has 1 outline slice(s) outside the series' 41 slices (index 999): left out" in err


def test_what_a_user_should_know_is_said(identified_dir, annotation_file, tmp_path, capsys):
    """An empty annotation file and an unknown label ran silently; --no-pseudonymize printed no warning
    although the README promised one."""
    data = json.loads(annotation_file.read_text())
    data["lesions"][0]["label"] = "tumour"
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(data))
    assert main([str(identified_dir), "--annotations", str(unknown), "--to", "csv", "--out", str(tmp_path / "a"),
                 "--no-pseudonymize"]) == 0
    err = capsys.readouterr().err
    assert "lesion L1's label 'tumour' is none of the classes" in err
    assert "warning: not pseudonymised" in err
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**data, "lesions": []}))
    main([str(identified_dir), "--annotations", str(empty), "--to", "csv", "--out", str(tmp_path / "b")])
    assert "empty.json holds no lesions" in capsys.readouterr().err
