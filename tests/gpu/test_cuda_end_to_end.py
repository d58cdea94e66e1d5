"""The end-to-end checks of ``tests/test_devices.py`` on CUDA (``make test-gpu``; skipped, with
the reason, on a machine without a CUDA device): tiny runs trained, evaluated and run on the GPU
in float32, bf16 and fp16 (fp16 training through the gradient scaler, and resumed), the SVM /
ridge and R-CNN paths on the GPU, and the GPU's scores and detections against the CPU's for the
same checkpoint.

On the GPU float32 convolutions may use TF32 and ``roi_pool``'s backward adds with atomics, so
GPU results are compared with the CPU's within tolerances, never bit for bit.
"""

import pytest
import torch
import yaml
from _tiny_model import red_box_scene
from _train_data import ctrl_c_after, make_tiny_voc, tiny_config_dict
from torchvision.ops import box_iou

from detect.checkpoints import read_checkpoint
from detect.cli import main
from detect.config import config_from_dict
from detect.detector import Detector
from detect.evaluation.detections_json import read_detections_json
from detect.models.stage_timer import StageTimer
from detect.training import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False"
    ),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


def write_config(data, path, **finetune):
    """A tiny config (30 iterations, lr 0.05: confident detections) at ``path``, on CUDA."""
    values = tiny_config_dict(data, **{"iterations": 30, "lr": 0.05, "lr_steps": [], **finetune})
    values["runtime"] = {"device": "cuda"}
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """``detect train --device cuda``: the run folder."""
    root = tmp_path_factory.mktemp("run")
    config = write_config(data, root / "tiny.yaml", checkpoint_every=10)
    assert main(["train", "--config", str(config), "--out", str(root / "run")]) == 0
    return root / "run"


def assert_same_detections(reference, other, iou_at_least, score_within, min_matched=4):
    """Every detection of ``reference`` ({image id: Detections}) scoring 0.3 or more has one of
    its class in ``other`` with IoU >= ``iou_at_least`` and a score within ``score_within``."""
    matched = 0
    for image_id, expected in reference.items():
        found = other[image_id]
        for box, score, label in zip(expected.boxes, expected.scores, expected.labels, strict=True):
            if score < 0.3:
                continue
            same = found.labels == label
            iou = box_iou(box[None], found.boxes[same])[0]
            assert iou.numel() and float(iou.max()) >= iou_at_least, (image_id, box, score)
            assert float(found.scores[same][iou.argmax()]) == pytest.approx(
                float(score), abs=score_within
            )
            matched += 1
    assert matched >= min_matched


def test_training_on_cuda_saves_float32_weights_on_the_cpu(trained):
    payload = read_checkpoint(trained / "checkpoint.pt")
    assert payload["stage"] == "done" and payload["iteration"] == 30
    assert payload["config"]["runtime"]["device"] == "cuda"
    floats = [value for value in payload["model"].values() if value.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 and v.device.type == "cpu" for v in floats)
    assert all(torch.isfinite(v).all() for v in floats)


def test_cuda_scores_equal_the_cpu_scores_for_the_same_checkpoint(trained):
    """Per region, before NMS: the GPU's float32 scores and deltas are the CPU's (TF32 aside)."""
    proposals = torch.tensor([[30.0, 20, 90, 70], [0, 0, 50, 50], [10, 10, 120, 90], [5, 5, 9, 9]])
    image = red_box_scene()
    results = {}
    for device in ("cpu", "cuda"):
        det = Detector.from_checkpoint(trained / "checkpoint.pt", device=device)
        assert det.device.type == device
        scale = det.model.cfg.scales
        results[device] = det.model.score_regions(image, proposals, det.scorer, scale, StageTimer())
    for cpu, cuda in zip(results["cpu"], results["cuda"], strict=True):
        assert cuda.device.type == "cpu" and cuda.dtype == torch.float32  # handed back for NMS
        torch.testing.assert_close(cuda, cpu, rtol=0, atol=5e-3)


@pytest.mark.parametrize(
    ("precision", "iou_at_least", "score_within"),
    [("fp32", 0.99, 5e-3), ("bf16", 0.95, 0.03), ("fp16", 0.98, 0.01)],
)
def test_eval_and_run_on_cuda_match_the_cpu(
    trained, data, tmp_path, precision, iou_at_least, score_within
):
    checkpoint = str(trained / "checkpoint.pt")
    found = {}
    for device, chosen in (("cpu", "fp32"), ("cuda", precision)):
        out = tmp_path / device
        args = ["eval", "--checkpoint", checkpoint, "--out", str(out), "--device", device]
        assert main([*args, "--precision", chosen]) == 0
        _classes, found[device] = read_detections_json(out / "detections.json")
    assert_same_detections(found["cpu"], found["cuda"], iou_at_least, score_within)
    images = data / "voc" / "JPEGImages"
    out = tmp_path / "found"
    args = ["run", "--checkpoint", checkpoint, str(images / "0000.png"), str(images / "0001.png")]
    assert main([*args, "--out", str(out), "--device", "cuda", "--precision", precision]) == 0
    assert (out / "0000.json").is_file() and (out / "0001.jpg").is_file()


@pytest.mark.parametrize(
    ("method", "changes"),
    [
        ("spp", ["finetune.mode=fc", "finetune.allow_random_backbone=true"]),
        ("spp", ["svm.enabled=true", "bbox_reg.method=ridge", "test.classifier=svm"]),
        ("rcnn", ["finetune.mode=fc", "finetune.allow_random_backbone=true"]),
        ("rcnn", []),
    ],
)
def test_every_training_path_runs_on_cuda(data, tmp_path, method, changes):
    """fc mode (frozen conv maps), SVMs + ridge (features handed to scikit-learn on the CPU),
    R-CNN crops: trained on the GPU, then evaluated there."""
    config = write_config(data, tmp_path / "tiny.yaml", iterations=3, checkpoint_every=3)
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(run), "--method", method]
    assert main([*args, *[a for change in changes for a in ("--set", change)]]) == 0
    payload = read_checkpoint(run / "checkpoint.pt")
    if "svm.enabled=true" in changes:
        assert payload["svm"] is not None and payload["ridge"] is not None
    ev = ["eval", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "ev")]
    assert main([*ev, "--device", "cuda", "--precision", "bf16"]) == 0


def test_fp16_training_scales_gradients_and_resumes(data, tmp_path):
    values = tiny_config_dict(data, iterations=6, checkpoint_every=3)
    values["runtime"] = {"device": "cuda", "precision": "fp16"}
    cfg = config_from_dict(values, "test config")
    full = train(cfg, out_dir=tmp_path / "full")

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "cut", on_iteration=ctrl_c_after(4))
    payload = read_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert payload["iteration"] == 4
    assert payload["grad_scaler"]["scale"] > 0  # the scaler's state travels with the run
    resumed = train(cfg, out_dir=tmp_path / "cut", resume=True)
    a = read_checkpoint(full.checkpoint)["model"]
    b = read_checkpoint(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    for key in a:  # atomics in the GPU's roi_pool backward: close, not bit-identical
        if a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], rtol=1e-2, atol=1e-3)
