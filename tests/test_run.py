"""`detect run` on a folder with a readable image and an unreadable file."""

import json

import numpy as np

from detect.cli import main
from detect.config import Config, ModelConfig, ProposalConfig
from detect.data.images import write_image
from detect.models import build_detector
from detect.training.checkpoint import save_checkpoint


def test_run_writes_json_and_drawing_and_skips_unreadable(tmp_path, capsys):
    config = Config(
        model=ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16), rcnn_context=4),
        proposals=ProposalConfig(cache_dir=str(tmp_path / "cache"), max_proposals=30),
    )
    model = build_detector("spp", config.model, 2)
    save_checkpoint(tmp_path / "model.pt", model, ("circle", "square"), config)
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (100, 140, 3)).astype(np.uint8)
    image[20:70, 30:90] = (220, 30, 30)
    write_image(images / "scene.png", image)
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    status = main(
        ["run", "--checkpoint", str(tmp_path / "model.pt"), str(images), "--out", str(out)]
    )
    assert status == 0
    payload = json.loads((out / "scene.json").read_text())
    assert payload["classes"] == ["circle", "square"]
    assert (payload["width"], payload["height"]) == (140, 100)
    assert all(0 <= d["box"][0] <= d["box"][2] <= 140 for d in payload["detections"])
    assert (out / "scene.jpg").is_file() and not (out / "broken.json").exists()
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "1 image(s) processed, 1 skipped" in captured.out
