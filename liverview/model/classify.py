"""Classify the outlined lesions of a loaded series: what the app's "Classify" and `liverview-predict` run.

A lesion is classified on its key slice (the slice where its outline is largest, as in training)
through the bundle's own preprocessing pipeline, so the tensor is the one the evaluation saw. One
forward + backward pass gives both the probabilities and the Grad-CAM map; three flipped copies
(the flips training augmented with) give the test-time-augmentation spread used as an uncertainty
indication alongside the normalised entropy. Heatmaps of the lesion's other slices explain the same
class and are computed on request (`compute_slice_heatmap`), so the overlay can follow the slice.

Qt-free; the GUI runs these functions on its single model worker thread.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from liverview.annotations.document import AIResult, Lesion
from liverview.annotations.export_dataset import PhaseSource, read_on_phase
from liverview.annotations.transfer import TransferError
from liverview.annotations.measurements import measure_lesion, slice_masks
from liverview.annotations.storage import now_iso
from liverview.imaging.contrast_phase import (ContrastPhase, PhaseDecision, detect_series_phases,
                                              share_on_liver as outline_share_on_liver)
from liverview.imaging.lesion_enhancement import measure_lesion_enhancement
from liverview.imaging.orientation import slice_number
from liverview.io.volume import Volume
from liverview.model.bundle_format import BundleError
from liverview.model.inference import LoadedModel, load_bundle, predict, predict_flips, resolve_device
from liverview.model.domain import OUTSIDE, TrainingDomain
from liverview.model.gradcam import compute_gradcam
from liverview.model.phase_reader import answer_id
from liverview.model.structure_reader import crop_display, crop_square, gradcam_phases, lesion_inputs
from liverview.model.transforms import CropSquareResize, select_key_slice_by_area, select_slab, stack_phases
from liverview.model.uncertainty import (HEATMAP_MARGIN_MM, answer_from_copies, copy_statistics,
                                         normalised_entropy, uncertainty_level)
from liverview.paths import DEFAULT_MODEL_NAME, default_model_path

Progress = Callable[[int, int, str], None]
ShouldStop = Callable[[], bool]


class ClassificationError(Exception):
    """A lesion cannot be classified; the message says which lesion and why."""


def model_id(loaded: LoadedModel) -> str:
    """Stable id stored with each result: name, version and the weights' SHA-256 prefix."""
    sha = str(loaded.info.get("sha256") or (loaded.info.get("weights") or {}).get("sha256") or "")
    return f"{loaded.name} {loaded.version}".strip() + (f" ({sha[:12]})" if sha else "")


@dataclass
class Heatmap:
    """A Grad-CAM map over the network's input square, placed on one slice of the series. For a model that
    reads several phases it is one map of the combined input (every phase's channels), not one per phase."""

    slice_index: int
    cam: np.ndarray  # float32 (n, n), 0..1, rows then columns of the input square
    center_yx: tuple[float, float]  # square centre in slice pixel indices (pixel centres are integers)
    side_mm: float
    spacing_yx: tuple[float, float]
    explained: str  # the class id the map explains

    def share_inside(self, mask: np.ndarray, margin_mm: float = HEATMAP_MARGIN_MM) -> float:
        """The fraction of the map's mass on the slice that lies inside `mask` (the lesion's outline on
        this slice, bool (y, x)) grown by `margin_mm`: how much of the explanation is about the lesion."""
        rows, cols = self.cell_centres_px()
        radius = (max(1, int(round(margin_mm / self.spacing_yx[0]))), max(1, int(round(margin_mm / self.spacing_yx[1]))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius[1] + 1, 2 * radius[0] + 1))
        grown = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
        # The pixel a cell centre falls in; a centre on a pixel edge goes to the higher pixel, always
        # (np.rint would send ties to even pixels, one cell this way and the next that way).
        r = np.clip(np.floor(rows + 0.5).astype(int), 0, mask.shape[0] - 1)
        c = np.clip(np.floor(cols + 0.5).astype(int), 0, mask.shape[1] - 1)
        inside_image = ((rows >= -0.5) & (rows < mask.shape[0] - 0.5))[:, None] & \
                       ((cols >= -0.5) & (cols < mask.shape[1] - 0.5))[None, :]
        inside = grown[np.ix_(r, c)] & inside_image
        total = float(self.cam.sum())
        return float(self.cam[inside].sum() / total) if total > 0 else 0.0

    def cell_centres_px(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols): each map cell's centre in slice pixel coordinates (pixel centres are integers),
        where the network's input sampled the slice for that cell."""
        x0, y0, width, height = self.extent_px()
        n_rows, n_cols = self.cam.shape
        return y0 + (np.arange(n_rows) + 0.5) * height / n_rows, x0 + (np.arange(n_cols) + 0.5) * width / n_cols

    def extent_px(self) -> tuple[float, float, float, float]:
        """(x0, y0, width, height) of the square in pixel coordinates whose pixel centres are integers,
        i.e. x0 is the left edge; matches the preprocessing's resampling grid exactly."""
        sy, sx = self.spacing_yx
        width, height = self.side_mm / sx, self.side_mm / sy
        return self.center_yx[1] - width / 2.0, self.center_yx[0] - height / 2.0, width, height


@dataclass
class LesionPrediction:
    """The model's opinion on one lesion."""

    lesion_id: str
    model_id: str
    classes: list[str]
    probabilities: dict[str, float]
    predicted: str
    slice_index: int
    entropy: float  # normalised to 0..1
    tta_spread: float  # largest standard deviation of a class probability over the TTA copies
    tta_agreement: float  # fraction of TTA copies whose top class is `predicted`
    heatmap: Heatmap | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    time: str = field(default_factory=now_iso)
    #: The contrast phase of the outlined series ("unknown" when it could not be told).
    phase: str = ContrastPhase.UNKNOWN.value
    #: The phases the network read: the outlined series' for a one-phase model; for a multiphase model
    #: every phase of the study it was given that the model reads.
    phases_read: list[str] = field(default_factory=list)
    #: Why the input lies outside the model's training data (`domain.TrainingDomain.check`); [] inside.
    outside_training: list[str] = field(default_factory=list)
    #: Share of the heatmap's mass inside the outline grown by `HEATMAP_MARGIN_MM` (None without a heatmap).
    heatmap_inside: float | None = None
    #: What the network saw of each phase read: the key slice's crop at the liver window, uint8 (size, size),
    #: on the heatmap's square (not stored with the lesion; shown beside the answer).
    phase_crops: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: Grad-CAM of each phase read by a multiphase model, computed with that phase alone present (where
    #: the network looks when it reads that phase); on the crops' square, float (size, size) in 0..1.
    phase_cams: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: The phase reader's answer: per phase read, the lesion's and the liver ring's median HU it measured
    #: ({"lesion_hu": ..., "liver_hu": ...}); {} for the CNN alone.
    enhancement_hu: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def probability(self) -> float:
        return self.probabilities[self.predicted]

    @property
    def uncertainty(self) -> str:
        """`domain.OUTSIDE` for an input outside the training data, else 'low', 'moderate' or 'high'
        (`uncertainty.uncertainty_level`, as the evaluation report counts it)."""
        if self.outside_training:
            return OUTSIDE
        return uncertainty_level(self.entropy, self.tta_spread, self.tta_agreement)

    def to_ai_result(self, outline: str | None = None) -> AIResult:
        """The answer as stored with the lesion, stamped with the `Lesion.outline_key()` it was computed on."""
        return AIResult(outline=outline, model_id=self.model_id, probabilities=dict(self.probabilities), predicted=self.predicted,
                        time=self.time, uncertainty=self.uncertainty, entropy=round(self.entropy, 4),
                        slice_index=self.slice_index, phases_read=list(self.phases_read),
                        outside_training=list(self.outside_training),
                        heatmap_inside=None if self.heatmap_inside is None else round(self.heatmap_inside, 3))

    def to_json(self) -> dict:
        return {"id": self.lesion_id, "predicted": self.predicted, "probability": self.probability,
                "probabilities": self.probabilities, "uncertainty": self.uncertainty,
                "outside_training": self.outside_training, "phases_read": list(self.phases_read),
                "heatmap_inside": None if self.heatmap_inside is None else round(self.heatmap_inside, 3),
                "entropy": self.entropy, "tta_spread": self.tta_spread, "tta_agreement": self.tta_agreement,
                "slice_index": self.slice_index, "model_id": self.model_id, "time": self.time,
                **({"enhancement_hu": self.enhancement_hu} if self.enhancement_hu else {})}


def load_model_with_fallback(path: str | Path, device_preference: str = "auto",
                             threads: int = 0) -> tuple[LoadedModel, str]:
    """Load a bundle for interactive use: `threads` > 0 caps torch's intra-op threads (one leaves a core
    to the GUI); a device that is unavailable or fails (e.g. a CUDA driver problem) falls back to the CPU.
    Returns the model and a note saying why it is not on the preferred device ("" when it is). Bundle
    errors (checksum, classes, input size) are raised: another device would not fix them."""
    if threads > 0:
        torch.set_num_threads(threads)
    note = ""
    try:
        device = resolve_device(device_preference)
    except ValueError as exc:
        device = torch.device("cpu")
        note = f"{device_preference} unavailable ({exc}); using the CPU"
    try:
        return load_bundle(path, device), note
    except BundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the GPU raised, the CPU may still work
        if device.type == "cpu":
            raise
        return load_bundle(path, "cpu"), f"{device} failed ({type(exc).__name__}: {exc}); using the CPU"


def check_series(loaded: LoadedModel, volume: Volume) -> None:
    """The bundled networks read CT Hounsfield units through HU windows; anything else would give
    confident nonsense, so it is refused with the reason."""
    if not volume.is_hu:
        raise ClassificationError(f"the model {loaded.name} reads CT in Hounsfield units; this series is not: "
                                  f"{volume.info.units.reason}")


def lesion_slice_masks(volume: Volume, lesion: Lesion) -> dict[int, np.ndarray]:
    """The lesion's non-empty outline masks per slice inside the image; error when there are none."""
    masks = {z: m for z, m in slice_masks(volume, lesion).items() if m.any()}
    if not masks:
        raise ClassificationError(f"lesion {lesion.id} has no outline inside the image "
                                  f"({len(lesion.rois)} outline(s), none covering a pixel of the series)")
    return masks


def key_slice(masks: dict[int, np.ndarray]) -> int:
    return select_key_slice_by_area({z: int(m.sum()) for z, m in masks.items()})


def model_slab(loaded: LoadedModel, volume: Volume, z: int) -> np.ndarray:
    """The HU the model reads for an outline on slice `z`: that slice, with its neighbours for a 2.5-D model."""
    return select_slab(volume.array, z, loaded.preprocess_config.neighbour_slices)


def _crop_geometry(loaded: LoadedModel, mask: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[tuple[float, float], float]:
    config = loaded.preprocess_config
    crop = CropSquareResize(config.size, config.crop_scale, config.crop_margin_mm, config.crop_min_mm)
    cy, cx, side = crop.square_mm(mask, spacing_yx)
    return (cy, cx), side


def _heatmap(loaded: LoadedModel, volume: Volume, z: int, mask: np.ndarray, tensor: torch.Tensor,
             class_index: int | None) -> tuple[Heatmap, np.ndarray]:
    spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
    cam, index, probabilities = compute_gradcam(loaded, tensor, class_index)
    center, side = _crop_geometry(loaded, mask, spacing)
    return Heatmap(z, cam, center, side, spacing, loaded.classes[index]), probabilities


def series_phase(volume: Volume) -> PhaseDecision:
    """The contrast phase of a loaded series, measured on its own images (about 0.15 s)."""
    return detect_series_phases([volume.info], {volume.info.key: volume.array})[volume.info.key]


def phase_slabs(loaded: LoadedModel, volume: Volume, lesion: Lesion, z: int, mask: np.ndarray, phase: str,
                others: Sequence[PhaseSource], phases: Sequence[str] | None = None,
                neighbour_slices: int | None = None) -> dict[str, np.ndarray]:
    """What a multiphase model (or the phase reader, reading `phases`) reads of `lesion` (outlined on
    slice `z` of `volume`, whose phase is `phase`): per phase it reads, the slab on the outlined series'
    grid. Another series' slab is that series resampled by patient coordinates around the lesion (the
    outline's box plus the preprocessing's context, the breathing shift aligned, as the training export
    did); the rest of the slice, which the preprocessing does not look at, repeats the outlined series.
    A series the lesion cannot be carried to is left out (and so marked missing). `neighbour_slices`
    overrides the CNN's own (a structure network reads as many as it was trained on)."""
    config = loaded.preprocess_config
    wanted = config.phases if phases is None else tuple(phases)
    n = config.neighbour_slices if neighbour_slices is None else neighbour_slices
    key = select_slab(volume.array, z, n)
    slabs = {phase: key} if phase in wanted else {}
    context = config.context_px
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, int(ys.min()) - context), min(volume.shape[1], int(ys.max()) + 1 + context)
    x0, x1 = max(0, int(xs.min()) - context), min(volume.shape[2], int(xs.max()) + 1 + context)
    z0, z1 = max(0, z - n), min(volume.shape[0], z + n + 1)
    # Slices beyond the series' ends repeat its end slice, as `select_slab` does for the key series.
    ends = ((z0 - (z - n), (z + n + 1) - z1), (0, 0), (0, 0))
    for source in others:
        if source.phase not in wanted or source.phase in slabs:
            continue
        try:
            region, _ = read_on_phase(lesion, volume, np.array([[z0, z1], [y0, y1], [x0, x1]]), source)
        except TransferError:
            continue
        slab = np.array(key, copy=True)
        if slab.ndim == 2:
            slab[y0:y1, x0:x1] = region[0]
        else:
            slab[:, y0:y1, x0:x1] = np.pad(region, ends, mode="edge")
        slabs[source.phase] = slab
    return slabs


def model_input(loaded: LoadedModel, volume: Volume, lesion: Lesion, z: int, mask: np.ndarray, phase: str,
                other_phases: Sequence[PhaseSource] = ()) -> tuple[torch.Tensor, list[str]]:
    """The network input for `lesion`'s outline on slice `z` and the phases it holds: the slice (slab)
    alone for a one-phase model, every phase the model reads for a multiphase one (`phase_slabs`)."""
    config = loaded.preprocess_config
    spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
    try:
        if not config.phases:
            return loaded.preprocess(model_slab(loaded, volume, z), mask, spacing), [phase]
        slabs = phase_slabs(loaded, volume, lesion, z, mask, phase, other_phases)
        if not slabs:
            raise ClassificationError(f"lesion {lesion.id}: the model reads the phases {', '.join(config.phases)}; "
                                      f"none of them was given (this series is {phase})")
        stacked, present = stack_phases(config, slabs)
        return (loaded.preprocess(stacked, mask, spacing, present=present),
                [p for p, here in zip(config.phases, present) if here])
    except ValueError as exc:
        raise ClassificationError(f"lesion {lesion.id}: {exc}") from exc


def classify_lesion(loaded: LoadedModel, volume: Volume, lesion: Lesion, *, heatmap: bool = True,
                    tta: bool = True, phase: PhaseDecision | None = None,
                    other_phases: Sequence[PhaseSource] = ()) -> LesionPrediction:
    """Probabilities, uncertainty and (optionally) the Grad-CAM heatmap of `lesion` on its key slice.
    `phase` is the series' contrast phase (measured here when not given); an input outside what the
    model was trained on says so (`LesionPrediction.outside_training`). A multiphase model also reads
    the lesion on `other_phases` (other series of the study). Raises `ClassificationError` for a non-CT
    series, a lesion without an outline in the image, or a multiphase model given no phase it reads."""
    check_series(loaded, volume)
    phase = phase if phase is not None else series_phase(volume)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    masks = lesion_slice_masks(volume, lesion)
    z = key_slice(masks)
    reader = loaded.phase_reader
    if reader is not None and (other_phases or phase.phase.value != reader.cnn_phase):
        answer = read_phases(loaded, volume, lesion, z, masks[z], phase, other_phases, heatmap=heatmap, tta=tta)
        if answer is not None:
            return answer
    tensor, read = model_input(loaded, volume, lesion, z, masks[z], phase.phase.value, other_phases)
    timings["preprocess"] = (time.perf_counter() - start) * 1000
    mark = time.perf_counter()
    # The flipped copies serve the uncertainty and, for a flip-averaging model, the answer itself
    # (the same `predict_flips` evaluation measured the bundle's metrics with).
    copies = predict_flips(loaded, tensor) if tta or loaded.flip_average else predict(loaded, tensor)[None]
    probs = answer_from_copies(copies, loaded.flip_average)[0]
    top = int(np.argmax(probs))
    timings["classify"] = (time.perf_counter() - mark) * 1000
    cam, inside = None, None
    if heatmap:
        mark = time.perf_counter()
        cam, _ = _heatmap(loaded, volume, z, masks[z], tensor, top)
        inside = cam.share_inside(masks[z])
        timings["gradcam"] = (time.perf_counter() - mark) * 1000
    spread, agreement = 0.0, 1.0
    if tta:
        spreads, agreements = copy_statistics(copies, probs[None])
        spread, agreement = float(spreads[0]), float(agreements[0])
    timings["total"] = (time.perf_counter() - start) * 1000
    return LesionPrediction(
        lesion_id=lesion.id, model_id=model_id(loaded), classes=list(loaded.classes),
        probabilities={c: float(p) for c, p in zip(loaded.classes, probs)}, predicted=loaded.classes[top],
        slice_index=z, entropy=normalised_entropy(probs), tta_spread=spread, tta_agreement=agreement,
        heatmap=cam, timings_ms=timings, phase=phase.phase.value, phases_read=read, heatmap_inside=inside,
        phase_crops=input_crops(loaded, tensor, read),
        phase_cams=phase_heatmaps(loaded, tensor, read, top) if heatmap else {},
        outside_training=outside_domain(loaded_domain(loaded), volume, phase, lesion, z, masks[z]))


def read_phases(loaded: LoadedModel, volume: Volume, lesion: Lesion, z: int, mask: np.ndarray, phase: PhaseDecision,
                other_phases: Sequence[PhaseSource], *, heatmap: bool = True, tta: bool = True) -> LesionPrediction | None:
    """The phase reader's answer (`phase_reader`): the lesion read on every phase it can be read on (the
    outlined series and `other_phases` carried to it). A structure network reads each phase's crop and
    numbers and explains its answer with its own Grad-CAM per phase (the outlined series' map is the
    overlay); regressions read the numbers and the CNN's answer per phase, and the heatmaps are the
    CNN's. None when the reader knows none of the phases, or only the CNN's own (the CNN alone answers
    then, as without a reader)."""
    reader = loaded.phase_reader
    assert reader is not None
    start = time.perf_counter()
    spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
    # A network reads the slices it was trained on around the key slice, whatever the CNN reads.
    slabs = phase_slabs(loaded, volume, lesion, z, mask, phase.phase.value, other_phases, reader.phases,
                        neighbour_slices=reader.network.neighbour_slices if reader.network is not None else None)
    features = {p: measure_lesion_enhancement(s if s.ndim == 2 else s[s.shape[0] // 2], mask, spacing)
                for p, s in slabs.items()}
    subset = reader.subset_for(features)
    if subset is None or subset == (reader.cnn_phase,):
        return None
    # The overlay lies on the outlined series: its own phase's map where it was read (all slabs share its grid).
    shown = next(p for p in (phase.phase.value, reader.cnn_phase, *subset) if p in subset)
    timings: dict[str, float] = {}
    cam, inside, cams = None, None, {}
    if reader.network is not None:
        inputs = lesion_inputs({p: slabs[p] for p in subset}, mask, spacing, reader.phases, measured=features,
                               neighbour_slices=reader.network.neighbour_slices)
        timings["preprocess"] = (time.perf_counter() - start) * 1000
        mark = time.perf_counter()
        probs = reader.probabilities_of(subset, [features], [{}], [inputs])[0]
        top = int(np.argmax(probs))
        timings["classify"] = (time.perf_counter() - mark) * 1000
        crops = {p: crop_display(inputs, reader.phases.index(p)) for p in subset}
        if heatmap:
            mark = time.perf_counter()
            cams = gradcam_phases(reader.network, inputs, reader.phases, subset, top)
            cy, cx, side = crop_square(mask, spacing)
            cam = Heatmap(z, cams[shown], (cy, cx), side, spacing, loaded.classes[top])
            inside = cam.share_inside(mask)
            timings["gradcam"] = (time.perf_counter() - mark) * 1000
    else:
        tensors = {p: loaded.preprocess(slabs[p], mask, spacing) for p in subset}
        timings["preprocess"] = (time.perf_counter() - start) * 1000
        mark = time.perf_counter()
        batch = list(tensors.values())
        copies = predict_flips(loaded, batch) if tta or loaded.flip_average else predict(loaded, torch.stack(batch))[None]
        cnn = dict(zip(tensors, answer_from_copies(copies, loaded.flip_average)))
        probs = reader.probabilities_of(subset, [features], [cnn])[0]
        top = int(np.argmax(probs))
        timings["classify"] = (time.perf_counter() - mark) * 1000
        middle = loaded.preprocess_config.neighbour_slices
        crops = {p: (t[middle].numpy() * 255.0).clip(0, 255).astype(np.uint8) for p, t in tensors.items()}
        if heatmap:
            mark = time.perf_counter()
            cam, _ = _heatmap(loaded, volume, z, mask, tensors[shown], top)
            inside = cam.share_inside(mask)
            cams = {p: cam.cam if p == shown else compute_gradcam(loaded, t, top)[0] for p, t in tensors.items()}
            timings["gradcam"] = (time.perf_counter() - mark) * 1000
    # What the reader's training lesions covered; a reader fitted without that record covers its phases
    # and otherwise what the CNN's lesions covered.
    domain = (TrainingDomain.from_model_info(reader.training) if "training_domain" in reader.training
              else replace(loaded_domain(loaded), phases=tuple(ContrastPhase(p) for p in reader.phases)))
    timings["total"] = (time.perf_counter() - start) * 1000
    return LesionPrediction(
        lesion_id=lesion.id, model_id=answer_id(model_id(loaded)), classes=list(loaded.classes),
        probabilities={c: float(p) for c, p in zip(loaded.classes, probs)}, predicted=loaded.classes[top],
        # The reader's uncertainty is its entropy's level (`phase_reader.reader_uncertainty`), as it was scored.
        slice_index=z, entropy=normalised_entropy(probs), tta_spread=0.0, tta_agreement=1.0,
        heatmap=cam, timings_ms=timings, phase=phase.phase.value, phases_read=list(subset), heatmap_inside=inside,
        phase_crops=crops, phase_cams=cams,
        enhancement_hu={p: {"lesion_hu": round(float(features[p][0]), 1), "liver_hu": round(float(features[p][1]), 1)}
                        for p in subset},
        outside_training=outside_domain(domain, volume, phase, lesion, z, mask))


def input_crops(loaded: LoadedModel, tensor: torch.Tensor, read: Sequence[str]) -> dict[str, np.ndarray]:
    """Each read phase's key slice as the network saw it (its first window, the liver window by default),
    uint8: the channels are window-major, every slice of every phase, the key slice in each phase's middle."""
    config = loaded.preprocess_config
    per_phase = config.slab_slices
    order = list(config.phases) or list(read)
    crops = {}
    for phase in read:
        index = order.index(phase) * per_phase + config.neighbour_slices
        crops[phase] = (tensor[index].detach().cpu().numpy() * 255.0).clip(0, 255).astype(np.uint8)
    return crops


def phase_heatmaps(loaded: LoadedModel, tensor: torch.Tensor, read: Sequence[str],
                   class_index: int) -> dict[str, np.ndarray]:
    """Grad-CAM of `class_index` per phase read, each with the other phases marked missing (as phase
    dropout trained the model to read them): the early-fused channels give one map for the combined
    input, which cannot say which phase the network looked at where. One-phase input: no maps here
    (the combined map is that phase's)."""
    config = loaded.preprocess_config
    if len(read) < 2 or not config.phases:
        return {}
    n_image = tensor.shape[0] - len(config.phases)
    maps = {}
    for phase in read:
        index = list(config.phases).index(phase)
        alone = tensor.clone()
        for other in range(len(config.phases)):
            if other != index:
                for w in range(len(config.windows)):
                    start = w * config.input_slices + other * config.slab_slices
                    alone[start:start + config.slab_slices] = 0.0
                alone[n_image + other] = 0.0
        cam, _, _ = compute_gradcam(loaded, alone, class_index)
        maps[phase] = cam
    return maps


def phases_read_by(loaded: LoadedModel) -> tuple[str, ...]:
    """The contrast phases a loaded model reads besides the outlined series: a multiphase network's, else
    its phase reader's; () for a one-phase network alone."""
    if loaded.preprocess_config.phases:
        return tuple(loaded.preprocess_config.phases)
    return loaded.phase_reader.phases if loaded.phase_reader is not None else ()


def outside_domain(domain: TrainingDomain, volume: Volume, phase: PhaseDecision, lesion: Lesion, z: int,
                   mask: np.ndarray) -> list[str]:
    """Why `lesion`, read on its key slice `z` (outline `mask`), lies outside `domain`; [] inside."""
    return domain.check(volume, phase, measure_lesion(volume, lesion).long_axis_mm, share_on_liver(volume, z, mask))


def share_on_liver(volume: Volume, z: int, mask: np.ndarray) -> float | None:
    """How much of the outline `mask` on slice `z` lies on the liver (`contrast_phase.share_on_liver`);
    None where nothing can be told, also for a series that is not axial HU."""
    if not volume.is_hu or abs(volume.normal[2]) < 0.9:
        return None
    return outline_share_on_liver(volume.array[z], mask, (volume.spacing_mm[1], volume.spacing_mm[2]),
                                  volume.row_direction, volume.column_direction)


def loaded_domain(loaded: LoadedModel) -> TrainingDomain:
    """What the loaded model was trained on (model.json's `training_domain`, or the assumption for
    bundles made before it was recorded)."""
    return TrainingDomain.from_model_info(loaded.info)


def compute_slice_heatmap(loaded: LoadedModel, volume: Volume, lesion: Lesion, slice_index: int,
                          explained: str, phase: str = ContrastPhase.UNKNOWN.value,
                          other_phases: Sequence[PhaseSource] = ()) -> Heatmap:
    """Grad-CAM of class `explained` for the lesion's outline on `slice_index` (the overlay following
    the slice through a multi-slice lesion), from the same input as `classify_lesion` (`phase` and
    `other_phases` for a multiphase model). Raises `ClassificationError` when it has no outline there."""
    check_series(loaded, volume)
    masks = lesion_slice_masks(volume, lesion)
    if slice_index not in masks:
        raise ClassificationError(f"lesion {lesion.id} has no outline on slice {slice_number(volume, slice_index)}")
    if explained not in loaded.classes:
        raise ClassificationError(f"the model {loaded.name} has no class {explained!r}")
    tensor, _ = model_input(loaded, volume, lesion, slice_index, masks[slice_index], phase, other_phases)
    cam, _ = _heatmap(loaded, volume, slice_index, masks[slice_index], tensor, loaded.classes.index(explained))
    return cam


@dataclass
class BatchResult:
    predictions: list[LesionPrediction]
    errors: dict[str, str]  # lesion id -> reason
    cancelled: bool


def classify_lesions(loaded: LoadedModel, volume: Volume, lesions: Sequence[Lesion], *, heatmap: bool = True,
                     progress: Progress | None = None, should_stop: ShouldStop | None = None,
                     on_result: Callable[[LesionPrediction], None] | None = None,
                     phase: PhaseDecision | None = None, other_phases: Sequence[PhaseSource] = ()) -> BatchResult:
    """Classify several lesions one after the other; a lesion that fails is reported and skipped,
    `should_stop` is checked between lesions, and each result is handed to `on_result` as it comes."""
    predictions: list[LesionPrediction] = []
    errors: dict[str, str] = {}
    total = len(lesions)
    phase = phase if phase is not None or not lesions else series_phase(volume)
    for done, lesion in enumerate(lesions):
        if should_stop is not None and should_stop():
            return BatchResult(predictions, errors, cancelled=True)
        if progress is not None:
            progress(done, total, f"lesion {done + 1} of {total}")
        try:
            prediction = classify_lesion(loaded, volume, lesion, heatmap=heatmap, phase=phase, other_phases=other_phases)
        except ClassificationError as exc:
            errors[lesion.id] = str(exc)
            continue
        predictions.append(prediction)
        if on_result is not None:
            on_result(prediction)
    if progress is not None:
        progress(total, total, "done")
    return BatchResult(predictions, errors, cancelled=False)


__all__ = ["BatchResult", "ClassificationError", "DEFAULT_MODEL_NAME", "Heatmap", "LesionPrediction",
           "check_series", "classify_lesion", "classify_lesions", "compute_slice_heatmap", "default_model_path",
           "key_slice", "lesion_slice_masks", "loaded_domain", "model_id", "model_slab", "phase_slabs", "phases_read_by", "read_phases",
           "series_phase"]
