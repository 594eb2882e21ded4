"""Training datasets on disk (the app's export format) and the torch Dataset over them.

A dataset folder holds ``dataset.json``, ``lesions.jsonl`` (one JSON object per lesion) and
``patches/<lesion_uid>.npz`` (hu int16 (z, y, x), mask bool, spacing_mm (z, y, x), bbox_zyx);
`liverview.annotations.export_dataset` writes it and documents every field. Training accepts one or
several folders; lesions are identified by ``lesion_uid`` across all of them.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from liverview.annotations.dataset_format import DatasetFormatError, iter_lesion_lines, read_manifest, read_patch
from liverview.annotations.labels import LesionClass
from liverview.model.transforms import LesionPreprocess, select_key_slice, select_slab, stack_phases

log = logging.getLogger(__name__)

#: The classes of the bundled model, in output order: the label taxonomy's built-in ids.
DEFAULT_CLASSES: tuple[str, ...] = tuple(c.value for c in LesionClass)


#: A dataset folder cannot be used; the message names the file and what to do (the format's own error).
DatasetError = DatasetFormatError


@dataclass(frozen=True)
class LesionRecord:
    """One labelled lesion of a dataset folder (a line of lesions.jsonl)."""

    uid: str
    label: str
    patch_path: Path
    patient: str | None = None
    series_uid: str | None = None
    reader: str | None = None
    dataset: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    #: Slices the export kept on each side of the lesion (the manifest's patch.margin_z_slices; exports
    #: written before it was recorded kept 1): a model may read at most that many neighbours.
    margin_z_slices: int = 1
    #: From a dataset given for training only (e.g. simulated lesions added to a clinic's own cases):
    #: the split puts it in the training subset, so validation and test stay on the other datasets.
    training_only: bool = False

    @property
    def simulated(self) -> bool:
        """Drawn by liverview's simulator: its label is the simulator's, not a reader's."""
        return str(self.extra.get("label_source", "")) in ("simulator", "synth", "simulated") or "synth" in self.extra

    @property
    def group(self) -> str:
        """The split unit: the patient pseudonym, else the series, else the lesion itself."""
        return (f"patient:{self.patient}" if self.patient else
                f"series:{self.series_uid}" if self.series_uid else f"lesion:{self.uid}")


@dataclass
class SkippedLesion:
    uid: str
    reason: str


@dataclass
class LoadedRecords:
    """Usable records plus every line that was left out, with the reason (never a silent skip)."""

    records: list[LesionRecord]
    skipped: list[SkippedLesion]
    datasets: list[dict[str, Any]]

    def class_counts(self, classes: Sequence[str]) -> dict[str, int]:
        return {c: sum(r.label == c for r in self.records) for c in classes}


def load_records(folders: Sequence[str | Path], classes: Sequence[str] = DEFAULT_CLASSES,
                 training_only: Sequence[str | Path] = ()) -> LoadedRecords:
    """Read the lesion lines of every folder, then of the `training_only` folders (their records are
    marked `training_only`). Lines without a label, with a label outside `classes`, whose patch is
    missing, or whose uid was already seen are skipped and listed."""
    records: list[LesionRecord] = []
    skipped: list[SkippedLesion] = []
    datasets: list[dict[str, Any]] = []
    seen: set[str] = set()
    wanted = set(classes)
    sources = [(Path(f), False) for f in folders] + [(Path(f), True) for f in training_only]
    for folder, only_training in sources:
        manifest = read_manifest(folder)
        margin_z = int((manifest.get("patch") or {}).get("margin_z_slices", 1))
        lines_path = folder / manifest.get("lesions", "lesions.jsonl")
        if not lines_path.is_file():
            raise DatasetError(f"{folder} has no {lines_path.name}; the export did not finish")
        count = 0
        for number, data in iter_lesion_lines(lines_path):
            uid = str(data.get("lesion_uid", f"{folder.name}:{number}"))
            label = data.get("label")
            patch = folder / str(data.get("file", f"patches/{uid}.npz"))
            reason = None
            if label is None:
                reason = "no label"
            elif label not in wanted:
                reason = f"label {label!r} is not one of the model's classes"
            elif uid in seen:
                reason = "duplicate lesion_uid (the same lesion was already read)"
            elif not patch.is_file():
                reason = f"patch file {patch} is missing"
            if reason:
                skipped.append(SkippedLesion(uid, f"{lines_path}:{number}: {reason}"))
                continue
            seen.add(uid)
            records.append(LesionRecord(uid=uid, label=str(label), patch_path=patch, patient=data.get("patient"),
                                        series_uid=data.get("series_uid"), reader=data.get("reader"),
                                        dataset=str(folder), extra=data, margin_z_slices=margin_z,
                                        training_only=only_training))
            count += 1
        datasets.append({"path": str(folder.resolve()), "n_used": count,
                         "description": manifest.get("description", ""), "created": manifest.get("created"),
                         **({"role": "training only"} if only_training else {})})
    for item in skipped:
        log.warning("skipped lesion %s: %s", item.uid, item.reason)
    if not records:
        raise DatasetError(f"no usable labelled lesions in {', '.join(str(f) for f, _ in sources)}")
    return LoadedRecords(records, skipped, datasets)


@dataclass
class KeySlice:
    """The slice of a patch the model sees: HU int16 (y, x) - or the (2n + 1, y, x) slab around it when
    the model takes n neighbour slices -, mask bool (y, x) of the key slice, pixel spacing (row, col) mm."""

    hu: np.ndarray
    mask: np.ndarray
    spacing_yx: tuple[float, float]
    z: int
    #: For a multiphase model: the slab of every phase the patch holds that the model reads.
    phases: dict[str, np.ndarray] = field(default_factory=dict)


def load_key_slice(record: LesionRecord, neighbour_slices: int = 0, phases: Sequence[str] = ()) -> KeySlice:
    """Read the patch of `record` and keep its key slice (largest ROI area) and `neighbour_slices`
    slices on each side (`select_slab`). A dataset exported with fewer slices around each lesion than
    that is refused: its slab would repeat the patch's end slice where the app reads the real one."""
    if neighbour_slices > record.margin_z_slices:
        raise DatasetError(f"{record.dataset} keeps {record.margin_z_slices} slice(s) around each lesion but the "
                           f"model reads {neighbour_slices} on each side: export or simulate the dataset again "
                           f"with this liverview")
    patch = read_patch(record.patch_path)
    z = select_key_slice(patch.mask)
    held = {p: np.ascontiguousarray(select_slab(patch.hu_of(p), z, neighbour_slices))
            for p in phases if p in patch.phase_names}
    return KeySlice(np.ascontiguousarray(select_slab(patch.hu, z, neighbour_slices)), np.ascontiguousarray(patch.mask[z]),
                    (float(patch.spacing_mm[-2]), float(patch.spacing_mm[-1])), z, held)


class LesionDataset(Dataset):
    """(tensor (C, H, W), class index) per record. Key slices (slabs) are read once and kept in memory
    (a few kB each). Evaluation mode goes through `LesionPreprocess.__call__` with ``train=False`` - exactly
    what `prepare_lesion_input` does for the app; training mode adds the random augmentation, drawn
    from a generator seeded by (seed, epoch, index) so runs and resumed runs repeat exactly, whatever
    the number of worker processes or ranks.

    A multiphase preprocessing reads every phase each patch holds; `phase_dropout` (training) leaves
    each out with that probability, keeping at least one, so the network learns any subset;
    `read_phases` (evaluation; may be changed between passes) reads only those phases, to measure a
    subset; `holding(phases)` lists the lesions that hold any of them."""

    def __init__(self, records: Sequence[LesionRecord], classes: Sequence[str], preprocess: LesionPreprocess,
                 train: bool = False, seed: int = 0, phase_dropout: float = 0.0,
                 read_phases: Sequence[str] | None = None) -> None:
        self.records = list(records)
        self.classes = list(classes)
        self.preprocess = preprocess
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        self.labels = np.array([self.classes.index(r.label) for r in self.records], dtype=np.int64)
        self.phase_dropout = float(phase_dropout)
        self.read_phases = None if read_phases is None else tuple(read_phases)
        phases = preprocess.config.phases
        self.slices = [load_key_slice(r, preprocess.config.neighbour_slices, phases) for r in self.records]
        if phases:
            missing = [r.uid for r, s in zip(self.records, self.slices) if not s.phases]
            if missing:
                raise DatasetError(f"{len(missing)} lesion(s) hold none of the phases {list(phases)} (e.g. {missing[0]})")

    def holding(self, phases: Sequence[str]) -> list[int]:
        """Indices of the lesions whose patch holds at least one of `phases`."""
        return [i for i, item in enumerate(self.slices) if set(phases) & set(item.phases)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        item = self.slices[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        if not self.preprocess.config.phases:
            tensor = self.preprocess(item.hu, item.mask, item.spacing_yx, train=self.train, rng=rng)
            return tensor, int(self.labels[index])
        slabs = {p: slab for p, slab in item.phases.items() if self.read_phases is None or p in self.read_phases}
        if self.train and self.phase_dropout > 0 and len(slabs) > 1:
            keep = [p for p in slabs if rng.random() >= self.phase_dropout] or [list(slabs)[int(rng.integers(len(slabs)))]]
            slabs = {p: slabs[p] for p in keep}
        stacked, present = stack_phases(self.preprocess.config, slabs)
        tensor = self.preprocess(stacked, item.mask, item.spacing_yx, train=self.train, rng=rng, present=present)
        return tensor, int(self.labels[index])


__all__ = ["DEFAULT_CLASSES", "DatasetError", "KeySlice", "LesionDataset", "LesionRecord", "LoadedRecords",
           "SkippedLesion", "load_key_slice", "load_records"]
