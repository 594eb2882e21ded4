"""Opening whole studies, liverview against SimpleITK/GDCM, each as a whole process (run by hand).

Cases (issue #18), every one timed as a fresh process - interpreter start, imports, work, exit - so
that start-up and import costs count as a user feels them:

* ``index``: a 3,000-file folder (3 studies, 10 series x 300 slices, one folder per series).
  liverview: ``liverview-inspect --json FOLDER``. SimpleITK: ``GetGDCMSeriesIDs`` and
  ``GetGDCMSeriesFileNames`` for every folder. Target: ours <= 0.5 x SimpleITK.
* ``load``: one 300-slice 512 x 512 uncompressed series. liverview: ``liverview-inspect --json --load``;
  SimpleITK: ``ImageSeriesReader`` (file names + ``Execute`` + array view). Target: <= 0.8 x.
* ``j2k``, ``jpegls``, ``rle``: 100 slices of JPEG 2000 lossless, JPEG-LS lossless and RLE lossless,
  loaded like ``load``. Targets: JPEG 2000 and JPEG-LS <= 0.7 x SimpleITK; RLE stays ahead (< 1).
  For these three, each tool's decoder is also timed alone, frame after frame in one process (wall and
  CPU time per frame), which shows how much of a ratio the decoders themselves leave.

The two tools alternate within each repeat (order swapped every repeat), after the files were read
once so that both start from the page cache; the medians and their ratio are reported. The data are
generated from the real 41-slice CT in ../shared/data (never copied into the repository) into
``$XDG_CACHE_HOME/liverview-bench`` (else /tmp/liverview-bench), once.

Usage::

    .venv/bin/python benchmarks/bench_open_study.py [--cases index,load,j2k,jpegls,rle] [--repeats 5]
                                                    [--out benchmarks/results/open_study.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import compile_sources, describe_machine  # noqa: E402 - benchmarks/ is not a package

SOURCE = REPO.parent / "shared" / "data" / "series" / "crlm-ct-1004" / "image"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "open_study.json"
GENERATOR_VERSION = 1
SPACING_MM = 1.25

CASES = {
    # name: (transfer syntax keyword or None, slices per series, series, studies, target ratio, what)
    "index": (None, 300, 10, 3, 0.5, "index a 3,000-file folder (liverview-inspect --json)"),
    "load": (None, 300, 1, 1, 0.8, "load a 300-slice uncompressed series (liverview-inspect --json --load)"),
    "j2k": ("JPEG2000Lossless", 100, 1, 1, 0.7, "load 100 slices JPEG 2000 lossless"),
    "jpegls": ("JPEGLSLossless", 100, 1, 1, 0.7, "load 100 slices JPEG-LS lossless"),
    "rle": ("RLELossless", 100, 1, 1, 1.0, "load 100 slices RLE lossless (stays ahead)"),
}

SITK_INDEX = """
import os, sys, SimpleITK as sitk
found = 0
for folder, _, files in os.walk(sys.argv[1]):
    if not files:
        continue
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder):
        found += len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
print(found)
"""

OURS_SCAN_ONLY = """
import sys
from liverview.io import scan_paths
scan = scan_paths(sys.argv[1])
print(len(scan.series), sum(s.n_images for s in scan.series))
"""

MEMORY = """
import json, re, sys
from pathlib import Path
from liverview.io import load_series, read_slice, scan_paths

def kib(field):
    return int(re.search(rf"^{field}:\\s+(\\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))

info = scan_paths(sys.argv[1]).series[0]
read_slice(info, 0)  # imports the decoders: library code is not memory of the load
Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
before = kib("VmRSS")
volume = load_series(info)
peak = kib("VmHWM")
print(json.dumps({"volume_bytes": volume.array.nbytes, "peak_over_baseline_bytes": (peak - before) * 1024,
                  "ratio": (peak - before) * 1024 / volume.array.nbytes}))
"""

SITK_LOAD = """
import sys, SimpleITK as sitk
folder = sys.argv[1]
reader = sitk.ImageSeriesReader()
reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
image = reader.Execute()
array = sitk.GetArrayViewFromImage(image)
print(array.shape, int(array[array.shape[0] // 2].max()))
"""

DECODER_CPU = """
import json, sys, time
from pathlib import Path
import SimpleITK as sitk
from liverview.io import scan_paths
from liverview.io.pixels import decode_frame

folder = sys.argv[1]
frames = scan_paths(folder).series[0].frames
files = sorted(str(p) for p in Path(folder).glob("*.dcm"))
decode_frame(frames[0]), sitk.ReadImage(files[0])  # libraries loaded before timing

def per_frame(job, items):
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        job(item)
    n = len(items)
    return {"wall_ms": round((time.perf_counter() - wall) * 1000 / n, 2),
            "cpu_ms": round((time.process_time() - cpu) * 1000 / n, 2)}

print(json.dumps({"ours_one_process": per_frame(decode_frame, frames), "sitk": per_frame(sitk.ReadImage, files),
                  "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}))
"""


# -- data -------------------------------------------------------------------------------------------------
def data_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir())
    return cache / "liverview-bench"


def ensure_case_data(case: str) -> Path:
    """Generate (once) the folder of `case`: studies/series of slices cycled from the real CT, new UIDs,
    consecutive positions at 1.25 mm, shuffled file names."""
    syntax, n_slices, n_series, n_studies, _, _ = CASES[case]
    folder = data_root() / f"open-{case}-v{GENERATOR_VERSION}"
    marker = folder / "bench_data.json"
    if marker.is_file():
        return folder
    import pydicom
    from pydicom import uid as uids

    sources = [pydicom.dcmread(p) for p in sorted(SOURCE.glob("*.dcm"))]
    sources.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    if syntax is not None:
        for ds in sources:
            ds.compress(getattr(uids, syntax))
    rng = random.Random(1004)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=data_root() if data_root().exists() else None))
    t0 = time.perf_counter()
    x0, y0, z0 = (float(v) for v in sources[0].ImagePositionPatient)
    per_study = [n_series // n_studies + (1 if i < n_series % n_studies else 0) for i in range(n_studies)]
    series_number = 0
    for study in range(n_studies):
        study_uid = uids.generate_uid()
        frame_uid = uids.generate_uid()
        for _ in range(per_study[study]):
            series_number += 1
            series_uid = uids.generate_uid()
            target = tmp / f"study{study + 1}" / f"series{series_number:02d}"
            target.mkdir(parents=True)
            names = list(range(n_slices))
            rng.shuffle(names)
            for i in range(n_slices):
                ds = sources[i % len(sources)]
                sop_uid = uids.generate_uid()
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
                ds.PatientName, ds.PatientID = f"BENCH^STUDY{study + 1}", f"BENCH{study + 1}"
                ds.SeriesNumber, ds.InstanceNumber = series_number, i + 1
                ds.SeriesDescription = f"liverview benchmark series {series_number}"
                z = z0 + i * SPACING_MM
                ds.ImagePositionPatient = [f"{x0:.6f}", f"{y0:.6f}", f"{z:.6f}"]
                ds.SliceLocation = f"{z:.6f}"
                ds.save_as(target / f"IM{names[i]:05d}.dcm", enforce_file_format=True)
    info = {"case": case, "transfer_syntax": syntax or "ExplicitVRLittleEndian", "slices_per_series": n_slices,
            "series": n_series, "studies": n_studies, "source": str(SOURCE), "generator_version": GENERATOR_VERSION,
            "generation_s": round(time.perf_counter() - t0, 1),
            "total_bytes": sum(p.stat().st_size for p in tmp.rglob("*.dcm"))}
    (tmp / marker.name).write_text(json.dumps(info, indent=2))
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def warm(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*.dcm"):
        total += len(path.read_bytes())
    return total


# -- runs -------------------------------------------------------------------------------------------------
def run_process(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=str(REPO))
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def commands(case: str, folder: Path) -> dict[str, list[str]]:
    ours = [sys.executable, "-m", "liverview.imaging.inspect_cli", "--json", str(folder)]
    if case != "index":
        ours.insert(4, "--load")
    sitk = [sys.executable, "-c", SITK_INDEX if case == "index" else SITK_LOAD, str(folder)]
    if case == "index":
        # The command above also reads every series' middle slice and detects its contrast phase
        # (24 sampled slices a series); this one is the indexing alone, as SimpleITK's.
        return {"ours": ours, "ours_scan_only": [sys.executable, "-c", OURS_SCAN_ONLY, str(folder)], "sitk": sitk}
    return {"ours": ours, "sitk": sitk}


def bench_case(case: str, repeats: int) -> dict:
    folder = ensure_case_data(case)
    if case != "index":
        folder = next(p for p in folder.rglob("series*") if p.is_dir())
    warmed = warm(folder)
    cmds = commands(case, folder)
    env = {"PYTHONPATH": str(REPO)}
    samples: dict[str, list[float]] = {name: [] for name in cmds}
    for cmd in cmds.values():
        run_process(cmd, env)  # untimed: the first run pays for .pyc files and cold libraries
    for repeat in range(repeats):
        names = list(cmds) if repeat % 2 == 0 else list(reversed(cmds))
        for name in names:
            samples[name].append(round(run_process(cmds[name], env), 4))
    median = {name: statistics.median(values) for name, values in samples.items()}
    target = CASES[case][4]
    ratio = median["ours"] / median["sitk"]
    result = {"what": CASES[case][5], "folder": str(folder), "bytes_warmed": warmed,
              "commands": {k: " ".join(v if k == "ours" else v[:2] + ["<script>"] + v[3:]) for k, v in cmds.items()},
              "samples_s": samples, "median_s": {k: round(v, 4) for k, v in median.items()},
              "ratio_ours_over_sitk": round(ratio, 3), "target_ratio": target,
              "pass": ratio < target if case == "rle" else ratio <= target}
    if "ours_scan_only" in median:
        result["ratio_scan_only_over_sitk"] = round(median["ours_scan_only"] / median["sitk"], 3)
    if case != "index":
        proc = subprocess.run([sys.executable, "-c", MEMORY, str(folder)], capture_output=True, text=True,
                              env={**os.environ, **env}, cwd=str(REPO))
        result["memory_in_process"] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {
            "error": proc.stderr[-2000:]}
    if CASES[case][0] is not None:
        result["decoder_per_frame"] = decoder_per_frame(folder, env)
    return result


def decoder_per_frame(folder: Path, env: dict[str, str]) -> dict:
    """Each tool's decoding alone, frame after frame in one process: wall and CPU time per frame (CPU
    counts every thread, so a decoder that runs on several cores shows CPU above wall). `floor_ratio`
    is what our ratio would be if decoding were all that cost and our workers used every core without
    loss: our CPU per frame over the cores, against SimpleITK's wall time per frame."""
    proc = subprocess.run([sys.executable, "-c", DECODER_CPU, str(folder)], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=str(REPO))
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    out["cores"] = cores
    out["floor_ratio"] = round(out["ours_one_process"]["cpu_ms"] / cores / out["sitk"]["wall_ms"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    compile_sources()
    results = {"benchmark": "open whole studies: liverview vs SimpleITK, whole processes",
               "machine": describe_machine(("numpy", "pydicom", "SimpleITK", "openjpeg", "jpeg_ls")),
               "method": __doc__.split("\n\n")[1].strip(), "repeats": args.repeats, "cases": {}}
    for case in args.cases.split(","):
        results["cases"][case] = result = bench_case(case, args.repeats)
        extra = (f"  scan only {result['median_s']['ours_scan_only']:.3f} s (ratio "
                 f"{result['ratio_scan_only_over_sitk']:.2f})" if "ours_scan_only" in result["median_s"] else "")
        memory = result.get("memory_in_process", {}).get("ratio")
        extra += f"  peak memory {memory:.2f} x volume" if memory is not None else ""
        decoder = result.get("decoder_per_frame", {})
        if "floor_ratio" in decoder:
            extra += (f"  decoding ms/frame (wall/CPU): ours {decoder['ours_one_process']['wall_ms']}/"
                      f"{decoder['ours_one_process']['cpu_ms']}, SimpleITK {decoder['sitk']['wall_ms']}/"
                      f"{decoder['sitk']['cpu_ms']}; floor ratio {decoder['floor_ratio']}")
        print(f"{case:7s} ours {result['median_s']['ours']:.3f} s  SimpleITK {result['median_s']['sitk']:.3f} s  "
              f"ratio {result['ratio_ours_over_sitk']:.2f} (target {result['target_ratio']})  "
              f"{'pass' if result['pass'] else 'MISS'}{extra}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
