"""Drawing and plotting: right shapes and files, boxes drawn where the continuous coordinates say."""

import numpy as np
import pytest

from detect.data.images import read_image
from detect.errors import DetectError
from detect.structures import Annotation, Detections
from detect.visualize import (
    class_colour,
    draw_detections,
    make_grid,
    plot_curves,
    plot_loss_curve,
    plot_pr_curves,
)

NAMES = ("circle", "triangle", "square")


def _grey(height=100, width=120):
    return np.full((height, width, 3), 90, np.uint8)


def test_draw_detections_draws_on_the_box_border_only():
    image = _grey()
    # box over pixel columns 30..69 and rows 40..79 (continuous xyxy)
    detections = Detections([[30.0, 40.0, 70.0, 80.0], [5.0, 5.0, 20.0, 20.0]], [0.9, 0.2], [1, 2])
    out = draw_detections(image, detections, NAMES, score_threshold=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 90).all()  # the input is not modified
    colour = class_colour(1)
    assert tuple(out[60, 30]) == colour and tuple(out[60, 69]) == colour  # left / right columns
    assert tuple(out[79, 50]) == colour  # bottom row (x2, y2 exclusive: last pixel is 79)
    assert tuple(out[60, 29]) == (90, 90, 90) and tuple(out[60, 70]) == (90, 90, 90)
    assert tuple(out[80, 50]) == (90, 90, 90)
    assert tuple(out[60, 50]) == (90, 90, 90)  # inside stays untouched
    # the 0.2-score detection is below the threshold: nothing drawn there
    assert (out[5:20, 5:20] == 90).all()
    # the label tag sits above the box, in the class colour
    assert (out[30:40, 30:70] != 90).any()


def test_draw_detections_ground_truth_dashed_and_difficult_grey():
    image = _grey()
    truth = Annotation(
        "x",
        "x.jpg",
        120,
        100,
        [[10.0, 50.0, 50.0, 90.0], [60.0, 10.0, 100.0, 40.0]],
        [0, 2],
        [False, True],
    )
    out = draw_detections(image, Detections.empty(), NAMES, ground_truth=truth)
    top_row = out[50, 10:50]
    drawn = (top_row == class_colour(0)).all(axis=1)
    assert 0.3 < drawn.mean() < 0.8  # dashed: partly drawn
    assert ((top_row == class_colour(0)).all(axis=1) | (top_row == 90).all(axis=1)).all()
    assert tuple(out[10, 60]) == (160, 160, 160)  # difficult ground truth in grey


def test_draw_detections_rejects_non_rgb():
    with pytest.raises(DetectError):
        draw_detections(np.zeros((10, 10), np.uint8), Detections.empty(), NAMES)


def test_make_grid_places_images():
    images = [
        np.full((10, 20, 3), 1, np.uint8),
        np.full((15, 10, 3), 2, np.uint8),
        np.full((5, 5, 3), 3, np.uint8),
    ]
    grid = make_grid(images, cols=2, pad=4, fill=255)
    assert grid.shape == (2 * (15 + 4) + 4, 2 * (20 + 4) + 4, 3)
    assert (grid[4:14, 4:24] == 1).all()
    assert (grid[4:19, 28:38] == 2).all()
    assert (grid[23:28, 4:9] == 3).all()
    assert grid[0, 0, 0] == 255 and grid[14, 4, 0] == 255
    with pytest.raises(DetectError):
        make_grid([], cols=2)


def test_plot_pr_curves_writes_png(tmp_path):
    recall = {
        "circle": np.linspace(0, 1, 20),
        "triangle": np.linspace(0, 0.5, 10),
        "square": np.array([]),
    }
    precision = {"circle": np.linspace(1, 0.5, 20), "triangle": np.ones(10), "square": np.array([])}
    ap = {"circle": 0.8, "triangle": 0.5, "square": 0.0}
    path = plot_pr_curves(precision, recall, ap, tmp_path / "sub" / "pr.png", "test")
    image = read_image(path)
    assert image.shape == (480, 640, 3)
    assert image.std() > 5  # not blank


def test_plot_curves_and_length_check(tmp_path):
    x = [10, 100, 1000, 2000]
    path = plot_curves(
        x,
        {"IoU 0.5": [0.2, 0.6, 0.9, 0.95], "IoU 0.7": [0.1, 0.4, 0.7, 0.8]},
        tmp_path / "recall.png",
        "proposals",
        "recall",
        "proposal recall",
        logx=True,
    )
    assert read_image(path).shape == (480, 640, 3)
    with pytest.raises(DetectError, match="3 values"):
        plot_curves(x, {"bad": [1, 2, 3]}, tmp_path / "bad.png", "x", "y", "t")


def test_plot_loss_curve_from_csv_and_lists(tmp_path):
    log = tmp_path / "log.csv"
    rows = ["iteration,loss,loss_cls,lr"] + [
        f"{i},{2.0 / (i + 1)},{1.0 / (i + 1)},0.01" for i in range(50)
    ]
    log.write_text("\n".join(rows) + "\n")
    assert read_image(plot_loss_curve(log, tmp_path / "loss.png")).shape == (400, 640, 3)
    columns = {"iteration": [0, 1, 2], "loss": [3.0, 2.0, 1.0]}
    assert read_image(plot_loss_curve(columns, tmp_path / "loss2.png")).shape == (400, 640, 3)
    log.write_text("iteration,loss\n0,abc\n")
    with pytest.raises(DetectError, match="line 2"):
        plot_loss_curve(log, tmp_path / "loss3.png")
    with pytest.raises(DetectError, match="columns"):
        plot_loss_curve({"step": [1]}, tmp_path / "loss4.png")
