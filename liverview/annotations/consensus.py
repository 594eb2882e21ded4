"""Agreement between readers: label kappas, overlap (Dice/IoU), and matching lesions across readers.

Several readers outline the same series independently; each reader's `Lesion` is a separate object in
the `AnnotationDocument`. To compare them we first decide which lesions are "the same finding"
(`match_lesions`, by 3-D overlap), then measure how well the outlines agree (Dice, IoU) and how well the
labels agree (Cohen's kappa for two readers, Fleiss' kappa for three or more).

Conventions (chosen so that summaries stay meaningful on small studies):

* Undefined statistics are ``nan``, never an exception: no rated items, or two empty masks.
* A kappa whose chance agreement is 1 (every rating in one single category) is reported as 1.0: the
  raters agree perfectly, and the textbook formula would divide 0 by 0 only because nothing could
  have disagreed. Reporting nan there would make a perfectly consistent pair look broken.
* A "majority" label is a plurality: the unique most frequent label among the readers who labelled
  the lesion; a tie for first place gives no majority (None).

Numpy only (no scipy/sklearn), so the annotations layer stays light.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from liverview.annotations.document import Adjudication, AnnotationDocument, Lesion
from liverview.annotations.measurements import slice_masks
from liverview.io.volume import Volume

log = logging.getLogger(__name__)

KAPPA_COHEN = "cohen"
KAPPA_FLEISS = "fleiss"
KAPPA_NONE = "none"


# --------------------------------------------------------------------------------------------------
# Label agreement


def cohen_kappa(labels_a: Sequence[str | None], labels_b: Sequence[str | None]) -> float:
    """Unweighted Cohen's kappa of two raters who labelled the same items, in the same order.

    kappa = (po - pe) / (1 - pe), with po the observed agreement and pe the agreement expected from
    each rater's own label frequencies. Items where either label is None are skipped (a reader who
    gave no label did not rate the item). Returns nan when no item is left; returns 1.0 when pe is 1
    (both raters used one and the same category for everything, which means they always agreed).
    Raises ValueError when the two sequences differ in length.
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(f"cohen_kappa needs one label per item from each rater; got {len(labels_a)} "
                         f"and {len(labels_b)} labels")
    pairs = [(a, b) for a, b in zip(labels_a, labels_b) if a is not None and b is not None]
    n = len(pairs)
    if n == 0:
        return math.nan
    observed = sum(1 for a, b in pairs if a == b) / n
    count_a = Counter(a for a, _ in pairs)
    count_b = Counter(b for _, b in pairs)
    expected = sum(count_a[c] * count_b.get(c, 0) for c in count_a) / (n * n)
    # pe == 1 only when both raters used a single, shared category, so po is 1 too (see module doc).
    if math.isclose(expected, 1.0):
        return 1.0
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float:
    """Fleiss' kappa for items each rated by the same number n >= 2 of raters.

    `ratings` is items x raters: ``ratings[i]`` holds the n labels item i received (which rater gave
    which does not matter to Fleiss' kappa). Returns nan when there are no items and 1.0 when every
    rating is the same category (chance agreement 1; see module doc). Raises ValueError when items have
    different numbers of ratings, fewer than 2, or a None label (drop unlabelled items first: Fleiss'
    formula has no notion of a missing rating).
    """
    if len(ratings) == 0:
        return math.nan
    n_raters = len(ratings[0])
    if n_raters < 2:
        raise ValueError(f"fleiss_kappa needs at least 2 ratings per item; item 0 has {n_raters}")
    for i, item in enumerate(ratings):
        if len(item) != n_raters:
            raise ValueError(f"fleiss_kappa needs the same number of ratings per item; item 0 has {n_raters}, "
                             f"item {i} has {len(item)}")
        if any(label is None for label in item):
            raise ValueError(f"fleiss_kappa: item {i} has a missing (None) label; leave such items out")
    categories = sorted({label for item in ratings for label in item})
    index = {c: j for j, c in enumerate(categories)}
    # counts[i, j]: how many raters put item i into category j (Fleiss' n_ij).
    counts = np.zeros((len(ratings), len(categories)), dtype=np.int64)
    for i, item in enumerate(ratings):
        for label in item:
            counts[i, index[label]] += 1
    n_items = counts.shape[0]
    per_item = (np.sum(counts * counts, axis=1) - n_raters) / (n_raters * (n_raters - 1))
    observed = float(per_item.mean())
    proportions = counts.sum(axis=0) / (n_items * n_raters)
    expected = float(np.sum(proportions * proportions))
    if math.isclose(expected, 1.0):
        return 1.0
    return (observed - expected) / (1.0 - expected)


# --------------------------------------------------------------------------------------------------
# Overlap


def _overlap_counts(mask_a: np.ndarray, mask_b: np.ndarray) -> tuple[int, int, int]:
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a)), int(np.count_nonzero(b))


def _dice_from_counts(intersection: int, size_a: int, size_b: int) -> float:
    total = size_a + size_b
    return math.nan if total == 0 else 2.0 * intersection / total


def _iou_from_counts(intersection: int, size_a: int, size_b: int) -> float:
    union = size_a + size_b - intersection
    return math.nan if union == 0 else intersection / union


def dice(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A|+|B|) of two boolean masks of the same shape; nan when both are
    empty (nothing to agree or disagree on), 0.0 when only one is."""
    return _dice_from_counts(*_overlap_counts(mask_a, mask_b))


def iou(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Intersection over union |A∩B| / |A∪B| (Jaccard) of two boolean masks of the same shape; nan when
    both are empty, 0.0 when only one is."""
    return _iou_from_counts(*_overlap_counts(mask_a, mask_b))


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return math.nan if not finite else float(sum(finite) / len(finite))


# --------------------------------------------------------------------------------------------------
# Matching lesions across readers


@dataclass(frozen=True)
class LesionGroup:
    """Lesions of different readers taken to be the same finding (at most one lesion per reader).

    `labels` maps each reader in the group to the label they gave (None when unlabelled).
    `majority_label` is the unique most frequent label (None on a tie or when nobody labelled).
    `agreement` is the share of the group's readers who gave the most frequent label (also reported on a
    tie, e.g. 0.5 for a 1-1 split, so a split is visible; nan when nobody labelled).
    `pairwise_dice` / `pairwise_iou` are keyed by reader pairs in alphabetical order; the means are nan
    for a single-reader group. `final_label` is the adjudicated label when an adjudication covers the
    group, else the label when all of the group's readers gave the same one, else None.
    """

    lesion_ids: list[str]
    labels: dict[str, str | None]
    majority_label: str | None
    agreement: float
    pairwise_dice: dict[tuple[str, str], float] = field(default_factory=dict)
    pairwise_iou: dict[tuple[str, str], float] = field(default_factory=dict)
    mean_dice: float = math.nan
    mean_iou: float = math.nan
    adjudication: Adjudication | None = None
    final_label: str | None = None

    @property
    def readers(self) -> list[str]:
        return list(self.labels)

    @property
    def is_matched(self) -> bool:
        """True when more than one reader found this lesion."""
        return len(self.lesion_ids) > 1


@dataclass(frozen=True)
class _MaskIndex:
    """A mask as its sorted flat voxel indices: pairwise overlaps of small lesions in a large volume
    then cost O(lesion size), not O(volume size)."""

    flat: np.ndarray

    @property
    def size(self) -> int:
        return int(self.flat.size)

    def intersection(self, other: _MaskIndex) -> int:
        a, b = self.flat, other.flat
        # Cheap rejection first: most lesion pairs in a study are far apart.
        if a.size == 0 or b.size == 0 or a[-1] < b[0] or b[-1] < a[0]:
            return 0
        return int(np.intersect1d(a, b, assume_unique=True).size)


def _index_masks(lesions: Sequence[Lesion], masks: Mapping[str, np.ndarray]) -> dict[str, _MaskIndex]:
    shape: tuple[int, ...] | None = None
    indexed: dict[str, _MaskIndex] = {}
    for lesion in lesions:
        if lesion.id not in masks:
            raise KeyError(f"no mask given for lesion {lesion.id} (reader {lesion.reader}); "
                           f"build one with measurements.lesion_mask")
        mask = np.asarray(masks[lesion.id], dtype=bool)
        if shape is None:
            shape = mask.shape
        elif mask.shape != shape:
            raise ValueError(f"mask of lesion {lesion.id} has shape {mask.shape}, others {shape}; "
                             f"all masks must cover the same volume")
        indexed[lesion.id] = _MaskIndex(np.flatnonzero(mask))
    return indexed


def _flat_index(volume: Volume, lesion: Lesion) -> _MaskIndex:
    """Flat voxel indices straight from the per-slice masks: no full-volume mask per lesion, which for
    a 600-slice series would cost 150 MB each."""
    rows, cols = volume.array.shape[1:]
    parts = [z * rows * cols + np.flatnonzero(mask) for z, mask in sorted(slice_masks(volume, lesion).items())]
    return _MaskIndex(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))


def _majority(labels: Sequence[str | None]) -> tuple[str | None, float]:
    given = Counter(label for label in labels if label is not None)
    if not given or not labels:
        return None, math.nan
    ranked = given.most_common()
    top_count = ranked[0][1]
    share = top_count / len(labels)
    if len(ranked) > 1 and ranked[1][1] == top_count:
        return None, share
    return ranked[0][0], share


def find_adjudication(document: AnnotationDocument, lesion_ids: Sequence[str]) -> Adjudication | None:
    """The document's adjudication that covers these lesions: the one naming most of them, and among
    equals the last one recorded (a later decision replaces an earlier one)."""
    wanted = set(lesion_ids)
    best: tuple[int, Adjudication | None] = (0, None)
    for adjudication in document.adjudications:
        shared = len(wanted.intersection(adjudication.lesion_ids))
        if shared > 0 and shared >= best[0]:
            best = (shared, adjudication)
    return best[1]


def _build_group(document: AnnotationDocument, members: Sequence[Lesion], indexed: Mapping[str, _MaskIndex],
                 ious: Mapping[tuple[str, str], float]) -> LesionGroup:
    members = sorted(members, key=lambda lesion: lesion.reader)
    labels = {lesion.reader: lesion.label for lesion in members}
    majority, agreement = _majority(list(labels.values()))
    pair_dice: dict[tuple[str, str], float] = {}
    pair_iou: dict[tuple[str, str], float] = {}
    for i, first in enumerate(members):
        for second in members[i + 1:]:
            a, b = indexed[first.id], indexed[second.id]
            inter = a.intersection(b)
            pair = (first.reader, second.reader)
            pair_dice[pair] = _dice_from_counts(inter, a.size, b.size)
            pair_iou[pair] = ious.get((first.id, second.id), _iou_from_counts(inter, a.size, b.size))
    lesion_ids = [lesion.id for lesion in members]
    adjudication = find_adjudication(document, lesion_ids)
    unanimous = majority is not None and all(label == majority for label in labels.values())
    final = adjudication.final_label if adjudication is not None else (majority if unanimous else None)
    return LesionGroup(
        lesion_ids=lesion_ids, labels=labels, majority_label=majority, agreement=agreement,
        pairwise_dice=pair_dice, pairwise_iou=pair_iou, mean_dice=_nanmean(list(pair_dice.values())),
        mean_iou=_nanmean(list(pair_iou.values())), adjudication=adjudication, final_label=final,
    )


def match_lesions(document: AnnotationDocument, masks: Mapping[str, np.ndarray],
                  min_iou: float = 0.1) -> list[LesionGroup]:
    """Group the lesions of different readers that overlap in 3-D.

    Greedy: all pairs of lesions from different readers are taken in order of decreasing IoU (ties in
    document order, so the result is reproducible); a pair with IoU >= `min_iou` joins the two lesions'
    groups unless that would put two lesions of one reader in a group. Lesions left alone form singleton
    groups. `masks` maps every lesion id of the document to its (z, y, x) boolean mask, all of one shape
    (KeyError / ValueError otherwise). Groups come in the document order of their first lesion.
    """
    return _match_indexed(document, _index_masks(list(document.lesions), masks), min_iou)


def _match_indexed(document: AnnotationDocument, indexed: Mapping[str, _MaskIndex], min_iou: float) -> list[LesionGroup]:
    lesions = list(document.lesions)
    order = {lesion.id: i for i, lesion in enumerate(lesions)}

    ious: dict[tuple[str, str], float] = {}
    candidates: list[tuple[float, int, int]] = []
    for i, first in enumerate(lesions):
        for j in range(i + 1, len(lesions)):
            second = lesions[j]
            if first.reader == second.reader:
                continue
            a, b = indexed[first.id], indexed[second.id]
            value = _iou_from_counts(a.intersection(b), a.size, b.size)
            ious[(first.id, second.id)] = ious[(second.id, first.id)] = value
            if not math.isnan(value) and value >= min_iou and value > 0.0:
                candidates.append((value, i, j))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))

    # group_of[lesion index] -> group key; groups[key] -> member indices. Union of disjoint-reader groups.
    group_of = list(range(len(lesions)))
    groups: dict[int, list[int]] = {i: [i] for i in range(len(lesions))}
    for _, i, j in candidates:
        gi, gj = group_of[i], group_of[j]
        if gi == gj:
            continue
        readers_i = {lesions[k].reader for k in groups[gi]}
        if any(lesions[k].reader in readers_i for k in groups[gj]):
            continue
        keep, drop = min(gi, gj), max(gi, gj)
        for k in groups[drop]:
            group_of[k] = keep
        groups[keep].extend(groups.pop(drop))

    result = [_build_group(document, [lesions[k] for k in members], indexed, ious)
              for _, members in sorted(groups.items(), key=lambda kv: min(order[lesions[k].id] for k in kv[1]))]
    log.debug("matched %d lesions of %d readers into %d groups", len(lesions), len(document.readers()), len(result))
    return result


# --------------------------------------------------------------------------------------------------
# Study summary


@dataclass(frozen=True)
class ConsensusSummary:
    """Reader agreement over one series.

    `kappa` is Cohen's (exactly 2 readers; groups labelled by both) or Fleiss' (3 or more readers; groups
    labelled by all), as named by `kappa_method` ("cohen", "fleiss", or "none" with kappa nan when there
    is only one reader); `n_kappa_items` is how many groups it used. Lesions found by only some readers
    do not enter the kappa: it measures label agreement, while detection agreement shows in
    `unmatched_by_reader`. `mean_dice` / `mean_iou` average the matched groups' means, so every matched
    lesion counts once whatever its number of readers.
    """

    readers: list[str]
    groups: list[LesionGroup]
    n_groups: int
    kappa: float
    kappa_method: str
    n_kappa_items: int
    mean_dice: float
    mean_iou: float
    #: Lesions of each reader that no other reader outlined (singleton groups); every reader listed.
    unmatched_by_reader: dict[str, int]

    @property
    def n_adjudicated(self) -> int:
        return sum(1 for group in self.groups if group.adjudication is not None)


def compute_kappa(groups: Sequence[LesionGroup], readers: Sequence[str]) -> tuple[float, str, int]:
    """(kappa, method, number of items) over the groups, as described in `ConsensusSummary`."""
    if len(readers) < 2:
        return math.nan, KAPPA_NONE, 0
    rated = [g for g in groups if all(g.labels.get(r) is not None for r in readers)]
    if len(readers) == 2:
        first, second = readers
        return (cohen_kappa([g.labels[first] for g in rated], [g.labels[second] for g in rated]),
                KAPPA_COHEN, len(rated))
    return fleiss_kappa([[g.labels[r] for r in readers] for g in rated]), KAPPA_FLEISS, len(rated)  # type: ignore[misc]


def summarize_consensus(document: AnnotationDocument, volume: Volume, min_iou: float = 0.1) -> ConsensusSummary:
    """Match the readers' lesions on `volume` (only its `.array` shape is used, through `lesion_mask`)
    and summarise label and outline agreement."""
    groups = _match_indexed(document, {lesion.id: _flat_index(volume, lesion) for lesion in document.lesions}, min_iou)
    readers = document.readers()
    kappa, method, n_items = compute_kappa(groups, readers)
    matched = [g for g in groups if g.is_matched]
    unmatched = {reader: 0 for reader in readers}
    for group in groups:
        if not group.is_matched:
            unmatched[group.readers[0]] += 1
    return ConsensusSummary(
        readers=readers, groups=groups, n_groups=len(groups), kappa=kappa, kappa_method=method,
        n_kappa_items=n_items, mean_dice=_nanmean([g.mean_dice for g in matched]),
        mean_iou=_nanmean([g.mean_iou for g in matched]), unmatched_by_reader=unmatched,
    )


__all__ = [
    "ConsensusSummary", "LesionGroup", "cohen_kappa", "compute_kappa", "dice", "find_adjudication", "fleiss_kappa",
    "iou", "match_lesions", "summarize_consensus",
]
