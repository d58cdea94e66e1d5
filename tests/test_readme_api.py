"""The README's "Use it from Python" block, run exactly as written.

The block's relative paths are made to exist instead of being substituted: it runs in a temporary
folder holding a tiny checkpoint at ``runs/demo/spp/checkpoint.pt``, a generated ``photo.jpg`` and
a ``photos/`` folder of two more.
"""

import re
from pathlib import Path

import numpy as np
import torch

from detect.config import Config, ModelConfig, ProposalConfig
from detect.data.images import read_image, write_image
from detect.evaluation.detections_json import read_detections_json
from detect.models import build_detector
from detect.training.checkpoint import save_checkpoint

README = Path(__file__).resolve().parent.parent / "README.md"
CLASSES = ("circle", "square")


def python_block(section: str) -> str:
    """The first ```python block of the README section titled ``section``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    match = re.search(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.DOTALL)
    assert match, f"no python block in README section {section!r}"
    return match.group(1)


def photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (96, 128, 3)).astype(np.uint8)
    image[20 + seed : 70, 30 : 90 - seed] = (220, 30, 30)
    return image


def test_readme_python_block_runs_as_written(tmp_path, monkeypatch, capsys):
    config = Config(
        model=ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16)),
        proposals=ProposalConfig(max_proposals=20),
    )
    checkpoint = tmp_path / "runs" / "demo" / "spp" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    save_checkpoint(checkpoint, build_detector("spp", config.model, 2), CLASSES, config)
    write_image(tmp_path / "photo.jpg", photo(0))
    for k in (1, 2):
        write_image(tmp_path / "photos" / f"p{k}.jpg", photo(k))
    monkeypatch.chdir(tmp_path)

    block = python_block("Use it from Python")
    assert 'Detector.from_checkpoint("runs/demo/spp/checkpoint.pt")' in block
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code

    result = namespace["result"]
    assert result.class_names == CLASSES and result.boxes.shape[1] == 4
    assert len(result.scores) == len(result.labels) == result.boxes.shape[0] > 0
    class_names, images = read_detections_json(tmp_path / "photo.json")
    assert class_names == CLASSES and list(images) == ["photo"]
    torch.testing.assert_close(images["photo"].boxes, result.boxes, atol=0.005, rtol=0)
    assert read_image(tmp_path / "photo_annotated.jpg").shape == (96, 128, 3)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["p1", "p2"]


def test_the_block_shows_the_whole_api():
    block = python_block("Use it from Python")
    for line in (
        "from detect import Detector",
        "result.boxes, result.scores, result.labels, result.class_names",
        'result.to_json("photo.json")',
        'result.draw("photo_annotated.jpg")',
        "for r in det.predict(paths):",
    ):
        assert line in block
