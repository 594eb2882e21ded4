"""Kill a real process that is annotating, at random moments: the file is never corrupt and holds
every edit made more than 2 seconds before the kill."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from liverview.annotations import AnnotationStore

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from liverview.annotations import AnnotationStore, Roi
    store, _ = AnnotationStore.open("1.2.3", "1.2.3.4", reader="dr_kill", path=Path(sys.argv[1]))
    i = 0
    while True:
        x = 10 + i % 50
        lesion = store.add_lesion(Roi(i % 40, [(x, 10), (x + 8, 10), (x + 8, 18), (x, 18)]), label="metastasis")
        store.set_label(lesion.id, note=f"edit {i}")
        print(f"{lesion.id} {time.time():.6f}", flush=True)
        i += 1
        time.sleep(0.02)
""")


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(5))
def test_kill_at_random_moment_loses_at_most_two_seconds(tmp_path, round_):
    path = tmp_path / "a.json"
    rng = random.Random(1000 + round_)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    made: list[tuple[str, float]] = []
    pending = b""

    def collect() -> None:
        # Only complete lines count: a non-blocking read can end in the middle of one.
        nonlocal pending
        try:
            pending += os.read(child.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        *lines, pending = pending.split(b"\n")
        for line in lines:
            lesion_id, stamp = line.decode().split()
            made.append((lesion_id, float(stamp)))

    deadline = time.time() + rng.uniform(2.0, 4.5)
    os.set_blocking(child.stdout.fileno(), False)
    while time.time() < deadline:
        collect()
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    killed_at = time.time()
    child.wait()
    collect()
    assert len(made) > 20, "the child did not get to work"
    document = json.loads(path.read_text())  # never corrupt: always parses
    saved = {lesion["id"] for lesion in document["lesions"]}
    old_enough = [lesion_id for lesion_id, stamp in made if stamp < killed_at - 2.0]
    lost = [lesion_id for lesion_id in old_enough if lesion_id not in saved]
    assert not lost, f"{len(lost)} edit(s) older than 2 s were lost"
    # Restarting reports the crash and recovers the work.
    store, report = AnnotationStore.open("1.2.3", "1.2.3.4", reader="dr_kill", path=path)
    assert report.recovered_after_crash and len(store.document.lesions) == len(saved)
    store.close()
