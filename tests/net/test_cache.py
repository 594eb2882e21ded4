"""The retrieve cache: publish by rename, leftovers of killed transfers, size limit, clear."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pathlib import Path

from liverview.net.cache import RetrieveCache
from liverview.net.errors import CacheError

REPO = Path(__file__).resolve().parents[2]


def _series(cache: RetrieveCache, study: str, series: str, n_bytes: int):
    staging = cache.new_staging(series)
    (staging / "1.dcm").write_bytes(b"x" * n_bytes)
    return cache.publish(staging, study, series)


def test_a_series_is_visible_only_once_published(tmp_path):
    cache = RetrieveCache(tmp_path)
    staging = cache.new_staging("1.2.3.4")
    (staging / "1.dcm").write_bytes(b"half")
    assert cache.series_dir("1.2.3", "1.2.3.4") is None
    path = cache.publish(staging, "1.2.3", "1.2.3.4")
    assert cache.series_dir("1.2.3", "1.2.3.4") == path and not staging.exists()
    again = cache.new_staging("1.2.3.4")
    (again / "2.dcm").write_bytes(b"newer")
    assert sorted(p.name for p in cache.publish(again, "1.2.3", "1.2.3.4").iterdir()) == ["2.dcm"]


def test_leftovers_of_a_killed_transfer_never_look_complete_and_are_removed(tmp_path):
    code = ("import sys, os; from liverview.net.cache import RetrieveCache\n"
            "c = RetrieveCache(sys.argv[1]); s = c.new_staging('1.2.3.4'); (s / 'a.dcm').write_bytes(b'half')\n"
            "os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert len(list((tmp_path / "staging").iterdir())) == 1
    assert list((tmp_path / "studies").iterdir()) == []
    RetrieveCache(tmp_path)  # the next start finds the owner gone
    assert list((tmp_path / "staging").iterdir()) == []


def test_staging_of_a_live_transfer_is_kept(tmp_path):
    cache = RetrieveCache(tmp_path)
    staging = cache.new_staging("1.2.3.4")
    RetrieveCache(tmp_path)
    assert staging.is_dir()


def test_size_limit_removes_least_recently_used_studies(tmp_path):
    cache = RetrieveCache(tmp_path, limit_bytes=2500)
    _series(cache, "1.1", "1.1.1", 1000)
    _series(cache, "1.2", "1.2.1", 1000)
    old = time.time() - 100
    os.utime(cache.study_dir("1.1"), (old, old))
    cache.touch("1.2")
    _series(cache, "1.3", "1.3.1", 1000)
    assert sorted(p.name for p in (tmp_path / "studies").iterdir()) == ["1.2", "1.3"]
    assert cache.size_bytes() == 2000
    cache.clear()
    assert cache.size_bytes() == 0 and cache.series_dir("1.2", "1.2.1") is None


def test_uids_that_are_not_uids_never_become_paths(tmp_path):
    cache = RetrieveCache(tmp_path)
    for bad in ("../../etc", "1.2/3", "", "1..2.", "1" * 65):
        with pytest.raises(CacheError, match="invalid UID"):
            cache.new_staging(bad)
