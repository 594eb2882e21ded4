"""Which lesions leave the app: the readers' consensus, one reader's lesions, or every reader's.

Several readers outline the same series independently and an adjudicator decides the final label of
the findings they disagree on (`consensus`). Every export (SEG, SR, NIfTI, CSV, training dataset) goes
through `select_for_export`, so what leaves the app is what the readers decided, not a heap of
conflicting opinions:

* CONSENSUS: one lesion per finding (lesions of different readers matched by 3-D overlap). Its label
  is the adjudicated one, else the label every reader of the finding gave; a finding the readers
  disagree on and nobody adjudicated keeps no label (and so stays out of a training dataset). Its
  outline is that of the group's most representative reader (highest mean Dice with the others; on
  a tie the adjudicator's own, then the first reader alphabetically) — a real reader's outline, never
  a synthetic blend. `Lesion.consensus` records the readers, the lesions and who decided.
* READER: that reader's lesions as they drew and labelled them.
* ALL_READERS: every reader's lesions, each naming its reader.
"""
from __future__ import annotations

import copy
import enum
from dataclasses import dataclass

from liverview.annotations.consensus import ConsensusSummary, LesionGroup, summarize_consensus
from liverview.annotations.document import AnnotationDocument, ConsensusOrigin, Lesion
from liverview.annotations.labels import LabelTaxonomy
from liverview.io.volume import Volume


class ReaderScope(str, enum.Enum):
    CONSENSUS = "consensus"
    READER = "reader"
    ALL_READERS = "all"


@dataclass(frozen=True)
class ExportReaders:
    """The readers' choice of an export; `reader` names the reader for `ReaderScope.READER`."""

    scope: ReaderScope
    reader: str | None = None

    def describe(self) -> str:
        if self.scope is ReaderScope.CONSENSUS:
            return "consensus of the readers"
        if self.scope is ReaderScope.READER:
            return f"reader {self.reader}"
        return "every reader's lesions"


def default_readers(document: AnnotationDocument, reader: str | None = None, fmt: str | None = None) -> ExportReaders:
    """Consensus once a label was adjudicated, or for a training dataset (`fmt` "dataset") of several
    readers, where each lesion must be one example with one label; otherwise every reader's lesions, or
    the one reader's."""
    readers = document.readers()
    if document.adjudications or (fmt == "dataset" and len(readers) > 1):
        return ExportReaders(ReaderScope.CONSENSUS)
    if len(readers) == 1:
        return ExportReaders(ReaderScope.READER, readers[0])
    if len(readers) == 0 and reader:
        return ExportReaders(ReaderScope.READER, reader)
    return ExportReaders(ReaderScope.ALL_READERS)


def parse_readers(text: str) -> ExportReaders:
    """``consensus``, ``all``, or a reader's name (the command line's ``--readers``)."""
    if text == ReaderScope.CONSENSUS.value:
        return ExportReaders(ReaderScope.CONSENSUS)
    if text == ReaderScope.ALL_READERS.value:
        return ExportReaders(ReaderScope.ALL_READERS)
    return ExportReaders(ReaderScope.READER, text)


def _representative(group: LesionGroup, lesions: dict[str, Lesion]) -> Lesion:
    members = [lesions[lesion_id] for lesion_id in group.lesion_ids]
    if len(members) == 1:
        return members[0]

    def mean_dice(lesion: Lesion) -> float:
        values = [d for pair, d in group.pairwise_dice.items() if lesion.reader in pair and d == d]
        return sum(values) / len(values) if values else 0.0

    adjudicator = group.adjudication.decided_by if group.adjudication is not None else None
    return max(sorted(members, key=lambda lesion: lesion.reader),
               key=lambda lesion: (round(mean_dice(lesion), 6), lesion.reader == adjudicator))


def _consensus_lesion(group: LesionGroup, lesions: dict[str, Lesion]) -> Lesion:
    outline = _representative(group, lesions)
    lesion = outline.snapshot()
    adjudication = group.adjudication
    lesion.label = group.final_label
    lesion.consensus = ConsensusOrigin(readers=group.readers, lesion_ids=list(group.lesion_ids), outline_of=outline.id,
                                       decided_by=adjudication.decided_by if adjudication else None,
                                       time=adjudication.time if adjudication else None)
    # The reader stays the outline's: who adjudicated the label is `consensus.decided_by`.
    if adjudication is not None:
        lesion.label_source = "adjudicated"
    elif len(group.lesion_ids) > 1:
        lesion.label_source = "readers agree" if group.final_label is not None else "readers disagree"
    # An answer the model gave on one reader's outline is not the consensus finding's answer.
    if len(group.lesion_ids) > 1:
        lesion.ai = None
    return lesion


def select_for_export(document: AnnotationDocument, volume: Volume, choice: ExportReaders,
                      summary: ConsensusSummary | None = None) -> AnnotationDocument:
    """A copy of `document` holding the lesions `choice` sends out (see the module docstring); the
    input is not changed. `summary`: the document's consensus, when the caller has it already (it
    rasterises every outline). Raises ValueError for a reader with no lesion on the series."""
    selected = copy.copy(document)
    if choice.scope is ReaderScope.ALL_READERS:
        selected.lesions = [lesion.snapshot() for lesion in document.lesions]
    elif choice.scope is ReaderScope.READER:
        if choice.reader not in document.readers():
            raise ValueError(f"reader {choice.reader!r} has no lesion on this series; readers: "
                             f"{', '.join(document.readers()) or 'none'}")
        selected.lesions = [lesion.snapshot() for lesion in document.lesions if lesion.reader == choice.reader]
    else:
        by_id = {lesion.id: lesion for lesion in document.lesions}
        groups = (summary or summarize_consensus(document, volume)).groups
        selected.lesions = [_consensus_lesion(group, by_id) for group in groups]
    return selected


def conflicting_findings(document: AnnotationDocument, summary: ConsensusSummary,
                         taxonomy: LabelTaxonomy | None = None) -> list[tuple[str, bool]]:
    """The findings of `summary` (the document's consensus) that several readers outlined with different
    labels, each as ("L1 (Dr A: HCC) and L2 (Dr B: Metastasis)", whether it was adjudicated), with the
    lesions' numbers on the series."""
    taxonomy = taxonomy or LabelTaxonomy()
    numbers = document.lesion_numbers()
    by_id = {lesion.id: lesion for lesion in document.lesions}
    conflicts = []
    for group in summary.groups:
        labels = {by_id[i].label for i in group.lesion_ids if by_id[i].label}
        if len(labels) > 1:
            members = [f"{numbers[i]} ({by_id[i].reader}: {taxonomy.name_of(by_id[i].label)})" for i in group.lesion_ids]
            conflicts.append((", ".join(members[:-1]) + " and " + members[-1], group.adjudication is not None))
    return conflicts


__all__ = ["ExportReaders", "ReaderScope", "conflicting_findings", "default_readers", "parse_readers",
           "select_for_export"]
