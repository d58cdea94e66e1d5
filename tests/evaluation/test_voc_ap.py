"""VOC AP: hand-worked cases and an independent brute-force devkit reimplementation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _voc_devkit import brute_voc_eval

from detect.errors import DetectError
from detect.evaluation.voc_ap import VOC07_THRESHOLDS, evaluate_voc, matlab_colon
from detect.ops.boxes import box_iou, paired_box_iou
from detect.structures import Annotation, DetectionDataset, Detections

CLASSES = ("a", "b", "c")


def dataset_of(gts: dict) -> DetectionDataset:
    """gts = {image_id: [(label, (x1, y1, x2, y2) continuous, difficult)]}."""
    anns = [
        Annotation(
            image_id,
            Path(f"{image_id}.jpg"),
            100,
            100,
            [list(box) for _, box, _ in objects],
            [label for label, _, _ in objects],
            [difficult for _, _, difficult in objects],
        )
        for image_id, objects in gts.items()
    ]
    return DetectionDataset("t", Path("."), "test", CLASSES, anns)


def dets_of(items: list) -> Detections:
    """items = [(label, score, box)]."""
    if not items:
        return Detections.empty()
    return Detections(
        [list(b) for _, _, b in items], [s for _, s, _ in items], [la for la, _, _ in items]
    )


def test_hand_worked_duplicates_difficult_and_missing_classes():
    ds = dataset_of(
        {
            "1": [
                (0, (0, 0, 10, 10), False),  # A
                (0, (20, 20, 30, 30), False),  # B
                (0, (40, 40, 50, 50), True),  # C, difficult
                (1, (60, 60, 70, 70), False),  # class b: never detected
            ]
        }
    )
    dets = {
        "1": dets_of(
            [
                (0, 0.9, (0, 0, 10, 10)),  # TP on A
                (0, 0.8, (0, 0, 10, 10)),  # duplicate of A: FP
                (0, 0.7, (40, 40, 50, 50)),  # on difficult C: ignored
                (0, 0.6, (80, 80, 90, 90)),  # nothing there: FP
                (0, 0.5, (20, 20, 30, 30)),  # TP on B
                (2, 0.4, (1, 1, 5, 5)),  # class c has no ground truth
            ]
        )
    }
    # npos = 2. In score order: tp = 1 0 0 0 1, fp = 0 1 0 1 0 -> cumulated
    # precision = 1, 1/2, 1/2, 1/3, 1/2 and recall = .5, .5, .5, .5, 1.
    # VOC07: thresholds 0 .. 0.5 (6 of them) see max precision 1; 0.6 .. 1.0 (5) see 1/2:
    # AP = (6 * 1 + 5 * 0.5) / 11 = 8.5 / 11.
    # VOC10: envelope 1 up to recall .5, then 1/2 up to recall 1: AP = .5 * 1 + .5 * .5 = 0.75.
    r07 = evaluate_voc(dets, ds, "voc07")
    np.testing.assert_allclose(r07.precision["a"], [1, 0.5, 0.5, 1 / 3, 0.5])
    np.testing.assert_allclose(r07.recall["a"], [0.5, 0.5, 0.5, 0.5, 1])
    assert r07.ap["a"] == pytest.approx(8.5 / 11)
    assert r07.ap["b"] == 0.0 and r07.recall["b"].size == 0  # ground truth but no detections
    assert math.isnan(r07.ap["c"])  # no ground truth: nan, left out of the mean
    assert r07.mAP == pytest.approx((8.5 / 11 + 0) / 2)
    assert r07.num_positives == {"a": 2, "b": 1, "c": 0}
    r10 = evaluate_voc(dets, ds, "voc10")
    assert r10.ap["a"] == pytest.approx(0.75) and r10.mAP == pytest.approx(0.375)


def test_voc07_thresholds_are_the_devkits_at_recall_exactly_point_six():
    # 10 positives, ranked as 6 hits, 10 false positives, 4 hits. Recall 6/10 = 0.6 exactly for
    # ranks 6..16 with precision 1 at rank 6; then 7/17, 8/18, 9/19, 10/20 at recall .7 .. 1.
    # Devkit (t = 0:0.1:1, t exactly 0.6 and 0.7): t = 0 .. 0.6 (7 thresholds) see precision 1,
    # t = 0.7 .. 1 (4) see max(7/17, 8/18, 9/19, 10/20) = 0.5: AP = (7 + 4 * 0.5) / 11 = 0.8182.
    # np.arange thresholds (0.6000000000000001 > 0.6): only 6 see precision 1:
    # AP = (6 + 5 * 0.5) / 11 = 0.7727.
    hits = [(0, (20 * i, 0, 20 * i + 10, 10), False) for i in range(10)]
    ds = dataset_of({"1": hits})
    ranked = [b for _, b, _ in hits[:6]] + [(0, 50 + 2 * i, 5, 55 + 2 * i) for i in range(10)]
    ranked += [b for _, b, _ in hits[6:]]
    dets = {"1": dets_of([(0, 1.0 - 0.01 * rank, box) for rank, box in enumerate(ranked)])}
    devkit = evaluate_voc(dets, ds, "voc07")
    assert devkit.recall["a"][5] == 0.6 and devkit.recall["a"][16] == 0.7
    assert devkit.ap["a"] == pytest.approx(9 / 11) and round(devkit.ap["a"], 4) == 0.8182
    numpy_variant = evaluate_voc(dets, ds, "voc07_numpy")
    assert numpy_variant.ap["a"] == pytest.approx(8.5 / 11)
    assert round(numpy_variant.ap["a"], 4) == 0.7727


def test_voc07_thresholds_are_matlab_colon_values():
    # MATLAB's 0:0.1:1 by hand: 0, .1, .2 and .4, .5 forward (3 * 0.1 = 0.30000000000000004), the
    # upper half back from 1: 1 - 4 * 0.1 == 0.6, 1 - 3 * 0.1 == 0.7, 1 - 0.2, 1 - 0.1, 1.
    assert VOC07_THRESHOLDS.tolist() == [0.0, 0.1, 0.2, 3 * 0.1, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert VOC07_THRESHOLDS[6] == 0.6 and VOC07_THRESHOLDS[7] == 0.7
    assert matlab_colon(1, 0.5, 4).tolist() == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    assert matlab_colon(0, 0.25, 0.9).tolist() == [0.0, 0.25, 0.5, 0.75]  # stops below 0.9
    assert matlab_colon(1, 1, 0).size == 0


def test_best_match_already_taken_is_false_positive():
    # A = (0,0,10,10), B = (1,0,11,10). Second detection (0.4,0,10.4,10): IoU with A = 96/104 =
    # .923, with B = 94/106 = .887. Its best match A is taken, so it is a FP even though B is free
    # (the devkit does not fall back to the second best). tp = 1 0, fp = 0 1, npos = 2:
    # precision 1, .5; recall .5, .5. VOC07 = 6/11 (thresholds <= .5); VOC10 = .5 * 1 = .5.
    ds = dataset_of({"1": [(0, (0, 0, 10, 10), False), (0, (1, 0, 11, 10), False)]})
    dets = {"1": dets_of([(0, 0.9, (0, 0, 10, 10)), (0, 0.8, (0.4, 0, 10.4, 10))])}
    assert evaluate_voc(dets, ds, "voc07").ap["a"] == pytest.approx(6 / 11)
    assert evaluate_voc(dets, ds, "voc10").ap["a"] == pytest.approx(0.5)


def test_difficult_best_match_ignored_even_if_other_gt_overlaps():
    # D (difficult) = (0,0,10,10), E = (0,0,10,12). Detection (0,0,10,10): IoU 1 with D and
    # 100/120 with E; best is D -> ignored, E stays unmatched. No TP, no FP: precision 0 (devkit's
    # eps guard), recall 0 -> AP 0.
    ds = dataset_of({"1": [(0, (0, 0, 10, 10), True), (0, (0, 0, 10, 12), False)]})
    result = evaluate_voc({"1": dets_of([(0, 0.9, (0, 0, 10, 10))])}, ds, "voc10")
    assert result.ap["a"] == 0.0 and result.recall["a"].tolist() == [0.0]


def test_iou_threshold_is_inclusive():
    # GT (0,0,10,10), detection (0,0,20,10): IoU = 100 / 200 = 0.5 exactly -> TP, AP 1.
    ds = dataset_of({"1": [(0, (0, 0, 10, 10), False)]})
    result = evaluate_voc({"1": dets_of([(0, 0.9, (0, 0, 20, 10))])}, ds, "voc07")
    assert result.ap["a"] == pytest.approx(1.0)


@pytest.mark.parametrize(("first_is_tp", "expected"), [(True, 1.0), (False, 0.5)])
def test_score_ties_keep_input_order(first_is_tp, expected):
    # Equal scores: stable order. TP first: precision 1, .5 at recall 1, 1 -> AP 1 (both variants).
    # FP first: precision 0, .5 at recall 0, 1 -> VOC07: every threshold sees .5 -> .5;
    # VOC10: recall 0 -> 1 with envelope .5 -> .5.
    ds = dataset_of({"1": [(0, (0, 0, 10, 10), False)]})
    tp, fp = (0, 0.5, (0, 0, 10, 10)), (0, 0.5, (50, 50, 60, 60))
    dets = {"1": dets_of([tp, fp] if first_is_tp else [fp, tp])}
    for metric in ("voc07", "voc10"):
        assert evaluate_voc(dets, ds, metric).ap["a"] == pytest.approx(expected)


def test_bad_input():
    ds = dataset_of({"1": [(0, (0, 0, 10, 10), False)]})
    with pytest.raises(DetectError, match="'2'.*not in the split"):
        evaluate_voc({"2": dets_of([(0, 0.5, (0, 0, 1, 1))])}, ds)
    with pytest.raises(DetectError, match="label 5"):
        evaluate_voc({"1": dets_of([(5, 0.5, (0, 0, 1, 1))])}, ds)
    # Labels index the 3 classes: 3 is one past the last.
    with pytest.raises(DetectError, match=r"^detections for image '1': label 3 outside 0\.\.2$"):
        evaluate_voc({"1": dets_of([(0, 0.9, (0, 0, 1, 1)), (3, 0.5, (0, 0, 1, 1))])}, ds)
    with pytest.raises(DetectError, match="voc12"):
        evaluate_voc({}, ds, metric="voc12")


def test_paired_iou_is_diagonal_of_box_iou():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(50, 4, generator=gen) * 20
    b = torch.rand(50, 4, generator=gen) * 20
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    torch.testing.assert_close(paired_box_iou(a, b), box_iou(a, b).diagonal())


def random_voc_box(rng, size=30):
    x1, y1 = rng.integers(1, size, 2)
    return [int(x1), int(y1), int(x1 + rng.integers(0, 12)), int(y1 + rng.integers(0, 12))]


def random_split(rng):
    """A random split for the brute-force devkit: ground truth per image (continuous boxes),
    the same in VOC 1-based inclusive boxes, detections per image (some images have none) and
    the same as the devkit's list: gts, voc_gt, dets, voc_dets."""
    gts, voc_gt, dets, voc_dets = {}, {}, {}, []
    for i in range(int(rng.integers(1, 7))):
        image = f"im{i}"
        objects = [
            (int(rng.integers(0, 3)), random_voc_box(rng), bool(rng.random() < 0.2))
            for _ in range(int(rng.integers(0, 5)))
        ]
        # Continuous boxes written by hand from the VOC ones: (x1 - 1, y1 - 1, x2, y2).
        gts[image] = [(c, (b[0] - 1, b[1] - 1, b[2], b[3]), d) for c, b, d in objects]
        voc_gt[image] = objects
        items = []
        for _ in range(int(rng.integers(0, 9))):
            if objects and rng.random() < 0.6:  # near a ground truth (often a duplicate)
                c, b, _ = objects[int(rng.integers(0, len(objects)))]
                b = [v + int(rng.integers(-1, 2)) for v in b]
                b[2], b[3] = max(b[2], b[0]), max(b[3], b[1])
            else:
                c, b = int(rng.integers(0, 3)), random_voc_box(rng)
            score = float(rng.integers(0, 5)) / 4  # coarse scores: many ties
            items.append((c, score, (b[0] - 1, b[1] - 1, b[2], b[3])))
            voc_dets.append((image, c, score, b))
        if items or rng.random() < 0.5:
            dets[image] = dets_of(items)
    return gts, voc_gt, dets, voc_dets


@pytest.mark.parametrize("metric", ["voc07", "voc07_numpy", "voc10"])
def test_matches_brute_force_devkit_on_random_data(metric):
    rng = np.random.default_rng(123)
    for _trial in range(60):
        gts, voc_gt, dets, voc_dets = random_split(rng)
        # Make the input order of the dict match the brute force's list order.
        result = evaluate_voc(dets, dataset_of(gts), metric)
        for c, name in enumerate(CLASSES):
            gt_c = {im: [(b, d) for cc, b, d in objs if cc == c] for im, objs in voc_gt.items()}
            npos = sum(not d for objs in gt_c.values() for _, d in objs)
            dets_c = [(im, s, b) for im, cc, s, b in voc_dets if cc == c]
            ap, prec, rec = brute_voc_eval(gt_c, dets_c, npos, metric)
            if math.isnan(ap):
                assert math.isnan(result.ap[name])
                continue
            assert result.ap[name] == pytest.approx(ap, abs=1e-12), (name, _trial)
            np.testing.assert_allclose(result.precision[name], prec, atol=1e-12)
            np.testing.assert_allclose(result.recall[name], rec, atol=1e-12)


def test_no_detections_and_classes_without_ground_truth(caplog):
    ds = dataset_of({"1": [(0, (0, 0, 10, 10), False), (1, (20, 20, 30, 30), True)]})
    with caplog.at_level(logging.WARNING, logger="detect.evaluation.voc_ap"):
        empty = evaluate_voc({}, ds, "voc10")
    assert empty.metric == "voc10"
    assert empty.ap["a"] == 0.0 and empty.mAP == 0.0  # a has a ground truth and no detection
    assert math.isnan(empty.ap["b"]) and math.isnan(empty.ap["c"])  # only difficult / none
    assert "left out of the mAP: ['b', 'c']" in caplog.text
    # A detection of a class without ground truth: precision 0, recall undefined (NaN, float).
    one = evaluate_voc({"1": dets_of([(2, 0.5, (0, 0, 10, 10))])}, ds, "voc07")
    assert one.recall["c"].dtype == np.float64 and np.isnan(one.recall["c"]).all()
    assert one.precision["c"].tolist() == [0.0] and one.num_positives["c"] == 0
