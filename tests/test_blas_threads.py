"""numpy's OpenBLAS runs on the caller's thread in every liverview process: its spinning thread pool took
the core that the decoding workers need."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

COUNT_THREADS = """
import os, sys
import {module}, numpy
numpy.ones((64, 64)) @ numpy.ones((64, 64))
print(len(os.listdir("/proc/self/task")))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
@pytest.mark.parametrize("module", ["liverview.imaging.inspect_cli", "liverview.app"])
def test_importing_liverview_keeps_numpy_on_one_thread(module):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", COUNT_THREADS.format(module=module)], capture_output=True,
                            text=True, timeout=60, env=env, check=True)
    assert int(result.stdout) == 1


def test_a_users_setting_wins():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
    result = subprocess.run([sys.executable, "-c", "import os, liverview; print(os.environ['OPENBLAS_NUM_THREADS'])"],
                            capture_output=True, text=True, timeout=60, env=env, check=True)
    assert result.stdout.strip() == "2"
