"""Error analysis (Hoiem et al.): a hand-worked split, a brute-force loop, the files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_voc_ap import dataset_of, dets_of, random_split

from detect.errors import DetectError
from detect.evaluation.error_analysis import (
    BG,
    CORRECT,
    LOC,
    OTH,
    SIM,
    analyze_errors,
    cumulative_fp_counts,
    format_error_table,
    fp_type_fractions,
    save_error_analysis,
    similar_classes,
)
from detect.structures import Annotation, DetectionDataset

NAMES = ("cat", "dog", "car")  # cat and dog are similar (VOC animals), car is not
CAT, DOG, CAR = 0, 1, 2


def hand_split():
    """Image "0": a cat, a dog, a car and a difficult cat side by side (10x10 each); image "1":
    a dog. Ten cat detections, each written with the outcome worked out by hand."""
    gts = {
        "0": [
            (CAT, (0, 0, 10, 10), False),
            (DOG, (20, 0, 30, 10), False),
            (CAR, (40, 0, 50, 10), False),
            (CAT, (60, 0, 70, 10), True),
        ],
        "1": [(DOG, (0, 0, 10, 10), False)],
    }
    ranked = [  # (image, score, box, outcome)
        ("1", 0.95, (0, 0, 10, 10), SIM),  # the dog of image 1, not the cat of image 0
        ("0", 0.9, (0, 0, 10, 10), CORRECT),
        ("0", 0.8, (0, 0, 10, 10), LOC),  # duplicate of the cat just matched
        ("0", 0.7, (20, 0, 30, 10), SIM),  # on the dog
        ("0", 0.6, (40, 0, 50, 10), OTH),  # on the car
        ("0", 0.5, (60, 0, 70, 10), None),  # the difficult cat: ignored
        ("0", 0.4, (100, 100, 110, 110), BG),
        ("0", 0.3, (0, 0, 10, 4), LOC),  # IoU 40 / 100 = 0.4 with the cat
        ("0", 0.2, (5, 0, 25, 10), LOC),  # IoU 50 / 250 = 0.2 with the cat and with the dog
        ("0", 0.15, (0, 0, 100, 10), LOC),  # IoU 100 / 1000 = 0.1 with the cat (inclusive)
        ("0", 0.1, (9.5, 0, 19.5, 10), BG),  # IoU 5 / 195 < 0.1 with the cat, 0 with the dog
    ]
    dets = {image: dets_of([(CAT, s, b) for i, s, b, _ in ranked if i == image]) for image in gts}
    dataset = dataset_of(gts)
    dataset = DetectionDataset("t", Path("."), "test", NAMES, dataset.annotations)
    return dataset, dets, [o for *_, o in ranked if o is not None]


def test_hand_worked_outcomes_top_n_and_fp_shares():
    dataset, dets, expected = hand_split()
    analysis = analyze_errors(dets, dataset)
    cat = analysis["cat"]
    assert cat.outcomes.tolist() == expected
    assert cat.num_positives == 1  # the difficult cat is not counted
    assert cat.top == {"correct": 0, "loc": 0, "sim": 1, "oth": 0, "bg": 0}
    assert cat.total == {"correct": 1, "loc": 4, "sim": 2, "oth": 1, "bg": 2}
    assert analysis["dog"].num_positives == 2 and analysis["dog"].outcomes.size == 0
    # False positives in order: sim loc sim oth bg loc loc loc bg.
    n, fractions = fp_type_fractions(cat.outcomes)
    assert n.tolist() == list(range(1, 10))
    np.testing.assert_allclose(fractions[0], [0, 1, 0, 0])
    np.testing.assert_allclose(fractions[4], [1 / 5, 2 / 5, 1 / 5, 1 / 5])
    np.testing.assert_allclose(fractions[-1], [4 / 9, 2 / 9, 1 / 9, 2 / 9])
    assert cumulative_fp_counts(cat.outcomes)[-1].tolist() == [4, 2, 1, 2]


def test_without_similarity_groups_a_confusion_is_other():
    dataset, dets, expected = hand_split()
    cat = analyze_errors(dets, dataset, groups=())["cat"]
    assert cat.outcomes.tolist() == [OTH if o == SIM else o for o in expected]


def test_similar_classes_are_symmetric_within_groups_only():
    similar = similar_classes(("person", "car", "dog", "bus", "shape"))
    assert similar.tolist() == [
        [False, False, True, False, False],
        [False, False, False, True, False],
        [True, False, False, False, False],
        [False, True, False, False, False],
        [False, False, False, False, False],
    ]


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def brute_outcomes(gts, dets, label, similar):
    """One class's outcomes by loops: the devkit's matching detection by detection (best IoU of
    its own class, difficult ignored, first claim wins), then the type of each false positive."""
    ranked = sorted(
        [
            (float(s), image, [float(v) for v in box])
            for image, d in dets.items()
            for box, s, la in zip(
                d.boxes.tolist(), d.scores.tolist(), d.labels.tolist(), strict=True
            )
            if la == label
        ],
        key=lambda item: -item[0],
    )  # stable: ties keep the input order, as the package does
    taken = {image: set() for image in gts}
    outcomes = []
    for _, image, box in ranked:
        objects = gts[image]
        best, best_j = -1.0, -1
        for j, (la, gt_box, _) in enumerate(objects):
            if la == label and iou(box, gt_box) > best:
                best, best_j = iou(box, gt_box), j
        if best >= 0.5 and objects[best_j][2]:
            continue  # difficult: ignored
        if best >= 0.5 and best_j not in taken[image]:
            taken[image].add(best_j)
            outcomes.append(CORRECT)
            continue
        touched = {LOC: False, SIM: False, OTH: False}
        for la, gt_box, _ in objects:
            if iou(box, gt_box) >= 0.1:
                kind = LOC if la == label else SIM if similar[label][la] else OTH
                touched[kind] = True
        outcomes.append(next((k for k in (LOC, SIM, OTH) if touched[k]), BG))
    return outcomes


@pytest.mark.parametrize("seed", range(40))
def test_outcomes_equal_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    gts, _, dets, _ = random_split(rng)
    for image, d in dets.items():  # distinct scores: a tie's order is the matcher's to choose
        dets[image] = dets_of(
            [
                (la, s + 1e-3 * rng.random(), b)
                for b, s, la in zip(
                    d.boxes.tolist(), d.scores.tolist(), d.labels.tolist(), strict=True
                )
            ]
        )
    dataset = dataset_of(gts)
    groups = (("a", "b"),)
    similar = similar_classes(dataset.class_names, groups).tolist()
    analysis = analyze_errors(dets, dataset, groups=groups)
    for label, name in enumerate(dataset.class_names):
        assert analysis[name].outcomes.tolist() == brute_outcomes(gts, dets, label, similar)
        positives = sum(la == label and not d for objs in gts.values() for la, _, d in objs)
        assert analysis[name].num_positives == positives


def test_bad_low_iou_and_an_image_outside_the_split_are_errors():
    dataset, dets, _ = hand_split()
    with pytest.raises(DetectError, match="low_iou"):
        analyze_errors(dets, dataset, low_iou=0.6)
    with pytest.raises(DetectError, match="'x'"):
        analyze_errors({**dets, "x": dets["0"]}, dataset)


def test_files_table_json_and_png(tmp_path):
    dataset, dets, _ = hand_split()
    analysis = analyze_errors(dets, dataset)
    json_path, md_path, png = save_error_analysis(analysis, tmp_path / "eval")
    table = format_error_table(analysis).splitlines()
    assert table[2] == "| cat | 1 | 0 | 0 | 1 | 0 | 0 | 9 | 44% | 22% | 11% | 22% |"
    assert table[-1] == "| all | 4 | 0 | 0 | 1 | 0 | 0 | 9 | 44% | 22% | 11% | 22% |"
    assert md_path.read_text().rstrip().endswith(table[-1])
    payload = json.loads(json_path.read_text())
    cat = payload["classes"]["cat"]
    assert cat["all"] == {"correct": 1, "loc": 4, "sim": 2, "oth": 1, "bg": 2}
    assert cat["fp_curve"] == {
        "false_positives": [1, 2, 4, 8, 9],
        "loc": [0, 1, 1, 4, 4],
        "sim": [1, 1, 2, 2, 2],
        "oth": [0, 0, 1, 1, 1],
        "bg": [0, 0, 0, 1, 2],
    }
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_ground_truth_and_no_detections():
    annotation = Annotation("0", Path("0.jpg"), 10, 10, np.zeros((0, 4)), [])
    dataset = DetectionDataset("t", Path("."), "test", NAMES, [annotation])
    analysis = analyze_errors({}, dataset)
    assert all(c.outcomes.size == 0 and c.num_positives == 0 for c in analysis.values())
    assert "| all | 0 | 0 | 0 | 0 | 0 | 0 | 0 | - | - | - | - |" in format_error_table(analysis)


def test_the_figure_samples_long_curves_on_the_log_axis_keeping_both_ends():
    from detect.evaluation.error_analysis import _sampled

    outcomes = np.resize(np.array([LOC, BG, SIM]), 5000)
    n, fractions = fp_type_fractions(outcomes)
    kept_n, kept = _sampled(n, fractions)
    assert 200 < kept_n.size <= 400 and kept_n[0] == 1 and kept_n[-1] == 5000
    assert np.all(np.diff(kept_n) > 0)
    np.testing.assert_array_equal(kept, fractions[kept_n - 1])
    assert _sampled(n[:10], fractions[:10])[0].tolist() == list(range(1, 11))
