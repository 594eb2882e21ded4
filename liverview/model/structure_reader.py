"""The structure reader: a small network that reads the lesion's image in every contrast phase given.

The phase reader (`phase_reader`) combines seven medians per phase with the portal-venous CNN's answer.
What a radiologist also reads, and what a median cannot hold, is the lesion's structure in each phase:
a rim, a capsule, a mosaic, nodules, how sharp the margin is. This network looks at it:
- **Per phase:** the key slice and `NEIGHBOUR_SLICES` neighbours on each side (a network records how
  many it reads; on the outlined series' grid, as the dataset export and the app's
  `classify.phase_slabs` give them), cropped around the outline so that the lesion
  fills about two thirds of the crop with at least `CONTEXT_MM` of liver on every side, resampled to
  `CROP_PX` pixels, in HU minus that phase's liver ring median; the outline as the last channel; the
  phase's enhancement numbers. Not the CNN's answers: it does not depend on the CNN's weights.
- **Late fusion:** one encoder shared by the phases and a projection of its own per phase. A phase not
  read is left out of the encoder and is zeros with a presence flag of 0 at the head, never an image of
  zeros read as one. The lesion's long axis (log mm) goes to the head: what is drawn at 10 mm and at
  60 mm differs.
- **Training:** each lesion is shown with a random non-empty subset of its phases, flipped or turned,
  and with its outline grown or shrunk by a pixel (a reader's outline is not the simulator's).

Only the `model` layer touches torch; inputs are numpy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from liverview.annotations.dataset_format import MARGIN_XY_PX
from liverview.imaging.lesion_enhancement import FEATURES, measure_lesion_enhancement
from liverview.imaging.measure import mask_long_axis_mm
from liverview.progress import Progress, ShouldStop, check_stop

#: The crop's side in pixels, and the liver it keeps on every side of the outline at least.
CROP_PX = 40
#: Slices read on each side of the key slice unless a network is trained otherwise.
NEIGHBOUR_SLICES = 1
CONTEXT_MM = 5.0
#: HU differences from the liver are divided by this (and clipped at +-6 of it).
HU_SCALE = 50.0
#: Where `crop_phase` places its square; raised whenever that changes, so that a network trained on
#: other crops is refused. 1: centred as `transforms.CropSquareResize` centres the CNN's crop.
CROP_VERSION = 1


def crop_square(mask: np.ndarray, spacing_yx: Sequence[float]) -> tuple[float, float, float]:
    """(centre_y_px, centre_x_px, side_mm) of the square a phase is cropped to: centred on the outline's
    box, the lesion about two thirds of it, at least `CONTEXT_MM` of liver on every side."""
    ys, xs = np.nonzero(mask)
    sy, sx = float(spacing_yx[0]), float(spacing_yx[1])
    extent_mm = max((ys.max() - ys.min() + 1) * sy, (xs.max() - xs.min() + 1) * sx)
    half_mm = max(extent_mm / 2.0 + CONTEXT_MM, 0.75 * extent_mm)
    return (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0, 2.0 * half_mm


def crop_phase(slab: np.ndarray, mask: np.ndarray, spacing_yx: Sequence[float], liver_hu: float,
               margin_px: int = MARGIN_XY_PX, neighbour_slices: int = NEIGHBOUR_SLICES) -> np.ndarray:
    """(2 * neighbour_slices + 2, CROP_PX, CROP_PX) float32: the slab (2 * neighbour_slices + 1, y, x) -
    or one slice (y, x), repeated - minus `liver_hu` over `HU_SCALE`, and the outline `mask` (y, x) last,
    cropped around the outline and resampled.
    Only the outline's box plus `margin_px` is looked at, and beyond it the edge repeats: a dataset patch
    holds that much around the lesion, and the app resamples another phase that far (`phase_slabs`)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the outline covers no pixel of the slice")
    slab = np.asarray(slab)
    depth = 2 * neighbour_slices + 1
    if slab.ndim == 3 and slab.shape[0] != depth:
        raise ValueError(f"the network reads {depth} slices around the key slice; the slab holds {slab.shape[0]}")
    slices = [slab] * depth if slab.ndim == 2 else list(slab)
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, int(ys.min()) - margin_px), min(mask.shape[0], int(ys.max()) + 1 + margin_px)
    x0, x1 = max(0, int(xs.min()) - margin_px), min(mask.shape[1], int(xs.max()) + 1 + margin_px)
    sy, sx = float(spacing_yx[0]), float(spacing_yx[1])
    centre_y, centre_x, side_mm = crop_square(mask, spacing_yx)
    ay, ax = side_mm / sy / CROP_PX, side_mm / sx / CROP_PX
    # Output pixel i's centre lies at the square's edge plus (i + 0.5) output pixels, in source pixel
    # indices (whose centres are integers), as `transforms.CropSquareResize` and `classify.Heatmap` place it.
    to_source = np.array([[ax, 0.0, centre_x - x0 - side_mm / (2.0 * sx) + 0.5 * ax],
                          [0.0, ay, centre_y - y0 - side_mm / (2.0 * sy) + 0.5 * ay]])

    def warp(image: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(np.ascontiguousarray(image[y0:y1, x0:x1], dtype=np.float32), to_source,
                              (CROP_PX, CROP_PX), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    channels = [np.clip((warp(s) - liver_hu) / HU_SCALE, -6.0, 6.0) for s in slices]
    channels.append(warp(mask.astype(np.float32)))
    return np.stack(channels)


def scale_numbers(values: np.ndarray) -> np.ndarray:
    """The enhancement numbers (`lesion_enhancement.FEATURES`) on a common scale: absolute HU over 100,
    differences over `HU_SCALE`, the share as it is."""
    values = np.asarray(values, dtype=np.float64)
    scaled = values / HU_SCALE
    scaled[0:2] = values[0:2] / 100.0
    scaled[5] = values[5]
    return scaled.astype(np.float32)


@dataclass
class LesionInputs:
    """What the network reads of one lesion; phases in the reader's order, zeros where not read."""

    crops: np.ndarray  # (phases, slices + 1, CROP_PX, CROP_PX) float16
    numbers: np.ndarray  # (phases, numbers) float32
    present: np.ndarray  # (phases,) bool
    long_axis_mm: float


def lesion_inputs(slabs: Mapping[str, np.ndarray], mask: np.ndarray, spacing_yx: Sequence[float],
                  phases: Sequence[str], measured: Mapping[str, np.ndarray] | None = None,
                  neighbour_slices: int = NEIGHBOUR_SLICES) -> LesionInputs:
    """The network's inputs for a lesion outlined by `mask` on the key slice, read on the `slabs` (per
    phase, (2 * neighbour_slices + 1, y, x) around the key slice on its grid). `measured`: the phases'
    enhancement numbers on that key slice where the caller has them already (`measure_lesion_enhancement`)."""
    crops = np.zeros((len(phases), 2 * neighbour_slices + 2, CROP_PX, CROP_PX), dtype=np.float16)
    numbers = np.zeros((len(phases), len(FEATURES)), dtype=np.float32)
    present = np.zeros(len(phases), dtype=bool)
    for j, phase in enumerate(phases):
        if phase not in slabs:
            continue
        slab = np.asarray(slabs[phase])
        key = slab if slab.ndim == 2 else slab[slab.shape[0] // 2]
        values = measured[phase] if measured is not None else measure_lesion_enhancement(key, mask, spacing_yx)
        crops[j] = crop_phase(slab, mask, spacing_yx, float(values[1]), neighbour_slices=neighbour_slices)
        numbers[j] = scale_numbers(values)
        present[j] = True
    return LesionInputs(crops, numbers, present, mask_long_axis_mm(mask, (float(spacing_yx[0]), float(spacing_yx[1]))))


@dataclass
class InputArrays:
    """`LesionInputs` of many lesions, stacked."""

    crops: np.ndarray  # (n, phases, 4, S, S) float16
    numbers: np.ndarray  # (n, phases, k) float32
    present: np.ndarray  # (n, phases) bool
    long_axis_mm: np.ndarray  # (n,) float32

    @classmethod
    def stack(cls, lesions: Sequence[LesionInputs]) -> InputArrays:
        return cls(np.stack([x.crops for x in lesions]), np.stack([x.numbers for x in lesions]),
                   np.stack([x.present for x in lesions]),
                   np.array([x.long_axis_mm for x in lesions], dtype=np.float32))

    def tensors(self, rows: np.ndarray, present: np.ndarray, crops: np.ndarray | None = None):
        """(crops, numbers, present, log long axis) of `rows`, reading only the phases in `present`."""
        crops = self.crops[rows].astype(np.float32) if crops is None else crops
        return (torch.from_numpy(np.ascontiguousarray(crops)),
                torch.from_numpy(self.numbers[rows] * present[..., None]),
                torch.from_numpy(present),
                torch.from_numpy(np.log(np.maximum(self.long_axis_mm[rows], 1.0)).astype(np.float32)))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class StructureNet(nn.Module):
    """A shared encoder per phase, a projection per phase, and a head over the phases present."""

    def __init__(self, n_classes: int, n_numbers: int, n_phases: int, width: int = 16, embed: int = 32,
                 neighbour_slices: int = NEIGHBOUR_SLICES):
        super().__init__()
        #: What it was built with, to build it again from its state_dict.
        self.shape = {"n_numbers": n_numbers, "width": width, "embed": embed, "neighbour_slices": neighbour_slices}
        self.encoder = nn.Sequential(_block(2 * neighbour_slices + 2, width), nn.MaxPool2d(2), _block(width, 2 * width),
                                     nn.MaxPool2d(2), _block(2 * width, 4 * width))
        self.project = nn.ModuleList(nn.Linear(8 * width + n_numbers, embed) for _ in range(n_phases))
        self.head = nn.Sequential(nn.Linear(n_phases * (embed + 1) + 1, 128), nn.ReLU(inplace=True), nn.Dropout(0.2),
                                  nn.Linear(128, n_classes))

    @property
    def neighbour_slices(self) -> int:
        """Slices it reads on each side of the key slice."""
        return int(self.shape["neighbour_slices"])

    def encode(self, crops: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, maps): the flat (lesion * phases) index of each present phase, and its encoder maps."""
        b, p = present.shape
        rows = present.reshape(-1).nonzero().squeeze(1)
        return rows, self.encoder(crops.reshape(b * p, *crops.shape[2:])[rows])

    def embed(self, crops: torch.Tensor, numbers: torch.Tensor, present: torch.Tensor,
              encoded: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(b, phases, embed): each present phase's encoding (from `encoded`, `encode`'s answer, when
        given); zeros for a phase not present."""
        b, p = present.shape
        rows, maps = encoded if encoded is not None else self.encode(crops, present)
        pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3)), numbers.reshape(b * p, -1)[rows]], dim=1)
        phase_of = rows % p
        embedded = torch.zeros(b * p, self.project[0].out_features, dtype=pooled.dtype)
        for j, project in enumerate(self.project):
            chosen = (phase_of == j).nonzero().squeeze(1)
            if len(chosen):
                embedded[rows[chosen]] = torch.relu(project(pooled[chosen]))
        return embedded.reshape(b, p, -1)

    def classify(self, embedded: torch.Tensor, present: torch.Tensor, log_axis: torch.Tensor) -> torch.Tensor:
        """Logits from the embeddings of the `present` phases only."""
        b = present.shape[0]
        kept = embedded * present[..., None].to(embedded.dtype)
        return self.head(torch.cat([kept.reshape(b, -1), present.float(), log_axis[:, None]], dim=1))

    def forward(self, crops: torch.Tensor, numbers: torch.Tensor, present: torch.Tensor,
                log_axis: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(crops, numbers, present), present, log_axis)


def gradcam_phases(net: StructureNet, lesion: LesionInputs, phases: Sequence[str], subset: Sequence[str],
                   class_index: int) -> dict[str, np.ndarray]:
    """Per phase of `subset` the lesion was read on: Grad-CAM of `class_index` over that phase's crop
    (CROP_PX square, 0..1, as `crop_square` places it), the network reading `subset` as it answers.
    Each phase's map is scaled by the largest over all of them, so a phase it hardly used stays dim."""
    net.eval()
    arrays = InputArrays.stack([lesion])
    present = arrays.present & np.array([p in subset for p in phases])[None]
    crops, numbers, held, log_axis = arrays.tensors(np.array([0]), present)
    with torch.enable_grad():
        rows, maps = net.encode(crops, held)
        logits = net.classify(net.embed(crops, numbers, held, (rows, maps)), held, log_axis)
        gradients = torch.autograd.grad(logits[0, class_index], maps)[0]
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * maps).sum(dim=1)).detach().numpy().astype(np.float32)
    out = {phases[row]: cv2.resize(cam, (CROP_PX, CROP_PX), interpolation=cv2.INTER_LINEAR)
           for row, cam in zip(rows.tolist(), cams)}
    top = max(float(cam.max()) for cam in out.values())
    return {phase: cam / top for phase, cam in out.items()} if top > 0 else out


def crop_display(lesion: LesionInputs, phase_index: int, window_hu: float = 170.0) -> np.ndarray:
    """uint8 (CROP_PX, CROP_PX): the key slice of a phase's crop as the network read it, in a window of
    `window_hu` centred on that phase's liver (the viewer's liver window is 170 HU wide)."""
    key = (lesion.crops.shape[1] - 1) // 2
    hu = lesion.crops[phase_index, key].astype(np.float32) * HU_SCALE
    return (np.clip(hu / window_hu + 0.5, 0.0, 1.0) * 255.0).astype(np.uint8)


def _augment(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip / quarter-turn the batch alike, and grow or shrink each lesion's outline by a pixel."""
    out = np.rot90(crops, k=int(rng.integers(4)), axes=(-2, -1))
    if rng.random() < 0.5:
        out = out[..., ::-1]
    out = np.ascontiguousarray(out).astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    for i in range(out.shape[0]):
        change = int(rng.integers(3))
        if change:
            morph = cv2.dilate if change == 1 else cv2.erode
            out[i, :, -1] = np.stack([morph(m, kernel) for m in out[i, :, -1]])
    return out


def _random_subsets(present: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random non-empty subset of each row's phases (each subset alike likely)."""
    chosen = np.zeros_like(present)
    for i, held in enumerate(present):
        if not held.any():
            continue
        while not chosen[i].any():
            chosen[i] = held & (rng.random(len(held)) < 0.5)
    return chosen


def train_network(inputs: InputArrays, labels: np.ndarray, rows: np.ndarray, n_classes: int, *, epochs: int,
                  seed: int = 1, batch: int = 64, lr: float = 2e-3,
                  progress: Progress | None = None, should_stop: ShouldStop | None = None) -> StructureNet:
    """A `StructureNet` trained on `rows` of `inputs` (cross-entropy, AdamW, one-cycle schedule, a fixed
    number of epochs: nothing is chosen on the test lesions). `progress` after each epoch with the mean
    loss; `should_stop()` is asked between batches (`progress.Cancelled`)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = StructureNet(n_classes, inputs.numbers.shape[2], inputs.present.shape[1],
                       neighbour_slices=(inputs.crops.shape[2] - 2) // 2)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(rows) / batch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(rows)
        total = 0.0
        for start in range(0, len(order), batch):
            check_stop(should_stop, "training the structure reader")
            chosen = order[start:start + batch]
            present = _random_subsets(inputs.present[chosen], rng)
            logits = net(*inputs.tensors(chosen, present, _augment(inputs.crops[chosen], rng)))
            loss = loss_fn(logits, torch.from_numpy(labels[chosen]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(chosen)
        if progress is not None:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1} of {epochs}: loss {total / len(rows):.4f}")
    net.eval()
    return net


@torch.no_grad()
def predict_subsets(net: StructureNet, inputs: InputArrays, rows: np.ndarray, phases: Sequence[str],
                    subsets: Sequence[Sequence[str]], batch: int = 256) -> dict[tuple[str, ...], np.ndarray]:
    """Per subset of `phases`: the class probabilities of `rows` read on that subset (a lesion lacking one
    of its phases reads the rest), averaged over the eight flips and turns. Each phase is encoded once
    per flip; only the head sees the subset."""
    net.eval()
    wanted = {tuple(s): np.array([p in s for p in phases]) for s in subsets}
    parts: dict[tuple[str, ...], list[np.ndarray]] = {s: [] for s in wanted}
    for start in range(0, len(rows), batch):
        chosen = rows[start:start + batch]
        held = inputs.present[chosen]
        base = inputs.crops[chosen].astype(np.float32)
        totals: dict[tuple[str, ...], np.ndarray] = {s: np.zeros((len(chosen), net.head[-1].out_features))
                                                     for s in wanted}
        for k in range(4):
            for flip in (False, True):
                turned = np.rot90(base, k=k, axes=(-2, -1))
                crops, numbers, present, log_axis = inputs.tensors(chosen, held, turned[..., ::-1] if flip else turned)
                embedded = net.embed(crops, numbers, present)
                for subset, mask in wanted.items():
                    logits = net.classify(embedded, present & torch.from_numpy(mask), log_axis)
                    totals[subset] += torch.softmax(logits, dim=1).numpy()
        for subset in wanted:
            parts[subset].append(totals[subset] / 8.0)
    return {subset: np.concatenate(p) for subset, p in parts.items()}


__all__ = ["CONTEXT_MM", "CROP_PX", "CROP_VERSION", "HU_SCALE", "NEIGHBOUR_SLICES", "InputArrays", "LesionInputs",
           "StructureNet", "crop_display",
           "crop_phase", "crop_square", "gradcam_phases", "lesion_inputs", "predict_subsets", "scale_numbers", "train_network"]
