"""The annotation document: lesions made of per-slice ROIs, readers, AI results, adjudications.

Serialised as liverview's versioned JSON format (``"format": "liverview.annotations"``); see
docs/annotation-format.md. ROI points are pixel coordinates (x = column, y = row) on the slice
`slice_index` of the series sorted along its normal, with the slice's SOP Instance UID.
"""
from __future__ import annotations

import copy
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from liverview.annotations.labels import LabelDef
from liverview.annotations.storage import now_iso

FORMAT = "liverview.annotations"
VERSION = 1
#: Outline points are pixel coordinates to 1/100 pixel, in memory as in the file.
POINT_DECIMALS = 2
ROI_KINDS = ("polygon", "rectangle", "ellipse", "freehand", "brush", "auto", "propagated", "seg")


class AnnotationFormatError(ValueError):
    """The file is not a liverview annotation file we can read; the message says why."""


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Roi:
    """One outline on one slice. Points are kept at the file's precision (`POINT_DECIMALS`) from the
    moment they are set, so the outline in memory is the outline on disk: measurements, masks and
    exports made before and after a save, undo or reload agree to the voxel. `points_xy` is replaced,
    never changed in place: its file form is cached until it is replaced, because every undo step and
    every autosave serialises the whole document (thousands of brush points per ROI)."""

    slice_index: int
    points_xy: list[tuple[float, float]]
    kind: str = "polygon"
    sop_instance_uid: str = ""
    id: str = field(default_factory=lambda: new_id("r"))
    _points_file: list[list[float]] | None = field(default=None, init=False, repr=False, compare=False)
    _points_digest: str | None = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "points_xy":
            value = [(round(float(x), POINT_DECIMALS), round(float(y), POINT_DECIMALS)) for x, y in value]
            object.__setattr__(self, "_points_file", None)
            object.__setattr__(self, "_points_digest", None)
        object.__setattr__(self, name, value)

    def points_digest(self) -> str:
        """A digest of the points, kept until they are replaced (the lesion table and the Model panel
        ask for it on every refresh, and brush outlines hold thousands of points)."""
        if self._points_digest is None:
            self._points_digest = hashlib.sha1(repr(self.points_xy).encode()).hexdigest()
        return self._points_digest

    def to_dict(self) -> dict[str, Any]:
        """The file form; its point lists are shared with the cache, so callers must not modify them."""
        if self._points_file is None:
            self._points_file = [[x, y] for x, y in self.points_xy]
        return {"id": self.id, "slice_index": self.slice_index, "sop_instance_uid": self.sop_instance_uid,
                "kind": self.kind, "points_xy": self._points_file}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Roi:
        points = [(float(p[0]), float(p[1])) for p in data["points_xy"]]
        if len(points) < 3:
            raise AnnotationFormatError(f"ROI {data.get('id', '?')} has {len(points)} point(s); an outline needs 3")
        return cls(slice_index=int(data["slice_index"]), points_xy=points, kind=str(data.get("kind", "polygon")),
                   sop_instance_uid=str(data.get("sop_instance_uid", "")), id=str(data.get("id") or new_id("r")))


#: A suggestion needs its class ahead of the next one by this much: within 5 percentage points (a
#: four-way 25 % tie, two classes at 48 and 46 %) the model has not chosen between them.
MIN_LEAD = 0.05


@dataclass
class AIResult:
    """The model's opinion on a lesion, kept with it and exported with it."""

    model_id: str
    probabilities: dict[str, float]
    predicted: str
    time: str
    accepted_by: str | None = None
    #: "low", "moderate" or "high" (normalised entropy and test-time-augmentation spread).
    uncertainty: str | None = None
    entropy: float | None = None
    #: The slice the model looked at (the lesion's largest outline).
    slice_index: int | None = None
    #: The contrast phases of the series the model read.
    phases_read: list[str] = field(default_factory=list)
    #: Why the input was outside the model's training data ([] inside); then `uncertainty` says so.
    outside_training: list[str] = field(default_factory=list)
    #: Share of the Grad-CAM heatmap's mass within 5 mm of the outline (None: no heatmap was made).
    heatmap_inside: float | None = None
    #: `Lesion.outline_key()` of the outlines the answer was computed on; when the outlines change the
    #: answer is outdated. None in files written before liverview stamped its answers.
    outline: str | None = None

    @property
    def probability(self) -> float:
        return self.probabilities[self.predicted]

    @property
    def lead(self) -> float:
        """How far the predicted class is ahead of the next one (0 for a tie)."""
        return self.probability - max((p for c, p in self.probabilities.items() if c != self.predicted), default=0.0)

    def refusal(self) -> str | None:
        """Why this answer is no suggestion a reader could take as the label, or None when it is one."""
        if self.outside_training:
            return "the model's answer lies outside its training data: label this lesion yourself"
        if self.lead < MIN_LEAD:
            return (f"no class leads the model's answer ({self.probability:.0%} against {self.probability - self.lead:.0%}"
                    " for the next): label this lesion yourself")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "probabilities": dict(self.probabilities), "phases_read": list(self.phases_read),
                "outside_training": list(self.outside_training)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AIResult:
        entropy, slice_index = data.get("entropy"), data.get("slice_index")
        return cls(model_id=str(data["model_id"]), probabilities={str(k): float(v) for k, v in data["probabilities"].items()},
                   predicted=str(data["predicted"]), time=str(data["time"]), accepted_by=data.get("accepted_by"),
                   uncertainty=data.get("uncertainty"), entropy=None if entropy is None else float(entropy),
                   slice_index=None if slice_index is None else int(slice_index),
                   phases_read=[str(p) for p in data.get("phases_read", [])],
                   outside_training=[str(r) for r in data.get("outside_training", [])],
                   heatmap_inside=None if data.get("heatmap_inside") is None else float(data["heatmap_inside"]),
                   outline=data.get("outline"))


@dataclass
class ConsensusOrigin:
    """Where an exported consensus lesion came from: the readers whose lesions were matched into one
    finding, the outline used, and who decided the final label (None: the readers agreed)."""

    readers: list[str]
    lesion_ids: list[str]
    #: The lesion whose outline stands for the group.
    outline_of: str
    decided_by: str | None = None
    time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"readers": list(self.readers), "lesion_ids": list(self.lesion_ids), "outline_of": self.outline_of,
                "decided_by": self.decided_by, "time": self.time}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsensusOrigin:
        return cls(readers=[str(r) for r in data["readers"]], lesion_ids=[str(i) for i in data["lesion_ids"]],
                   outline_of=str(data["outline_of"]), decided_by=data.get("decided_by"), time=data.get("time"))


@dataclass
class Lesion:
    """A lesion as one reader sees it: a label and outlines on one or more neighbouring slices."""

    reader: str
    label: str | None = None
    confidence: str = "probable"
    note: str = ""
    rois: list[Roi] = field(default_factory=list)
    id: str = field(default_factory=lambda: new_id("L"))
    created: str = field(default_factory=now_iso)
    modified: str = field(default_factory=now_iso)
    #: "reader", or "ai-accepted" when the reader took the model's suggestion.
    label_source: str = "reader"
    ai: AIResult | None = None
    #: Simulator parameters for synthetic ground truth (class, seed, ...), else None.
    synth: dict[str, Any] | None = None
    #: Set on the lesions of a consensus export only (`export_selection`): the finding it stands for.
    consensus: ConsensusOrigin | None = None

    def snapshot(self) -> Lesion:
        """A copy another thread can read while the GUI goes on editing this lesion. The ROIs are
        copied; their point lists are shared, which is safe because they are replaced, never changed
        in place - and a deep copy of every outline cost the GUI ~80 ms for a 20-lesion batch."""
        clone = copy.copy(self)
        clone.rois = [copy.copy(roi) for roi in self.rois]
        clone.synth = copy.deepcopy(self.synth)
        return clone

    def slices(self) -> list[int]:
        return sorted({roi.slice_index for roi in self.rois})

    def outline_key(self) -> str:
        """Changes whenever the outlines change, the same in every process: what is derived from the
        outlines alone (measurements, heatmaps, model answers) is stamped or cached under it."""
        digest = hashlib.sha1()
        for roi in sorted(self.rois, key=lambda r: (r.slice_index, r.id)):
            digest.update(f"{roi.slice_index}:{roi.points_digest()};".encode())
        return digest.hexdigest()[:16]

    def current_ai(self) -> AIResult | None:
        """The model's answer if it was computed on the outlines as they are now, else None."""
        if self.ai is None or (self.ai.outline is not None and self.ai.outline != self.outline_key()):
            return None
        return self.ai

    def rois_on(self, slice_index: int) -> list[Roi]:
        return [roi for roi in self.rois if roi.slice_index == slice_index]

    def roi(self, roi_id: str) -> Roi:
        for roi in self.rois:
            if roi.id == roi_id:
                return roi
        raise KeyError(roi_id)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "label": self.label, "reader": self.reader, "confidence": self.confidence,
            "note": self.note, "label_source": self.label_source, "created": self.created,
            "modified": self.modified, "rois": [roi.to_dict() for roi in self.rois],
        }
        if self.ai is not None:
            data["ai"] = self.ai.to_dict()
        if self.synth is not None:
            data["synth"] = self.synth
        if self.consensus is not None:
            data["consensus"] = self.consensus.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lesion:
        return cls(
            reader=str(data.get("reader") or "unknown"), label=data.get("label"),
            confidence=str(data.get("confidence", "probable")), note=str(data.get("note", "")),
            rois=[Roi.from_dict(r) for r in data.get("rois", [])], id=str(data.get("id") or new_id("L")),
            created=str(data.get("created", now_iso())), modified=str(data.get("modified", now_iso())),
            label_source=str(data.get("label_source", "reader")),
            ai=AIResult.from_dict(data["ai"]) if data.get("ai") else None, synth=data.get("synth"),
            consensus=ConsensusOrigin.from_dict(data["consensus"]) if data.get("consensus") else None,
        )


@dataclass
class Adjudication:
    """The final label of a lesion that several readers outlined, and who decided it."""

    lesion_ids: list[str]
    final_label: str
    decided_by: str
    time: str = field(default_factory=now_iso)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Adjudication:
        return cls(lesion_ids=[str(i) for i in data["lesion_ids"]], final_label=str(data["final_label"]),
                   decided_by=str(data["decided_by"]), time=str(data.get("time", now_iso())), note=str(data.get("note", "")))


@dataclass
class PhaseCorrection:
    """A reader's contrast phase for the series, replacing what liverview told from its images/text."""

    #: One of non_contrast, arterial, portal_venous, delayed.
    phase: str
    reader: str
    #: What liverview had decided before ("unknown" when nothing).
    detected: str = "unknown"
    time: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseCorrection:
        return cls(phase=str(data["phase"]), reader=str(data["reader"]), detected=str(data.get("detected", "unknown")),
                   time=str(data.get("time", now_iso())))


@dataclass
class AnnotationDocument:
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str = ""
    lesions: list[Lesion] = field(default_factory=list)
    labels: list[LabelDef] = field(default_factory=list)
    adjudications: list[Adjudication] = field(default_factory=list)
    #: The series' contrast phase as a reader set it; None keeps liverview's own decision.
    contrast_phase: PhaseCorrection | None = None
    source: str = "liverview"
    created: str = field(default_factory=now_iso)
    modified: str = field(default_factory=now_iso)

    def lesion(self, lesion_id: str) -> Lesion:
        for lesion in self.lesions:
            if lesion.id == lesion_id:
                return lesion
        raise KeyError(lesion_id)

    def readers(self) -> list[str]:
        return sorted({lesion.reader for lesion in self.lesions})

    def lesion_numbers(self) -> dict[str, str]:
        """What readers call each lesion of the series: L1, L2, … in the order they were made (the ids
        stay the lesions' names in files and exports)."""
        return {lesion.id: f"L{number}" for number, lesion in enumerate(self.lesions, start=1)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION,
            "study_instance_uid": self.study_instance_uid, "series_instance_uid": self.series_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid, "source": self.source,
            "created": self.created, "modified": self.modified,
            "labels": [label.to_dict() for label in self.labels],
            "lesions": [lesion.to_dict() for lesion in self.lesions],
            "adjudications": [a.to_dict() for a in self.adjudications],
            **({"contrast_phase": self.contrast_phase.to_dict()} if self.contrast_phase is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> AnnotationDocument:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise AnnotationFormatError("not a liverview annotation file (no \"format\": \"liverview.annotations\")")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise AnnotationFormatError(f"annotation format version {version!r} is newer than this liverview "
                                        f"understands ({VERSION}); update liverview")
        try:
            return cls(
                study_instance_uid=str(data["study_instance_uid"]), series_instance_uid=str(data["series_instance_uid"]),
                frame_of_reference_uid=str(data.get("frame_of_reference_uid", "")),
                lesions=[Lesion.from_dict(item) for item in data.get("lesions", [])],
                labels=[LabelDef.from_dict(item) for item in data.get("labels", [])],
                adjudications=[Adjudication.from_dict(item) for item in data.get("adjudications", [])],
                contrast_phase=PhaseCorrection.from_dict(data["contrast_phase"]) if data.get("contrast_phase") else None,
                source=str(data.get("source", "")), created=str(data.get("created", now_iso())),
                modified=str(data.get("modified", now_iso())),
            )
        except AnnotationFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise AnnotationFormatError(f"annotation file is damaged: {type(exc).__name__}: {exc}") from exc
