"""The evaluators' reset / process / evaluate against independent computations: the brute-force
devkit loop (VOC) and pycocotools used directly (COCO); the one score table, worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _voc_devkit import brute_voc_eval
from test_coco import make_coco, pycocotools_stats, random_detections, records_by_hand
from test_voc_ap import CLASSES, dataset_of, dets_of, random_split

from detect.errors import DetectError
from detect.evaluation.coco import STAT_NAMES
from detect.evaluation.evaluators import (
    METRICS,
    COCOEvaluator,
    Scores,
    VOCEvaluator,
    format_scores,
)


def brute_scores(voc_gt, voc_dets, metric):
    aps = {}
    for c, name in enumerate(CLASSES):
        gt_c = {im: [(b, d) for cc, b, d in objs if cc == c] for im, objs in voc_gt.items()}
        npos = sum(not d for objs in gt_c.values() for _, d in objs)
        dets_c = [(im, s, b) for im, cc, s, b in voc_dets if cc == c]
        aps[name] = brute_voc_eval(gt_c, dets_c, npos, metric)[0]
    return aps


@pytest.mark.parametrize("metric", ["voc07", "voc07_numpy", "voc10"])
def test_voc_evaluator_image_by_image_matches_the_devkit_loop(metric):
    rng = np.random.default_rng(7)
    for _trial in range(20):
        gts, voc_gt, dets, voc_dets = random_split(rng)
        evaluator = VOCEvaluator(dataset_of(gts), metric)
        evaluator.reset()
        for image_id, image_dets in dets.items():
            evaluator.process(image_id, image_dets)
        scores = evaluator.evaluate()
        want = brute_scores(voc_gt, voc_dets, metric)
        assert scores.metric == metric and scores.num_images == len(gts)
        for name in CLASSES:
            if math.isnan(want[name]):
                assert math.isnan(scores.ap[name])
            else:
                assert scores.ap[name] == pytest.approx(want[name], abs=1e-12)
        valid = [ap for ap in want.values() if not math.isnan(ap)]
        if valid:
            assert scores.mAP == pytest.approx(sum(valid) / len(valid), abs=1e-12)


def test_voc_evaluator_reset_and_bad_input():
    gts = {"1": [(0, (0, 0, 10, 10), False)], "2": []}
    evaluator = VOCEvaluator(dataset_of(gts))
    evaluator.process("1", dets_of([(0, 0.9, (0, 0, 10, 10))]))
    assert evaluator.evaluate().ap["a"] == 1.0
    with pytest.raises(DetectError, match="image '1' given twice"):
        evaluator.process("1", dets_of([]))
    evaluator.reset()  # everything processed is forgotten: the object is missed
    assert evaluator.evaluate().ap["a"] == 0.0
    evaluator.process("9", dets_of([(0, 0.9, (0, 0, 10, 10))]))
    with pytest.raises(DetectError, match="image '9', which is not in the split"):
        evaluator.evaluate()
    with pytest.raises(DetectError, match="VOC metric 'coco'"):
        VOCEvaluator(dataset_of(gts), "coco").evaluate()
    assert METRICS == ("voc07", "voc07_numpy", "voc10", "coco")


def test_coco_evaluator_matches_pycocotools(tmp_path):
    gt_path, payload = make_coco(tmp_path, num_images=8, seed=3)
    dets = random_detections(payload, 3)
    records = records_by_hand(dets)
    want = pycocotools_stats(gt_path, records)
    evaluator = COCOEvaluator(gt_path)
    assert evaluator.class_names == ("apple", "cup", "zebra")
    for image_id, image_dets in dets.items():
        evaluator.process(image_id, image_dets)
    scores = evaluator.evaluate()
    assert scores.metric == "coco" and list(scores.stats) == list(STAT_NAMES)
    np.testing.assert_allclose([scores.stats[n] for n in STAT_NAMES], want, atol=1e-6)
    assert scores.mAP == scores.stats["AP"] and scores.num_images == 8 and scores.ap == {}
    # Result records as read from a file: the same numbers; reset forgets them.
    evaluator.reset()
    evaluator.process_results(records)
    again = evaluator.evaluate()
    np.testing.assert_allclose([again.stats[n] for n in STAT_NAMES], want, atol=1e-6)
    evaluator.reset()
    assert evaluator.evaluate().stats["AP"] == 0.0  # no detections at all


def test_format_scores_voc_table_and_coco_stats():
    scores = Scores(
        "voc07",
        mAP=0.5,
        num_images=2,
        ap={"cat": 0.75, "dog": 0.25, "horse": float("nan")},
        num_positives={"cat": 4, "dog": 1, "horse": 0},
    )
    assert format_scores(scores).splitlines() == [
        "class       AP      GT",
        "cat     0.7500       4",
        "dog     0.2500       1",
        "horse      nan       0",
        "mean    0.5000  (voc07, 2 images)",
    ]
    assert scores.to_json() == {
        "metric": "voc07",
        "mAP": 0.5,
        "ap": {"cat": 0.75, "dog": 0.25, "horse": None},
        "stats": {},
    }
    coco = Scores("coco", mAP=0.125, num_images=3, stats={"AP": 0.125, "AP50": -1.0})
    assert format_scores(coco).splitlines() == ["AP     0.1250", "AP50  -1.0000"]
