"""Dense proposals against independent computations: windows enumerated by a loop, k-means against
scikit-learn, objectness against pixel slices, and solid rectangles found first."""

import numpy as np
import pytest
from proposals_testdata import RECTANGLES, synthetic_dataset, synthetic_image
from sklearn.cluster import KMeans

from detect.config import ProposalConfig
from detect.errors import DetectError
from detect.proposals.dense import (
    colour_integral,
    dense_boxes,
    fit_window_shapes,
    kmeans,
    kmeans_plus_plus,
    local_maxima,
    ring_contrast,
    window_grid,
    with_window_shapes,
)
from detect.proposals.ranking import box_iou_np


@pytest.mark.parametrize("shape, stride", [((10, 6), 0.25), ((7.4, 12.6), 0.1), ((3, 3), 0.2)])
def test_window_grid_matches_a_loop(shape, stride):
    width, height = 37, 29
    box_w, box_h = round(shape[0]), round(shape[1])
    expected = []
    y = 0.0
    rows = set()
    while y <= height - box_h + 1e-9:
        rows.add(round(y))
        y += max(1.0, stride * shape[1])
    cols = set()
    x = 0.0
    while x <= width - box_w + 1e-9:
        cols.add(round(x))
        x += max(1.0, stride * shape[0])
    expected = [[x, y, x + box_w, y + box_h] for y in sorted(rows) for x in sorted(cols)]
    grid = window_grid(width, height, shape, stride)
    assert grid.shape == (len(rows), len(cols), 4)
    assert grid.reshape(-1, 4).tolist() == expected
    assert window_grid(10, 10, (11, 4), 0.5).size == 0  # wider than the image


def test_kmeans_matches_scikit_learn_from_the_same_start():
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.normal(c, 0.3, (40, 2)) for c in ([0, 0], [3, 1], [1, 4])])
    start = kmeans_plus_plus(points, 3, np.random.default_rng(0))
    centres, labels = kmeans(points, start)
    reference = KMeans(3, init=start, n_init=1, algorithm="lloyd", tol=0.0).fit(points)
    np.testing.assert_allclose(centres, reference.cluster_centers_, atol=1e-9)
    assert labels.tolist() == reference.labels_.tolist()


def test_window_shapes_are_the_box_shape_clusters():
    sizes = np.array([[16, 16]] * 5 + [[17, 15]] * 5 + [[60, 30]] * 6 + [[31, 62]] * 6, float)
    shapes = fit_window_shapes(sizes, 3)
    expected = [np.exp(np.log([[16, 16], [17, 15]]).mean(axis=0)), [60, 30], [31, 62]]
    np.testing.assert_allclose(shapes, np.round(expected, 1))
    assert fit_window_shapes(sizes[:5], 4).tolist() == [[16.0, 16.0]]  # one distinct size
    with pytest.raises(DetectError, match="no training boxes"):
        fit_window_shapes(np.zeros((0, 2)), 3)


def test_ring_contrast_matches_pixel_slices():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (23, 31, 3)).astype(np.uint8)
    import cv2

    lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab).astype(np.float64)
    boxes = np.array([[3, 4, 12, 10], [0, 0, 5, 7], [20, 15, 31, 23], [0, 0, 31, 23]])
    got = ring_contrast(colour_integral(image), boxes, 0.25)
    for (x1, y1, x2, y2), value in zip(boxes, got, strict=True):
        mx, my = max(1, round(0.25 * (x2 - x1))), max(1, round(0.25 * (y2 - y1)))
        outer = np.zeros(lab.shape[:2], bool)
        outer[max(y1 - my, 0) : y2 + my, max(x1 - mx, 0) : x2 + mx] = True
        inner = np.zeros_like(outer)
        inner[y1:y2, x1:x2] = True
        ring = outer & ~inner
        expected = 0.0 if not ring.any() else np.linalg.norm(lab[inner].mean(0) - lab[ring].mean(0))
        assert value == pytest.approx(expected, abs=1e-9)


def test_local_maxima_by_hand():
    scores = np.array([[1, 2, 1, 0], [0, 1, 0, 5], [3, 0, 0, 4]], float)
    expected = [
        [False, True, False, False],
        [False, False, False, True],
        [True, False, False, False],
    ]
    assert local_maxima(scores).tolist() == expected


def test_solid_rectangles_are_found_first():
    image, truth = synthetic_image(0)
    shapes = [(x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in RECTANGLES] + [(20, 20)]
    boxes = dense_boxes(image, shapes, stride=0.05, ring=0.1, nms_iou=0.5, max_proposals=30)
    assert boxes.dtype == np.float32 and boxes.shape[1] == 4 and len(boxes) <= 30
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= image.shape[1]).all()
    assert (boxes[:, 3] <= image.shape[0]).all()
    # each rectangle is among the first boxes, nearly exactly
    assert (box_iou_np(truth.numpy(), boxes[:5]).max(axis=1) > 0.9).all()
    kept = box_iou_np(boxes, boxes)
    assert (kept[np.triu_indices(len(boxes), 1)] <= 0.5).all()


def test_bad_settings_name_the_key():
    image = synthetic_image(0)[0]
    for settings, message in [
        ({"shapes": []}, r"proposals.dense_shapes must be non-empty"),
        ({"shapes": [(4, 0)]}, r"proposals.dense_shapes must be \(width, height\) pairs > 0"),
        ({"shapes": [(4, 4)], "stride": 0}, r"proposals.dense_stride must be in \(0, 1\]"),
        ({"shapes": [(4, 4)], "ring": 2}, r"proposals.dense_ring must be in \(0, 1\]"),
    ]:
        with pytest.raises(DetectError, match=message):
            dense_boxes(image, **settings)


def test_shapes_fitted_to_a_dataset(tmp_path):
    dataset = synthetic_dataset(tmp_path, 2)
    cfg = with_window_shapes(ProposalConfig(method="dense", dense_num_shapes=3), dataset)
    sizes = [(x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in RECTANGLES]
    assert sorted(cfg.dense_shapes) == sorted((float(w), float(h)) for w, h in sizes)
    untouched = ProposalConfig(method="dense", dense_shapes=((5.0, 5.0),))
    assert with_window_shapes(untouched, dataset) is untouched
    assert with_window_shapes(ProposalConfig(), dataset) == ProposalConfig()
