"""`detect train` / `detect eval`: a tiny run end to end and the bad-input cases (exit status 2)."""

import importlib.util
import json
from xml.etree import ElementTree

import pytest
import yaml
from _train_data import make_tiny_voc, tiny_config_dict
from _voc_devkit import brute_voc_eval

from detect.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def config_file(data, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(data, iterations=4)))
    return path


def test_train_then_eval(data, config_file, tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    args = ["train", "--config", str(config_file), "--out", str(run)]
    assert main([*args, "--set", "finetune.log_every=1"]) == 0
    out = capsys.readouterr().out
    assert "trained spp on 6 images (2 classes: red, blue)" in out
    assert "final loss" in out and "checkpoint.pt" in out
    for name in ("checkpoint.pt", "config.yaml", "train_log.csv", "loss.png"):
        assert (run / name).is_file()
    # --set overrides land in the saved config.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["finetune"]["iterations"] == 4 and saved["finetune"]["log_every"] == 1
    assert len((run / "train_log.csv").read_text().splitlines()) == 1 + 4

    args = ["eval", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "ev")]
    assert main([*args, "--max-images", "3", "--metric", "voc10"]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "3 images in" in out and "images/s" in out
    assert "| class | GT | top N: correct | loc | sim | oth | bg |" in out  # false positives
    for name in ("error_analysis.json", "error_analysis.md", "error_analysis.png"):
        assert (tmp_path / "ev" / name).is_file() and name in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    if importlib.util.find_spec("tensorboard"):  # the AP at the checkpoint's iteration
        assert read_scalars(tmp_path / "ev" / "tensorboard", "eval_test/mAP") == [
            (4, pytest.approx(metrics["mAP"]))
        ]
        assert read_scalars(run / "tensorboard", "train/loss")[-1][0] == 4
    assert metrics["metric"] == "voc10" and metrics["num_images"] == 3
    assert set(metrics["ap"]) == {"red", "blue"}
    assert (tmp_path / "ev" / "comp4" / "comp4_det_test_red.txt").is_file()
    assert (tmp_path / "ev" / "pr_curves.png").is_file()
    # Over the whole split, the mAP eval reports is that of the devkit's loop run by hand on the
    # comp4 files it wrote and the annotation XML; `detect score` on those files agrees.
    full = tmp_path / "full"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(full)]) == 0
    reported = json.loads((full / "metrics.json").read_text())
    assert reported["metric"] == "voc07" and reported["num_images"] == 6
    by_hand = devkit_map(data / "voc", full / "comp4", ("red", "blue"))
    assert by_hand > 0.0  # some detections are true positives: matching is exercised
    assert reported["mAP"] == pytest.approx(by_hand, abs=1e-6)
    score_json = tmp_path / "score.json"
    score = ["score", "--gt", str(data / "voc"), "--split", "test", "--classes", "red", "blue"]
    score += ["--detections", str(full / "comp4"), "--json", str(score_json)]
    assert main(score) == 0
    assert json.loads(score_json.read_text())["mAP"] == pytest.approx(by_hand, abs=1e-6)
    # ... and so does `detect score` on the folder eval wrote (its detections.json).
    score = [
        "score",
        "--gt",
        str(data / "voc"),
        "--detections",
        str(full),
        "--json",
        str(score_json),
    ]
    assert main(score) == 0
    assert json.loads(score_json.read_text())["mAP"] == pytest.approx(by_hand, abs=1e-6)


def read_scalars(folder, tag):
    """(step, value) of each TensorBoard scalar ``tag`` under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def devkit_map(voc, comp4, classes):
    """VOC07 mAP of comp4 files by the devkit's loop, ground truth read from the XML by hand."""
    ids = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    aps = []
    for name in classes:
        gt = {}
        for image_id in ids:
            root = ElementTree.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
            gt[image_id] = [
                (
                    [
                        float(obj.find("bndbox").find(k).text)
                        for k in ("xmin", "ymin", "xmax", "ymax")
                    ],
                    obj.find("difficult").text == "1",
                )
                for obj in root.iter("object")
                if obj.find("name").text == name
            ]
        npos = sum(not difficult for objects in gt.values() for _, difficult in objects)
        lines = (comp4 / f"comp4_det_test_{name}.txt").read_text().split("\n")
        dets = [
            (fields[0], float(fields[1]), [float(v) for v in fields[2:]])
            for fields in (line.split() for line in lines if line)
        ]
        aps.append(brute_voc_eval(gt, dets, npos, "voc07")[0])
    return sum(aps) / len(aps)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config", "missing.yaml"], "config missing.yaml: file not found"),
        (["--set", "finetune.itrations=3"], "unknown key 'itrations'"),
        (["--set", "finetune.mode=both"], "finetune.mode must be one of"),
        (["--set", "finetune.lr=-1"], "finetune.lr must be > 0"),
        (["--data", "/nonexistent/voc"], "/nonexistent/voc"),
        (["--resume"], "no checkpoint to resume"),
        (["--set", "data.classes=[red,blue,green]"], "class(es) ['green']"),
        (["--set", "model.scales=[]"], "model.scales must be a non-empty list"),
        (["--set", "model.scales=[0]"], "model.scales must be a non-empty list"),
        (["--set", "model.fc_dims=[0, 0]"], "model.fc_dims must be"),
        (["--set", "model.dropout=1.5"], "model.dropout must be in [0, 1), got 1.5"),
        (["--set", "model.fc_dims=[8"], "override 'model.fc_dims=[8': invalid YAML value"),
        (["--config", "binary.yaml"], "binary.yaml: not a text file"),
        (["--out", "a_file"], "run folder"),
    ],
)
def test_train_bad_input(config_file, tmp_path, capsys, extra, message):
    (tmp_path / "binary.yaml").write_bytes(bytes(range(128, 256)))
    (tmp_path / "a_file").write_text("not a folder")
    extra = [str(tmp_path / e) if e in ("binary.yaml", "a_file") else e for e in extra]
    args = ["train", "--config", str(config_file), "--out", str(tmp_path / "run"), *extra]
    if extra[0] == "--config":
        args = ["train", *extra, "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("detect train: error:") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # rejected before anything was written


def test_eval_bad_input(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt: file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A checkpoint of a 1-iteration run on the red/blue data."""
    folder = tmp_path_factory.mktemp("trained")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(data, iterations=1)))
    assert main(["train", "--config", str(config), "--out", str(folder / "run")]) == 0
    return folder / "run" / "checkpoint.pt"


def _other_classes_voc(data, root):
    """The red/blue data set relabelled as cat/dog (classes.txt and the XML names)."""
    import shutil

    shutil.copytree(data / "voc", root)
    (root / "classes.txt").write_text("cat\ndog\n")
    for xml in (root / "Annotations").glob("*.xml"):
        text = xml.read_text().replace("<name>red<", "<name>cat<")
        xml.write_text(text.replace("<name>blue<", "<name>dog<"))
    return root


def test_eval_bad_input_with_a_real_checkpoint(data, trained, tmp_path, capsys):
    other = _other_classes_voc(data, tmp_path / "other")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "binary.pt").write_bytes(bytes(range(256)) * 4)
    cases = [
        (["--checkpoint", str(trained), "--data", str(other)], f"{other / 'classes.txt'} lists"),
        (["--checkpoint", str(trained), "--out", str(tmp_path / "a_file")], "a_file: exists"),
        (["--checkpoint", str(tmp_path / "text.pt")], "text.pt: cannot read: not a file"),
        (["--checkpoint", str(tmp_path / "binary.pt")], "binary.pt: cannot read: not a file"),
        (["--checkpoint", str(tmp_path)], "is a folder, not a file"),
        (["--checkpoint", str(trained), "--set", "test.nms_iou=2"], "test.nms_iou must be"),
        (["--checkpoint", str(trained), "--set", "test.top_per_class=0"], "top_per_class"),
    ]
    for args, message in cases:
        assert main(["eval", *args, "--max-images", "1"]) == 2, args
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("detect eval: error:") and message in lines[-1], err
        assert "Traceback" not in err


def test_eval_names_the_saved_data_root_when_it_is_gone(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the saved data.root is absolute; make it a missing relative one
    import torch

    payload = torch.load(trained, weights_only=True)
    payload["config"]["data"]["root"] = "data/gone"
    torch.save(payload, tmp_path / "moved.pt")
    assert main(["eval", "--checkpoint", str(tmp_path / "moved.pt")]) == 2
    err = capsys.readouterr().err
    assert "data data/gone (data.root saved in checkpoint" in err and "--data" in err


def test_example_config_loads():
    from detect.config import load_config
    from detect.training.pipeline import validate_training_config

    config = load_config("train_synthetic_tiny")
    validate_training_config(config, "spp")
    assert config.model.backbone == "tiny" and config.finetune.mode == "end_to_end"
