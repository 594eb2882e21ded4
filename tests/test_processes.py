"""Ending a command-line tool without the interpreter's teardown loses none of what it wrote."""
from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import logging, sys
from liverview.processes import exit_without_teardown
handler = logging.FileHandler(sys.argv[1])
logging.getLogger().addHandler(handler)
logging.getLogger("liverview.test").warning("logged last")
for _ in range(1001):
    sys.stdout.write("x" * 50)  # small writes, no newline: the last few KB are still in Python's buffer
sys.stderr.write("said on stderr")
exit_without_teardown(3)
"""


def test_output_log_and_exit_status_survive_the_fast_exit(tmp_path):
    log = tmp_path / "tool.log"
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell has it
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, timeout=60,
                            env=buffered)
    assert result.returncode == 3
    assert result.stdout == "x" * 50050 and result.stderr == "said on stderr"
    assert log.read_text() == "logged last\n"
