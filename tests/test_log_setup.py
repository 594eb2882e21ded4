"""The command-line tools' one-line errors."""
from __future__ import annotations

import pytest
from pydicom.tag import Tag, tag_in_exception

from liverview.log_setup import CliFailed, describe_os_error, run_cli_job


def _full_disk_in_pydicom() -> None:
    with tag_in_exception(Tag(0x7FE00010)):
        raise OSError(28, "No space left on device")


def test_a_write_pydicom_wrapped_is_one_line_with_its_reason(capsys):
    """An export to a full disk printed "error: : With tag (7FE0,0010) got exception: [Errno 28] …" and
    pydicom's traceback, nine lines of it, inside the message."""
    with pytest.raises(OSError) as raised:
        _full_disk_in_pydicom()
    assert describe_os_error(raised.value) == "No space left on device"
    with pytest.raises(CliFailed):
        run_cli_job("liverview-export", False, _full_disk_in_pydicom, ())
    assert capsys.readouterr().err == "liverview-export: error: No space left on device\n"
    assert describe_os_error(FileNotFoundError(2, "No such file or directory", "/x/y")) == "/x/y: No such file or directory"


def test_an_output_folder_that_is_a_file_is_named_so(tmp_path):
    """--out README.md said "README.md: File exists"."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    for path, said in ((a_file, "is a file, not a folder"), (a_file / "out", "part of this path is a file")):
        with pytest.raises(OSError) as raised:
            path.mkdir(parents=True, exist_ok=True)
        assert describe_os_error(raised.value).startswith(f"{path}: {said}")
        assert describe_os_error(raised.value).endswith("choose a folder")


@pytest.mark.parametrize("tool", ["liverview", "liverview-inspect", "liverview-predict", "liverview-export", "liverview-train",
                                  "liverview-evaluate", "liverview-pacs", "liverview-synth", "liverview-demo"])
def test_every_tools_help_shows_how_it_is_used(tool):
    """A support person reads --help first: none of the tools showed a single example."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / tool
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    examples = result.stdout.split("example", 1)[1]
    assert f"{tool} " in examples
