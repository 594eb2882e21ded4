"""Real against simulated CT: noise, its spatial correlation, liver texture and lesion margins (run by hand).

Measured the same way on each image, with the contrast-phase detector's liver finder (the 5 slices where
the liver is largest):
- noise: robust SD of the liver pixels around their 7 mm local median (`contrast_phase._noise_hu`);
- noise correlation: the distance (mm) at which the autocorrelation of that residual falls to 0.5
  (averaged over rows and columns);
- texture: SD of the liver after a 3 mm Gaussian (what remains when the noise is smoothed away);
- lesion margin: the 10-90 % rise distance (mm) of the mean radial profile across an outlined lesion's
  border (crlm-ct-1004's metastasis; simulated metastases of the same size range).
Images: crlm-ct-1004 (real, portal-venous), hcc-tace-006 (real, arterial; liver only), the demo study, and simulator patients (`simulate_patient`,
seeds 700001...). Writes benchmarks/results/realism.json and docs/figures/real-vs-simulated.png (the real
metastasis beside simulated ones at the liver window).

    .venv/bin/python benchmarks/bench_realism.py [--patients 12]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import describe_machine  # noqa: E402 - benchmarks/ is not a package

from liverview.annotations.document import AnnotationDocument  # noqa: E402
from liverview.annotations.measurements import slice_masks  # noqa: E402
from liverview.imaging import contrast_phase as cp  # noqa: E402
from liverview.io import load_series  # noqa: E402
from liverview.synth.simulator import DEFAULT_CONFIG, patient_document, patient_volume, simulate_patient  # noqa: E402

CRLM = REPO.parent / "shared" / "data" / "series" / "crlm-ct-1004" / "image"
HCC = REPO.parent / "shared" / "data" / "series" / "hcc-tace-006" / "image"
CRLM_ANNOTATIONS = REPO / "tests" / "data" / "crlm-ct-1004-metastases.json"
DEMO = REPO / "build" / "demo" / "dicom"
OUT = REPO / "benchmarks" / "results" / "realism.json"
FIGURE = REPO / "docs" / "figures" / "real-vs-simulated.png"


def liver_slices(volume):
    indices = cp.sample_indices(volume.shape[0])
    frame = cp._patient_frame(volume.shape[1:], volume.spacing_mm[1:], volume.row_direction, volume.column_direction)
    livers = {z: cp.find_liver(volume.array[z], volume.spacing_mm[1:], frame) for z in indices}
    return sorted(livers.items(), key=lambda item: -item[1].sum())[:cp.MEASURED_SLICES]


def correlation_mm(residual: np.ndarray, core: np.ndarray, pixel_mm: float) -> float:
    """Where the residual's autocorrelation falls to 0.5, along rows and columns (mm)."""
    values = np.where(core, residual, 0.0)
    spectrum = np.abs(np.fft.fft2(values)) ** 2
    acf = np.real(np.fft.ifft2(spectrum))
    norm = np.real(np.fft.ifft2(np.abs(np.fft.fft2(core.astype(float))) ** 2))
    acf = acf / np.maximum(norm, 1.0)
    acf /= acf[0, 0]
    lengths = []
    for line in (acf[0, :20], acf[:20, 0]):
        below = np.nonzero(line < 0.5)[0]
        if below.size:
            k = int(below[0])
            lengths.append((k - 1 + (line[k - 1] - 0.5) / (line[k - 1] - line[k])) * pixel_mm)
    return float(np.mean(lengths)) if lengths else float("nan")


def measure_liver(volume) -> dict:
    pixel = float(np.sqrt(volume.spacing_mm[1] * volume.spacing_mm[2]))
    noise, corr, texture = [], [], []
    for z, liver in liver_slices(volume):
        if not liver.any():
            continue
        hu = volume.array[z].astype(np.float32)
        core = cv2.erode(liver.astype(np.uint8), cp._disk(5.0 / pixel)).astype(bool)
        size = max(3, int(round(7.0 / pixel)) | 1)
        residual = hu - cv2.blur(hu, (size, size))
        noise.append(cp._noise_hu(volume.array[z], liver, volume.spacing_mm[1:]))
        corr.append(correlation_mm(np.clip(residual, -100, 100), core, pixel))
        smooth = cv2.GaussianBlur(hu, (0, 0), 3.0 / pixel)[core]
        mode = np.median(smooth)
        texture.append(float(1.4826 * np.median(np.abs(smooth[np.abs(smooth - mode) < 40] - mode))))
    return {"noise_hu": round(float(np.median(noise)), 1), "noise_correlation_mm": round(float(np.nanmedian(corr)), 2),
            "texture_hu": round(float(np.median(texture)), 1), "pixel_mm": round(pixel, 3),
            "slice_mm": round(float(volume.spacing_mm[0]), 2)}


def margin_mm(volume, lesion) -> tuple[float, np.ndarray]:
    """10-90 % rise of the mean profile across the border of the lesion's largest outline, and a crop."""
    masks = {z: m for z, m in slice_masks(volume, lesion).items() if m.any()}
    z = max(masks, key=lambda k: masks[k].sum())
    mask = masks[z]
    pixel = float(volume.spacing_mm[1])
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5) * pixel
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5) * pixel
    signed = np.where(mask, -inside, outside)
    hu = cv2.GaussianBlur(volume.array[z].astype(np.float32), (0, 0), 1.0)
    bins = np.arange(-6.0, 6.01, 1.0)
    profile = np.array([float(hu[(signed >= a) & (signed < b)].mean()) if ((signed >= a) & (signed < b)).any()
                        else np.nan for a, b in zip(bins[:-1], bins[1:])])
    centres = 0.5 * (bins[:-1] + bins[1:])
    valid = np.isfinite(profile)
    profile = np.interp(centres, centres[valid], profile[valid])
    lo, hi = profile[:2].mean(), profile[-2:].mean()
    frac = (profile - lo) / (hi - lo) if hi != lo else np.zeros_like(profile)
    rise = np.interp(0.9, np.maximum.accumulate(frac), centres) - np.interp(0.1, np.maximum.accumulate(frac), centres)
    ys, xs = np.nonzero(mask)
    cy, cx, half = int(ys.mean()), int(xs.mean()), int(round(30.0 / pixel))
    window = np.clip((volume.array[z].astype(float) - (70 - 85)) / 170 * 255, 0, 255).astype(np.uint8)
    crop = window[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half]
    return float(rise), cv2.resize(crop, (160, 160), interpolation=cv2.INTER_LINEAR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=700001)
    args = parser.parse_args()
    crlm = load_series(CRLM)
    reference = AnnotationDocument.from_dict(json.loads(CRLM_ANNOTATIONS.read_text())).lesions[0]
    results = {"crlm-ct-1004 (real)": measure_liver(crlm)}
    real_margin, real_crop = margin_mm(crlm, reference)
    results["crlm-ct-1004 (real)"]["metastasis_margin_mm"] = round(real_margin, 2)
    results["hcc-tace-006 (real, arterial)"] = measure_liver(load_series(HCC))
    if DEMO.is_dir():
        results["demo (simulated)"] = measure_liver(load_series(DEMO))
    simulated, margins, crops = [], [], []
    for k in range(args.patients):
        patient = simulate_patient(args.seed + k, config=DEFAULT_CONFIG)
        volume = patient_volume(patient)
        simulated.append(measure_liver(volume))
        for lesion in patient_document(patient, volume).lesions:
            if lesion.label == "metastasis" and 12.0 <= 2 * max(lesion.synth["radii_mm_zyx"]) <= 40.0:
                rise, crop = margin_mm(volume, lesion)
                margins.append(rise)
                crops.append(crop)
    keys = simulated[0].keys()
    results["simulator patients"] = {key: [round(float(np.percentile([s[key] for s in simulated], q)), 2) for q in (10, 50, 90)]
                                     for key in keys}
    results["simulator patients"]["metastasis_margin_mm"] = [round(float(np.percentile(margins, q)), 2) for q in (10, 50, 90)] \
        if margins else None
    results["note"] = "simulator values are [10th, 50th, 90th] percentiles over patients; real and demo single values"
    results["patients"], results["seed"] = args.patients, args.seed
    results["date"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    results["machine"] = describe_machine(("numpy", "cv2"))
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    tiles = [real_crop] + crops[:5]
    labels = ["real (crlm-ct-1004)"] + [f"simulated {i + 1}" for i in range(len(tiles) - 1)]
    for tile, label in zip(tiles, labels):
        cv2.putText(tile, label, (4, 154), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(FIGURE), np.hstack(tiles))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
