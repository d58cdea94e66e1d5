"""Proposals computed ahead in worker processes (Detector.predict, detect run) give the results of
detecting each image on its own, proposals computed in this process."""

import json

import numpy as np
import pytest
import torch
from _tiny_model import red_box_scene, save_tiny_checkpoint

from detect import Detector, cpu_threads
from detect.cli import main
from detect.data.images import write_image

# Selective search on the 100x140 scenes at their own size (the default 500 px is 10x slower).
SEARCH_AT_IMAGE_SIZE = ["proposals.resize_long_side=140"]


def scenes(folder, count=3):
    """``count`` variants of the red-box scene (shifted, noisier) as PNGs in ``folder``."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        image = np.roll(red_box_scene(), 7 * i, axis=1)
        image = np.clip(image + rng.integers(0, 20 * i + 1, image.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"scene{i}.png")
        write_image(paths[-1], image)
    return paths


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("overlap")
    checkpoint = save_tiny_checkpoint(folder / "model.pt")
    det = Detector.from_checkpoint(
        checkpoint, device="cpu", score_threshold=0.0, overrides=SEARCH_AT_IMAGE_SIZE
    )
    return folder, checkpoint, det, scenes(folder)


def test_predict_with_workers_equals_each_image_alone(setup):
    _, _, det, paths = setup
    alone = [det(path) for path in paths]  # proposals computed here, one image at a time
    assert sum(len(r.scores) for r in alone) > 0
    arrays = [r.image for r in alone]
    for images in (paths, iter(arrays)):  # files read by the workers; arrays sent to them
        overlapped = list(det.predict(images, progress=False, workers=2))
        assert len(overlapped) == len(alone)
        for got, want in zip(overlapped, alone, strict=True):
            assert torch.equal(got.boxes, want.boxes) and torch.equal(got.scores, want.scores)
            assert torch.equal(got.labels, want.labels)
        if images is paths:
            assert [r.image_id for r in overlapped] == [p.stem for p in paths]


def test_detect_run_with_workers_writes_each_images_own_detections(setup, tmp_path, capsys):
    folder, checkpoint, det, paths = setup
    out = tmp_path / "out"
    args = ["run", "--checkpoint", str(checkpoint), *map(str, paths), "--out", str(out)]
    args += ["--set", "proposals.workers=2", "--set", "test.score_threshold=0.0"]
    args += ["--set", SEARCH_AT_IMAGE_SIZE[0]]
    assert main(args) == 0
    assert "images/s end to end (proposals included)" in capsys.readouterr().out
    for path in paths:
        written = json.loads((out / f"{path.stem}.json").read_text())["detections"]
        alone = det(path)
        assert len(written) == len(alone.scores)
        np.testing.assert_allclose([d["score"] for d in written], alone.scores, rtol=1e-6)
        np.testing.assert_allclose([d["box"] for d in written], alone.boxes, atol=1e-4)


def test_torch_threads_leave_the_workers_cores_and_come_back(monkeypatch):
    monkeypatch.setattr(cpu_threads, "physical_cores", lambda: 4)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        for workers, inside in [(0, 4), (1, 3), (2, 2), (6, 1)]:
            with cpu_threads.beside_workers(workers) as threads:
                assert threads == inside == torch.get_num_threads()
            assert torch.get_num_threads() == 4
        torch.set_num_threads(2)  # never more threads than before
        with cpu_threads.beside_workers(1):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
