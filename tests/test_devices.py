"""Devices and precision (``--device`` / ``--precision``, ``runtime.*``, :mod:`detect.runtime`):
one-line errors for a device or precision this machine lacks, a tiny run end to end through
``detect train`` / ``eval`` / ``run`` on the CPU, bf16 autocast against float32 on the same
checkpoint, channels_last against NCHW, float32 CPU weights in checkpoints, and a checkpoint's
saved runtime section ignored when it is loaded."""

import pytest
import torch
import yaml
from _tiny_model import red_box_scene, save_tiny_checkpoint
from _train_data import ctrl_c_after, make_tiny_voc, tiny_config, tiny_config_dict
from torchvision.ops import box_iou

from detect.checkpoints import read_checkpoint
from detect.cli import build_parser, main
from detect.config import Config, ModelConfig, RuntimeConfig
from detect.data.images import write_image
from detect.detector import Detector
from detect.evaluation.detections_json import read_detections_json
from detect.models import build_detector
from detect.models.stage_timer import StageTimer
from detect.training import train
from detect.training.checkpoint import save_checkpoint

# One past the last CUDA device: never on this machine, with or without a GPU.
MISSING_CUDA = f"cuda:{torch.cuda.device_count()}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny SPP-net trained 30 iterations by ``detect train --device cpu`` (confident enough
    that NMS keeps the same boxes in bf16): its run folder."""
    root = tmp_path_factory.mktemp("run")
    config = root / "tiny.yaml"
    values = tiny_config_dict(data, iterations=30, lr=0.05, lr_steps=[], checkpoint_every=30)
    values["runtime"] = {"device": MISSING_CUDA}  # --device, given later, wins
    config.write_text(yaml.safe_dump(values))
    args = ["train", "--config", str(config), "--out", str(root / "run"), "--device", "cpu"]
    assert main(args) == 0
    return root / "run"


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"detect {command}: error: "), err
    return err[0]


def test_device_and_precision_options_fold_into_the_overrides_in_order():
    parser = build_parser(["eval"])
    args = parser.parse_args(
        ["eval", "--checkpoint", "c.pt", "--set", "runtime.device=cuda", "--device", "cpu"]
        + ["--precision", "bf16", "--set", "test.nms_iou=0.4"]
    )
    assert args.overrides == [
        "runtime.device=cuda",
        "runtime.device=cpu",
        "runtime.precision=bf16",
        "test.nms_iou=0.4",
    ]
    assert parser.parse_args(["eval", "--checkpoint", "c.pt"]).overrides == []
    required = {"train": [], "run": ["--checkpoint", "c.pt", "x.jpg"], "demo": []}
    for command, args in required.items():
        options = ["--device", "cuda:1", "--precision", "fp16"]
        parsed = build_parser([command]).parse_args([command, *args, *options])
        assert parsed.overrides == ["runtime.device=cuda:1", "runtime.precision=fp16"], command
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["eval", "--checkpoint", "c.pt", "--precision", "fp8"])
    assert exit_info.value.code == 2


def test_missing_device_or_precision_is_one_line_and_exit_2(data, tmp_path, capsys):
    checkpoint = save_tiny_checkpoint(tmp_path / "c.pt", cache_dir=tmp_path / "cache")
    write_image(tmp_path / "images" / "scene.png", red_box_scene())
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(data)))
    commands = {
        "eval": ["eval", "--checkpoint", str(checkpoint), "--data", str(data / "voc")],
        "run": ["run", "--checkpoint", str(checkpoint), str(tmp_path / "images")],
        "train": ["train", "--config", str(config), "--out", str(tmp_path / "never")],
    }
    cases = [
        (["--device", MISSING_CUDA], f"runtime.device: '{MISSING_CUDA}' is not available here"),
        (["--device", "tpu"], "runtime.device: not a torch device: 'tpu'"),
        (["--device", "cpu", "--precision", "fp16"], "runtime.precision: fp16 needs a GPU"),
        (["--set", "runtime.precision=fp8"], "runtime.precision must be one of fp32, bf16, fp16"),
        (["--set", "runtime.num_workers=-1"], "runtime.num_workers must be >= 0"),
    ]
    for command, args in commands.items():
        out = ["--out", str(tmp_path / "out")] if command != "train" else []
        for options, message in cases:
            assert main([*args, *out, *options]) == 2, (command, options)
            assert message in one_error_line(capsys, command), (command, options)
    assert not (tmp_path / "never").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_train_eval_run_on_the_cpu_and_bf16_detections_close_to_fp32(
    trained, data, tmp_path, capsys
):
    saved = yaml.safe_load((trained / "config.yaml").read_text())
    assert saved["runtime"]["device"] == "cpu"  # --device cpu replaced the file's device
    checkpoint = str(trained / "checkpoint.pt")
    # The saved runtime is not the loading command's: eval runs on --device (default auto).
    found = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["eval", "--checkpoint", checkpoint, "--out", str(out), "--device", "cpu"]
        assert main([*args, "--precision", precision]) == 0
        classes, found[precision] = read_detections_json(out / "detections.json")
    assert "mean" in capsys.readouterr().out
    # Every confident float32 detection is found in bf16: same class, IoU >= 0.95 with a box of
    # the same class (torchvision's IoU), score within 0.02; and bf16 did change the numbers.
    matched, differs = 0, False
    for image_id, reference in found["fp32"].items():
        other = found["bf16"][image_id]
        differs |= not torch.equal(reference.scores, other.scores)
        for box, score, label in zip(
            reference.boxes, reference.scores, reference.labels, strict=True
        ):
            if score < 0.3:
                continue
            same = other.labels == label
            iou = box_iou(box[None], other.boxes[same])[0]
            assert iou.numel() and float(iou.max()) >= 0.95, (image_id, box, score)
            assert float(other.scores[same][iou.argmax()]) == pytest.approx(float(score), abs=0.02)
            matched += 1
    assert matched >= 6 and differs
    images = data / "voc" / "JPEGImages"
    out = tmp_path / "found"
    args = ["run", "--checkpoint", checkpoint, str(images / "0000.png"), str(images / "0001.png")]
    assert main([*args, "--out", str(out), "--device", "cpu", "--precision", "bf16"]) == 0
    assert (out / "0000.json").is_file() and (out / "0001.jpg").is_file()


def test_detector_api_device_and_precision_and_a_saved_runtime_ignored(tmp_path):
    model = build_detector("spp", ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16)), 2)
    # Saved by a run on a GPU machine: a device this one lacks, and fp16.
    config = Config(model=model.cfg, runtime=RuntimeConfig(device=MISSING_CUDA, precision="fp16"))
    save_checkpoint(tmp_path / "gpu.pt", model, ("a", "b"), config)
    det = Detector.from_checkpoint(tmp_path / "gpu.pt", device="cpu", precision="bf16")
    assert det.device == torch.device("cpu") and det.model.precision == "bf16"
    assert det.model.backbone.memory_format == torch.channels_last  # always so in bf16
    det = Detector.from_checkpoint(tmp_path / "gpu.pt", overrides=["runtime.device=cpu"])
    assert det.model.precision == "fp32" and det.config.runtime == RuntimeConfig(device="cpu")


def test_checkpoint_weights_are_float32_on_the_cpu(tmp_path):
    model = build_detector("spp", ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16)), 2)
    reference = {key: value.clone() for key, value in model.state_dict().items()}
    model.to(torch.float64)
    save_checkpoint(tmp_path / "c.pt", model, ("a", "b"), Config(model=model.cfg))
    saved = read_checkpoint(tmp_path / "c.pt")["model"]
    assert set(saved) == set(reference)
    for key, value in saved.items():  # floats in float32, counters as they were
        assert value.dtype == reference[key].dtype and value.device.type == "cpu", key
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    assert sum(value.dtype == torch.float32 for value in saved.values()) > 10


def test_channels_last_off_gives_nchw_convs_and_the_same_scores(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "c.pt")
    proposals = torch.tensor([[30.0, 20, 90, 70], [0, 0, 50, 50], [10, 10, 120, 90]])
    scores = {}
    for channels_last in (True, False):
        det = Detector.from_checkpoint(
            checkpoint,
            device="cpu",
            score_threshold=0.0,
            overrides=[f"runtime.channels_last={channels_last}"],
        )
        conv = next(m for m in det.model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        scores[channels_last], _ = det.model.score_regions(
            red_box_scene(), proposals, det.scorer, det.model.cfg.scales, StageTimer()
        )
    torch.testing.assert_close(scores[True], scores[False], rtol=1e-5, atol=1e-6)


def test_gradient_scaler_steps_save_and_resume(data, tmp_path, monkeypatch):
    """fp16's loss scaling, exercised on the CPU: an enabled scaler in place of fp32's disabled
    one. Scaling the loss by a power of two and unscaling the gradients is exact, so the weights
    are those of a run without it; the scaler's state (its scale doubled every 2 steps) is saved
    with the run and restored on resume."""
    import detect.training.finetune as finetune_module

    scalers = []

    def enabled_scaler(device, precision):
        scalers.append(torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2))
        return scalers[-1]

    cfg = tiny_config(data)  # 6 iterations, checkpoint every 3
    plain = read_checkpoint(train(cfg, out_dir=tmp_path / "plain").checkpoint)["model"]
    monkeypatch.setattr(finetune_module, "grad_scaler", enabled_scaler)
    scaled = read_checkpoint(train(cfg, out_dir=tmp_path / "scaled").checkpoint)["model"]
    assert scalers[-1].get_scale() == 2.0**13  # 6 finite steps: 3 doublings
    for key in plain:
        assert torch.equal(plain[key], scaled[key]), key

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "cut", on_iteration=ctrl_c_after(4))
    payload = read_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert payload["iteration"] == 4 and payload["grad_scaler"]["scale"] == 2.0**12
    resumed = read_checkpoint(train(cfg, out_dir=tmp_path / "cut", resume=True).checkpoint)
    assert scalers[-1].get_scale() == 2.0**13  # from 2**12, not from the initial 2**10
    for key in plain:
        assert torch.equal(plain[key], resumed["model"][key]), key
