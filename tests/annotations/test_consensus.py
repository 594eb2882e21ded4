"""Reader agreement statistics against values computed by hand."""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest

from liverview.annotations.consensus import (cohen_kappa, dice, fleiss_kappa, iou, match_lesions,
                                             summarize_consensus)
from liverview.annotations.document import Adjudication, AnnotationDocument, Lesion, Roi
from liverview.annotations.measurements import lesion_mask


@dataclass
class VolumeStub:
    """`lesion_mask` only reads `.array` (its shape) and, through measurements, `.spacing_mm`."""

    array: np.ndarray
    spacing_mm: tuple[float, float, float] = (2.0, 1.0, 1.0)


def square(x0: int, y0: int, size: int) -> list[tuple[float, float]]:
    """Outline covering pixel centres x0..x0+size-1, y0..y0+size-1 (masks use pixel centres)."""
    lo_x, lo_y, hi_x, hi_y = x0 - 0.5, y0 - 0.5, x0 + size - 0.5, y0 + size - 0.5
    return [(lo_x, lo_y), (hi_x, lo_y), (hi_x, hi_y), (lo_x, hi_y)]


def lesion(reader: str, label: str | None, x0: int, y0: int, size: int, slices=(1, 2), lesion_id: str = "") -> Lesion:
    rois = [Roi(slice_index=z, points_xy=square(x0, y0, size)) for z in slices]
    made = Lesion(reader=reader, label=label, rois=rois)
    if lesion_id:
        made.id = lesion_id
    return made


def document(*lesions: Lesion, adjudications: list[Adjudication] | None = None) -> AnnotationDocument:
    return AnnotationDocument("1.2.3", "1.2.3.4", lesions=list(lesions), adjudications=adjudications or [])


def masks_of(doc: AnnotationDocument, volume: VolumeStub) -> dict[str, np.ndarray]:
    return {les.id: lesion_mask(volume, les) for les in doc.lesions}  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- Cohen's kappa

def test_cohen_kappa_hand_computed_2x2():
    #            B: yes   B: no
    # A: yes        4       2      -> A says yes 6/10
    # A: no         1       3      -> A says no  4/10
    #   B yes 5/10, B no 5/10
    # po = (4 + 3) / 10 = 0.7 ; pe = 0.6*0.5 + 0.4*0.5 = 0.5 ; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = ["y"] * 4 + ["y"] * 2 + ["n"] * 1 + ["n"] * 3
    b = ["y"] * 4 + ["n"] * 2 + ["y"] * 1 + ["n"] * 3
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(b, a) == pytest.approx(0.4)  # symmetric


def test_cohen_kappa_skips_pairs_with_none():
    a = ["y"] * 6 + ["n"] * 4 + [None, "y", None]
    b = ["y"] * 4 + ["n"] * 2 + ["y"] * 1 + ["n"] * 3 + ["n", None, None]
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_three_categories():
    # a: c c c m m h ; b: c c m m m h  -> po = 5/6
    # marginals a: c 3, m 2, h 1 ; b: c 2, m 3, h 1 ; pe = (3*2 + 2*3 + 1*1) / 36 = 13/36
    # kappa = (5/6 - 13/36) / (1 - 13/36) = (17/36) / (23/36) = 17/23
    a = ["c", "c", "c", "m", "m", "h"]
    b = ["c", "c", "m", "m", "m", "h"]
    assert cohen_kappa(a, b) == pytest.approx(17 / 23)


def test_cohen_kappa_edge_conventions():
    assert cohen_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)  # po 0, pe 0.5
    assert cohen_kappa(["cyst"] * 5, ["cyst"] * 5) == 1.0  # pe = 1: perfect agreement by convention
    assert math.isnan(cohen_kappa([], []))
    assert math.isnan(cohen_kappa([None, "a"], ["b", None]))
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


# -------------------------------------------------------------------------------- Fleiss' kappa

FLEISS_COUNTS = [  # 10 subjects x 5 categories, 14 raters each (the worked example on Wikipedia)
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_worked_example():
    ratings = [[cat for cat, n in zip("ABCDE", row) for _ in range(n)] for row in FLEISS_COUNTS]
    # P_i = (sum_j n_ij^2 - 14) / (14*13); the numerators are 182, 46, 56, 80, 60, 84, 44, 32, 52, 52 -> 688,
    # so P-bar = 688 / 1820. Column totals 20, 28, 39, 21, 32 of 140:
    # Pe = (400 + 784 + 1521 + 441 + 1024) / 140^2 = 4170 / 19600.
    p_bar, p_e = Fraction(688, 1820), Fraction(4170, 19600)
    expected = float((p_bar - p_e) / (1 - p_e))
    assert expected == pytest.approx(0.2099, abs=1e-4)  # the published 0.210
    assert fleiss_kappa(ratings) == pytest.approx(expected)


def test_fleiss_kappa_small_table():
    # 3 raters, 4 items. n_ij (cyst, met): item1 (3,0) item2 (0,3) item3 (2,1) item4 (1,2)
    # P_i = (sum n^2 - 3) / 6: 1, 1, 1/3, 1/3 -> P-bar = 2/3
    # p_cyst = 6/12, p_met = 6/12 -> Pe = 1/2 ; kappa = (2/3 - 1/2) / (1/2) = 1/3
    ratings = [["cyst"] * 3, ["met"] * 3, ["cyst", "met", "cyst"], ["met", "cyst", "met"]]
    assert fleiss_kappa(ratings) == pytest.approx(1 / 3)


def test_fleiss_kappa_edge_conventions():
    assert fleiss_kappa([["a", "a", "a"], ["a", "a", "a"]]) == 1.0
    assert math.isnan(fleiss_kappa([]))
    with pytest.raises(ValueError):
        fleiss_kappa([["a", "b"], ["a"]])
    with pytest.raises(ValueError):
        fleiss_kappa([["a"], ["b"]])
    with pytest.raises(ValueError):
        fleiss_kappa([["a", None]])  # type: ignore[list-item]


# -------------------------------------------------------------------------------- Dice / IoU

def test_dice_and_iou_of_overlapping_squares():
    a = np.zeros((20, 20), dtype=bool)
    b = np.zeros((20, 20), dtype=bool)
    a[2:6, 2:6] = True  # 16 pixels
    b[2:6, 4:8] = True  # 16 pixels, shifted 2 columns: overlap 4 rows x 2 columns = 8
    assert dice(a, b) == pytest.approx(2 * 8 / (16 + 16))  # 0.5
    assert iou(a, b) == pytest.approx(8 / (16 + 16 - 8))  # 1/3
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0


def test_dice_iou_empty_and_shape_mismatch():
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)
    assert math.isnan(dice(empty, empty)) and math.isnan(iou(empty, empty))
    assert dice(empty, full) == 0.0 and iou(empty, full) == 0.0
    with pytest.raises(ValueError):
        dice(empty, np.zeros((4, 5), dtype=bool))


# -------------------------------------------------------------------------------- matching

@pytest.fixture
def volume() -> VolumeStub:
    return VolumeStub(np.zeros((4, 40, 40), dtype=np.int16))


def three_reader_doc(adjudications: list[Adjudication] | None = None) -> AnnotationDocument:
    # Finding 1 on slices 1-2, 10x10 per slice (200 voxels each):
    #   alice x 10-19 y 10-19; bob shifted +2 in x; carol shifted +2 in y.
    #   alice∩bob = alice∩carol = 8*10*2 = 160 -> Dice 320/400 = 0.8, IoU 160/240 = 2/3
    #   bob∩carol = 8*8*2 = 128        -> Dice 256/400 = 0.64, IoU 128/272 = 8/17
    # Finding 2: alice and bob identical 6x6 squares at x,y 28-33 -> Dice 1, IoU 1.
    # carol's second lesion (x,y 33-38) touches finding 2 in 1 pixel per slice: IoU 2/142 < 0.1 -> alone.
    return document(
        lesion("alice", "metastasis", 10, 10, 10, lesion_id="A1"),
        lesion("bob", "metastasis", 12, 10, 10, lesion_id="B1"),
        lesion("carol", "cyst", 10, 12, 10, lesion_id="C1"),
        lesion("alice", "hemangioma", 28, 28, 6, lesion_id="A2"),
        lesion("bob", "hemangioma", 28, 28, 6, lesion_id="B2"),
        lesion("carol", "cyst", 33, 33, 6, lesion_id="C2"),
        adjudications=adjudications,
    )


def test_match_three_readers(volume):
    doc = three_reader_doc()
    groups = match_lesions(doc, masks_of(doc, volume))
    assert [g.lesion_ids for g in groups] == [["A1", "B1", "C1"], ["A2", "B2"], ["C2"]]

    first = groups[0]
    assert first.labels == {"alice": "metastasis", "bob": "metastasis", "carol": "cyst"}
    assert first.majority_label == "metastasis" and first.agreement == pytest.approx(2 / 3)
    assert first.pairwise_dice == pytest.approx({("alice", "bob"): 0.8, ("alice", "carol"): 0.8, ("bob", "carol"): 0.64})
    assert first.pairwise_iou[("bob", "carol")] == pytest.approx(8 / 17)
    assert first.mean_dice == pytest.approx((0.8 + 0.8 + 0.64) / 3)
    assert first.mean_iou == pytest.approx((2 / 3 + 2 / 3 + 8 / 17) / 3)
    assert first.adjudication is None and first.final_label is None  # not unanimous, not adjudicated

    second = groups[1]
    assert second.majority_label == "hemangioma" and second.agreement == 1.0
    assert second.final_label == "hemangioma"  # unanimous
    assert second.mean_dice == 1.0 and second.mean_iou == 1.0

    alone = groups[2]
    assert not alone.is_matched and alone.pairwise_dice == {} and math.isnan(alone.mean_dice)
    assert alone.final_label == "cyst"  # a single reader is trivially unanimous


def test_min_iou_threshold_controls_matching(volume):
    doc = three_reader_doc()
    masks = masks_of(doc, volume)
    # IoU(B1, C1) = 8/17 ≈ 0.47 and IoU(A1, ·) = 2/3: a threshold of 0.7 leaves finding 1 unmatched.
    groups = match_lesions(doc, masks, min_iou=0.7)
    assert [g.lesion_ids for g in groups] == [["A1"], ["B1"], ["C1"], ["A2", "B2"], ["C2"]]
    # With a tiny threshold C2 (IoU 2/142 with A2 and B2) joins finding 2.
    groups = match_lesions(doc, masks, min_iou=0.01)
    assert ["A2", "B2", "C2"] in [g.lesion_ids for g in groups]


def test_one_lesion_per_reader_and_greedy_best_match(volume):
    # bob outlined two lesions overlapping alice's; only the better overlap (B_near) joins her.
    doc = document(
        lesion("alice", "cyst", 10, 10, 10, lesion_id="A"),
        lesion("bob", "cyst", 13, 10, 10, lesion_id="B_far"),   # overlap 7 columns: IoU 140/260
        lesion("bob", "cyst", 11, 10, 10, lesion_id="B_near"),  # overlap 9 columns: IoU 180/220
    )
    groups = match_lesions(doc, masks_of(doc, volume))
    assert [g.lesion_ids for g in groups] == [["A", "B_near"], ["B_far"]]


def test_same_outline_on_other_slices_does_not_match(volume):
    doc = document(lesion("alice", "cyst", 10, 10, 10, slices=(0,), lesion_id="A"),
                   lesion("bob", "cyst", 10, 10, 10, slices=(3,), lesion_id="B"))
    assert len(match_lesions(doc, masks_of(doc, volume))) == 2


def test_missing_or_mismatched_masks_are_reported(volume):
    doc = three_reader_doc()
    masks = masks_of(doc, volume)
    del masks["C2"]
    with pytest.raises(KeyError, match="C2"):
        match_lesions(doc, masks)
    masks["C2"] = np.zeros((2, 2, 2), dtype=bool)
    with pytest.raises(ValueError, match="C2"):
        match_lesions(doc, masks)


def test_tie_gives_no_majority(volume):
    doc = document(lesion("alice", "cyst", 10, 10, 10), lesion("bob", "metastasis", 10, 10, 10))
    (group,) = match_lesions(doc, masks_of(doc, volume))
    assert group.majority_label is None and group.agreement == 0.5 and group.final_label is None


def test_unlabelled_reader_blocks_unanimity(volume):
    doc = document(lesion("alice", "cyst", 10, 10, 10), lesion("bob", None, 10, 10, 10))
    (group,) = match_lesions(doc, masks_of(doc, volume))
    assert group.majority_label == "cyst" and group.agreement == 0.5 and group.final_label is None


def test_adjudication_overrides_majority(volume):
    adjudications = [Adjudication(lesion_ids=["A1", "B1", "C1"], final_label="cyst", decided_by="chief")]
    doc = three_reader_doc(adjudications)
    groups = match_lesions(doc, masks_of(doc, volume))
    assert groups[0].majority_label == "metastasis"
    assert groups[0].adjudication is adjudications[0] and groups[0].final_label == "cyst"
    assert groups[1].adjudication is None and groups[1].final_label == "hemangioma"


def test_later_adjudication_wins(volume):
    early = Adjudication(lesion_ids=["A2", "B2"], final_label="cyst", decided_by="x")
    late = Adjudication(lesion_ids=["A2", "B2"], final_label="metastasis", decided_by="y")
    doc = three_reader_doc([early, late])
    groups = match_lesions(doc, masks_of(doc, volume))
    assert groups[1].final_label == "metastasis"


# -------------------------------------------------------------------------------- summary

def test_summary_three_readers_uses_fleiss(volume):
    summary = summarize_consensus(three_reader_doc(), volume)  # type: ignore[arg-type]
    assert summary.readers == ["alice", "bob", "carol"] and summary.n_groups == 3
    # Only finding 1 is labelled by all three: n = (met 2, cyst 1). P_1 = (4 + 1 - 3) / 6 = 1/3;
    # p = (2/3, 1/3) -> Pe = 5/9 ; kappa = (1/3 - 5/9) / (4/9) = -1/2
    assert summary.kappa_method == "fleiss" and summary.n_kappa_items == 1
    assert summary.kappa == pytest.approx(-0.5)
    assert summary.mean_dice == pytest.approx(((0.8 + 0.8 + 0.64) / 3 + 1.0) / 2)
    assert summary.mean_iou == pytest.approx(((2 / 3 + 2 / 3 + 8 / 17) / 3 + 1.0) / 2)
    assert summary.unmatched_by_reader == {"alice": 0, "bob": 0, "carol": 1}
    assert summary.n_adjudicated == 0


def test_summary_two_readers_uses_cohen(volume):
    doc = document(
        lesion("alice", "cyst", 5, 5, 6), lesion("bob", "cyst", 5, 5, 6),
        lesion("alice", "cyst", 25, 25, 6), lesion("bob", "metastasis", 25, 25, 6),
        lesion("bob", "cyst", 5, 30, 4),  # bob only
    )
    summary = summarize_consensus(doc, volume)  # type: ignore[arg-type]
    # Items (cyst, cyst), (cyst, met): po = 1/2; alice cyst 2/2, bob cyst 1/2 met 1/2 -> pe = 1*1/2 = 1/2;
    # kappa = (1/2 - 1/2) / (1/2) = 0
    assert summary.kappa_method == "cohen" and summary.n_kappa_items == 2
    assert summary.kappa == pytest.approx(0.0)
    assert summary.unmatched_by_reader == {"alice": 0, "bob": 1}
    assert summary.mean_dice == 1.0


def test_summary_single_reader_has_no_kappa(volume):
    summary = summarize_consensus(document(lesion("alice", "cyst", 5, 5, 6)), volume)  # type: ignore[arg-type]
    assert summary.kappa_method == "none" and math.isnan(summary.kappa)
    assert math.isnan(summary.mean_dice) and summary.unmatched_by_reader == {"alice": 1}


def test_summary_on_empty_document(volume):
    summary = summarize_consensus(document(), volume)  # type: ignore[arg-type]
    assert summary.n_groups == 0 and summary.readers == [] and math.isnan(summary.kappa)
