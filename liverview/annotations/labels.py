"""The controlled lesion label list: built-in classes with SNOMED CT codes, plus user-added labels.

Codes come from the DICOM content mapping resource (PS3.16, as shipped in pydicom's code
dictionary) or SNOMED CT itself; a label without a known code carries none rather than a guess.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path


@dataclass(frozen=True)
class CodedConcept:
    """(code value, coding scheme designator, code meaning), as in DICOM's Code Sequence Macro."""

    value: str
    scheme: str
    meaning: str


#: (SCT 49755003) Segmented Property Category for every lesion; anatomic region of the lesions.
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure")
LIVER = CodedConcept("10200004", "SCT", "Liver")


class LesionClass(StrEnum):
    """The four classes the bundled model knows; their values are the label identifiers."""

    BENIGN_CYST = "benign_cyst"
    HEMANGIOMA = "hemangioma"
    HCC = "hcc"
    METASTASIS = "metastasis"


class Confidence(StrEnum):
    CERTAIN = "certain"
    PROBABLE = "probable"
    POSSIBLE = "possible"


@dataclass(frozen=True)
class LabelDef:
    """One entry of the label list: identifier, display name, colour (RGB), code, keyboard shortcut."""

    id: str
    name: str
    color: tuple[int, int, int]
    code: CodedConcept | None = None
    shortcut: str = ""
    builtin: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["color"] = list(self.color)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LabelDef:
        code = data.get("code")
        return cls(id=str(data["id"]), name=str(data.get("name") or data["id"]),
                   color=tuple(int(c) for c in data.get("color", (200, 200, 200)))[:3],  # type: ignore[arg-type]
                   code=CodedConcept(**code) if code else None, shortcut=str(data.get("shortcut", "")),
                   builtin=bool(data.get("builtin", False)))


BUILTIN_LABELS: tuple[LabelDef, ...] = (
    LabelDef(LesionClass.BENIGN_CYST.value, "Benign cyst", (80, 170, 255),
             CodedConcept("367643001", "SCT", "Cyst"), "Ctrl+1", True),
    LabelDef(LesionClass.HEMANGIOMA.value, "Hemangioma", (90, 220, 120),
             CodedConcept("400210000", "SCT", "Hemangioma"), "Ctrl+2", True),
    LabelDef(LesionClass.HCC.value, "Hepatocellular carcinoma (HCC)", (255, 170, 40),
             CodedConcept("25370001", "SCT", "Hepatocellular carcinoma"), "Ctrl+3", True),
    LabelDef(LesionClass.METASTASIS.value, "Metastasis", (240, 70, 90),
             CodedConcept("14799000", "SCT", "Neoplasm, metastatic"), "Ctrl+4", True),
)

#: Suggested additions a site can enable with one click; codes only where PS3.16 gives one.
SUGGESTED_LABELS: tuple[LabelDef, ...] = (
    LabelDef("abscess", "Abscess", (200, 120, 255), CodedConcept("44132006", "SCT", "Abscess")),
    LabelDef("fnh", "Focal nodular hyperplasia (FNH)", (120, 230, 230)),
    LabelDef("other", "Other lesion", (190, 190, 190), CodedConcept("52988006", "SCT", "Lesion")),
)

_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass
class LabelTaxonomy:
    """Built-in labels followed by the site's own, in a stable order (the order of the shortcuts)."""

    labels: list[LabelDef] = field(default_factory=lambda: list(BUILTIN_LABELS))

    def __iter__(self):
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def ids(self) -> list[str]:
        return [label.id for label in self.labels]

    def get(self, label_id: str) -> LabelDef:
        for label in self.labels:
            if label.id == label_id:
                return label
        raise KeyError(f"unknown label {label_id!r}")

    def name_of(self, label_id: str | None, missing: str | None = None) -> str:
        """The label's display name; `missing` (default: the id itself) for an id this taxonomy lacks."""
        for label in self.labels:
            if label.id == label_id:
                return label.name
        return missing if missing is not None else str(label_id)

    def __contains__(self, label_id: object) -> bool:
        return any(label.id == label_id for label in self.labels)

    def add(self, label: LabelDef) -> LabelDef:
        """Add a user label; identifiers are lower-case snake case and unique."""
        if not _ID_PATTERN.match(label.id):
            raise ValueError(f"label id {label.id!r} must be lower-case letters, digits and '_' (max 40)")
        if label.id in self:
            raise ValueError(f"label {label.id!r} already exists")
        shortcut = label.shortcut or (f"Ctrl+{len(self.labels) + 1}" if len(self.labels) < 9 else "")
        added = LabelDef(label.id, label.name, label.color, label.code, shortcut, False)
        self.labels.append(added)
        return added

    def user_labels(self) -> list[LabelDef]:
        return [label for label in self.labels if not label.builtin]

    def save(self, path: Path) -> None:
        from liverview.atomic_write import write_json_atomic

        write_json_atomic(path, {"labels": [label.to_dict() for label in self.user_labels()]})

    @classmethod
    def load(cls, path: Path) -> LabelTaxonomy:
        """Built-ins plus the user labels saved at `path` (missing file: built-ins only)."""
        taxonomy = cls()
        if path.exists():
            for data in json.loads(path.read_text(encoding="utf-8")).get("labels", []):
                label = LabelDef.from_dict(data)
                if label.id not in taxonomy:
                    taxonomy.add(label)
        return taxonomy
