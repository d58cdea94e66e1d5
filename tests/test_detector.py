"""The Python API (detect.Detector): same detections as the model's own test-time path, every
input kind, the options, the result's files, and bad input named in one line."""

import numpy as np
import pytest
import torch
from _tiny_model import red_box_scene, save_tiny_checkpoint
from PIL import Image
from torch import nn

from detect import Detector
from detect.checkpoints import load_checkpoint
from detect.data.images import read_image, write_image
from detect.errors import DetectError
from detect.evaluation.detections_json import read_detections_json
from detect.proposals.search import selective_search

CLASSES = ("circle", "square")
PROPOSALS = torch.tensor(
    [[30.0, 20.0, 90.0, 70.0], [0.0, 0.0, 140.0, 100.0], [25.0, 15.0, 95.0, 75.0], [5, 5, 40, 30]]
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    torch.manual_seed(3)
    return save_tiny_checkpoint(folder / "model.pt", CLASSES)


def lower_level(path, image, proposals, **load_options):
    """The detections of the checkpoint's model, loaded and run without the API."""
    loaded = load_checkpoint(path, **load_options)
    return loaded.model.detect(image, proposals, loaded.config.test, loaded.scorer)


def assert_same(result, detections):
    torch.testing.assert_close(result.boxes, detections.boxes)
    torch.testing.assert_close(result.scores, detections.scores)
    assert torch.equal(result.labels, detections.labels)


def test_detections_equal_the_model_path_for_every_input_kind(checkpoint, tmp_path):
    det = Detector.from_checkpoint(checkpoint, device="cpu")
    image = red_box_scene()
    expected = lower_level(checkpoint, image, PROPOSALS)
    assert len(expected) > 0
    write_image(tmp_path / "scene.png", image)
    for given in (
        image,
        Image.fromarray(image),
        tmp_path / "scene.png",
        str(tmp_path / "scene.png"),
    ):
        result = det(given, proposals=PROPOSALS)
        assert_same(result, expected)
        assert result.class_names == CLASSES and det.method == "spp"
    assert det(tmp_path / "scene.png", proposals=PROPOSALS).image_id == "scene"
    assert det(image, proposals=PROPOSALS).image_id == "image"
    # A grey PIL image is converted to RGB, as the file reader does.
    grey = Image.fromarray(image).convert("L")
    assert_same(
        det(grey, proposals=PROPOSALS),
        lower_level(checkpoint, np.asarray(grey.convert("RGB")), PROPOSALS),
    )


def test_proposals_are_selective_search_with_the_checkpoints_settings(checkpoint):
    det = Detector.from_checkpoint(checkpoint, device="cpu")
    image = red_box_scene()
    boxes = selective_search(image, max_proposals=30)  # ProposalConfig's other defaults
    assert boxes.shape[0] > 0
    assert_same(det(image), lower_level(checkpoint, image, boxes))


def test_method_scales_svd_and_threshold_options(checkpoint):
    image = red_box_scene()
    rcnn = Detector.from_checkpoint(checkpoint, method="rcnn", device="cpu")
    assert rcnn.method == "rcnn"
    assert_same(rcnn(image, PROPOSALS), lower_level(checkpoint, image, PROPOSALS, method="rcnn"))

    scaled = Detector.from_checkpoint(checkpoint, scales=[64, 128], device="cpu")
    assert scaled.config.test.scales == (64, 128)  # the test scales; training's stay
    assert scaled.model.cfg.scales != (64, 128)
    assert_same(
        scaled(image, PROPOSALS),
        lower_level(checkpoint, image, PROPOSALS, overrides=["model.scales=[64, 128]"]),
    )

    compressed = Detector.from_checkpoint(checkpoint, svd=[8, 4], device="cpu")
    first, second = compressed.model.head.fcs[:2]
    assert isinstance(first, nn.Sequential) and first[0].out_features == 8
    assert isinstance(second, nn.Sequential) and second[0].out_features == 4

    # A threshold keeps the default's detections scoring above it (NMS only suppresses a box
    # for a higher-scoring one, which passes the threshold too).
    everything = Detector.from_checkpoint(checkpoint, device="cpu")(image, PROPOSALS)
    cut = float(everything.scores.median())
    kept = Detector.from_checkpoint(checkpoint, score_threshold=cut, device="cpu")(image, PROPOSALS)
    above = everything.scores > cut
    assert 0 < len(kept.scores) < len(everything.scores)
    torch.testing.assert_close(kept.scores, everything.scores[above])
    torch.testing.assert_close(kept.boxes, everything.boxes[above])


def test_result_files_and_predict(checkpoint, tmp_path):
    det = Detector.from_checkpoint(checkpoint, device="cpu")
    paths = []
    for k in range(2):
        image = np.roll(red_box_scene(), 10 * k, axis=1)
        write_image(tmp_path / f"photo{k}.png", image)
        paths.append(tmp_path / f"photo{k}.png")
    result = det(paths[0], PROPOSALS)
    written = result.to_json(tmp_path / "photo0.json")
    class_names, images = read_detections_json(written)  # the reader `detect score` uses
    assert class_names == CLASSES and list(images) == ["photo0"]
    torch.testing.assert_close(images["photo0"].boxes, result.boxes, atol=0.005, rtol=0)
    torch.testing.assert_close(images["photo0"].scores, result.scores, atol=5e-7, rtol=0)

    drawn = read_image(result.draw(tmp_path / "drawn.png", score_threshold=0.0))
    original = read_image(paths[0])
    assert drawn.shape == original.shape
    x1, y1 = (int(v) for v in result.boxes[0, :2].round())
    assert not np.array_equal(drawn, original)
    assert np.any(drawn[max(y1 - 1, 0) : y1 + 2, x1] != original[max(y1 - 1, 0) : y1 + 2, x1])

    results = list(det.predict(paths, progress=False))
    assert [r.image_id for r in results] == ["photo0", "photo1"]
    for path, r in zip(paths, results, strict=True):
        image = read_image(path)
        assert_same(r, lower_level(checkpoint, image, selective_search(image, max_proposals=30)))


def test_bad_input_is_one_line_naming_it(checkpoint, tmp_path):
    det = Detector.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(
        DetectError, match=r"image: expected .*\(H, W, 3\) uint8.*got ndarray \(5, 5\)"
    ):
        det(np.zeros((5, 5), dtype=np.uint8))
    with pytest.raises(DetectError, match="got ndarray .*float64"):
        det(np.zeros((5, 5, 3)))
    missing = tmp_path / "missing.jpg"
    with pytest.raises(DetectError, match=str(missing)):
        det(missing)
    with pytest.raises(DetectError, match="device: not a torch device: 'toaster'"):
        Detector.from_checkpoint(checkpoint, device="toaster")
    with pytest.raises(DetectError, match="checkpoint .*nope.pt"):
        Detector.from_checkpoint(tmp_path / "nope.pt")


def test_auto_device_is_an_available_one(checkpoint):
    det = Detector.from_checkpoint(checkpoint)  # device="auto"
    if torch.cuda.is_available():
        assert det.device.type == "cuda"
    elif torch.backends.mps.is_available():
        assert det.device.type == "mps"
    else:
        assert det.device.type == "cpu"
    assert det(red_box_scene(), PROPOSALS).boxes.device.type == "cpu"
