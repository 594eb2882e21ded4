from __future__ import annotations

import json
import os
import subprocess
import sys

from liverview.imaging.inspect_cli import main


def test_json_report_of_a_multi_series_export(pacs_export, capsys):
    assert main([str(pacs_export), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_desc = {(s["description"], s["n_images"]): s for s in report["series"]}
    assert set(by_desc) == {("ARTERIAL", 41), ("CT CH/AB/PEL", 41), ("CT CH/AB/PEL", 1)}
    venous = by_desc[("CT CH/AB/PEL", 41)]
    assert venous["shape"] == [41, 512, 512]
    assert venous["spacing_mm"] == [5.0, 0.7969, 0.7969]
    assert venous["hu_range_from"] == "middle slice" and venous["hu_range"][0] == -1024
    assert venous["modality"] == "CT" and venous["warnings"] == []
    localizer = by_desc[("CT CH/AB/PEL", 1)]
    assert localizer["plane"] == "coronal" and "split" in localizer["warnings"][0]
    assert [s["path"].rsplit("/", 1)[-1] for s in report["skipped"]] == ["README.TXT"]
    assert report["skipped"][0]["reason"]


def test_load_reads_every_slice_and_text_output(crlm_dir, capsys):
    assert main([str(crlm_dir), "--load"]) == 0
    text = capsys.readouterr().out
    assert "41 image(s)" in text and "(all slices)" in text
    assert "HU -1024..1377" in text


def test_patient_name_and_id_only_when_asked(corpus_dir, capsys):
    """Walkthrough 13: nothing identifying on the console unless explicitly asked; this output is pasted
    into support tickets."""
    ct = str(corpus_dir / "pydicom" / "CT_small.dcm")
    for args in ([ct], [ct, "--json"]):
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "CompressedSamples" not in out and "1CT1" not in out
    assert "withheld" in (main([ct]), capsys.readouterr().out)[1]
    assert main([ct, "--identifiers"]) == 0
    assert "CompressedSamples^CT1 [1CT1]" in capsys.readouterr().out
    assert main([ct, "--json", "--identifiers"]) == 0
    entry = json.loads(capsys.readouterr().out)["series"][0]
    assert (entry["patient_name"], entry["patient_id"]) == ("CompressedSamples^CT1", "1CT1")


def test_entry_point_exit_status(tmp_path, crlm_dir):
    ok = subprocess.run([sys.executable, "-m", "liverview.imaging.inspect_cli", str(crlm_dir), "--json"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["series"][0]["n_images"] == 41
    missing = subprocess.run([sys.executable, "-m", "liverview.imaging.inspect_cli", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count(str(tmp_path / "nope")) == 1
    assert "does not exist" in missing.stderr
    one_missing = subprocess.run([sys.executable, "-m", "liverview.imaging.inspect_cli", str(crlm_dir),
                                  str(tmp_path / "nope"), "--json"], capture_output=True, text=True)
    assert one_missing.returncode == 2 and "does not exist" in one_missing.stderr
    assert json.loads(one_missing.stdout)["series"][0]["n_images"] == 41  # the others are still reported


def test_damaged_file_gives_its_reason_not_a_traceback(corpus_dir, tmp_path):
    """#16 defect 8: a decoder's traceback goes to the log file only; the console gets one line."""
    damaged = corpus_dir / "pydicom" / "JPEG2000-embedded-sequence-delimiter.dcm"
    data = tmp_path / "data"
    env = {**os.environ, "LIVERVIEW_DATA_DIR": str(data)}
    result = subprocess.run([sys.executable, "-m", "liverview.imaging.inspect_cli", str(damaged), "--json", "--load"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "File \"" not in result.stderr
    assert "ERROR" in result.stderr  # the reason is still said, in one line
    log = (data / "logs" / "liverview-cli.log").read_text()
    assert "Traceback" in log


def test_a_compressed_file_cut_short_is_named_so_without_the_decoders_words(crlm_dir, tmp_path):
    """A JPEG-LS/RLE file cut inside its pixel data failed with "pixel data cannot be decoded
    (AttributeError: The dataset has no 'Pixel Data' … element …)", and pydicom's "End of file reached
    before delimiter" warning went to the console."""
    import pydicom
    from pydicom.uid import RLELossless

    folder = tmp_path / "series"
    folder.mkdir()
    for source in sorted(crlm_dir.glob("*.dcm"))[10:14]:
        ds = pydicom.dcmread(source)
        ds.compress(RLELossless)
        ds.save_as(folder / source.name)
    victim = sorted(folder.glob("*.dcm"))[0]
    victim.write_bytes(victim.read_bytes()[:-5000])
    env = {**os.environ, "LIVERVIEW_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-m", "liverview.imaging.inspect_cli", str(folder), "--load"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{victim.name}: the file ends inside its pixel data: it is probably cut short (damaged)" in result.stdout
    assert "1 of 4 image(s) could not be decoded" in result.stdout
    assert "AttributeError" not in result.stdout and "End of file" not in result.stderr
    assert "End of file reached before delimiter" in (tmp_path / "data" / "logs" / "liverview-cli.log").read_text()


def test_a_reader_that_stops_early_gets_no_traceback(corpus_dir, tmp_path):
    """Walkthrough review: `liverview-inspect --json CORPUS | head -3` ended in a BrokenPipeError traceback."""
    env = {**os.environ, "LIVERVIEW_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "liverview.imaging.inspect_cli", str(corpus_dir), "--json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as process:
        assert process.stdout.read(100).startswith(b"{")
        process.stdout.close()  # more than a pipe's buffer is still to come: the next write fails
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 141  # as a tool killed by SIGPIPE
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
