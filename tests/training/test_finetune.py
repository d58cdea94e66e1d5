"""Fine-tuning and ``train``: loss goes down, exact resume, NaN stop, fc mode, R-CNN, bad input."""

import csv
import math
import signal
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from _train_data import make_tiny_voc, tiny_config

from detect.checkpoints import load_checkpoint, read_checkpoint
from detect.data import load_dataset
from detect.data.images import read_image
from detect.errors import DetectError
from detect.models import build_detector
from detect.proposals import load_or_compute_proposals
from detect.training import train
from detect.training.batches import image_order


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


def read_rows(path, timings=True):
    """The log's rows; without the throughput columns (wall-clock timings) unless ``timings``."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not timings:
        for row in rows:
            del row["images_per_s"], row["s_per_iter"]
    return rows


def test_image_order_visits_every_image_once_per_epoch():
    order = [i for it in range(10) for i in image_order(7, it, 2, 5)]  # 4 epochs of 5 images
    for epoch in range(4):
        assert sorted(order[5 * epoch : 5 * epoch + 5]) == list(range(5))
    assert order[:5] != order[5:10] or order[5:10] != order[10:15]  # reshuffled per epoch
    assert image_order(7, 3, 2, 5) == image_order(7, 3, 2, 5)


def test_a_few_iterations_lower_the_loss(data, tmp_path):
    cfg = tiny_config(data, iterations=60, lr=0.05, lr_steps=[], log_every=10)
    result = train(cfg, out_dir=tmp_path / "run")
    rows = read_rows(result.log_csv)
    assert [int(r["iteration"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert all(float(r["images_per_s"]) > 0 and float(r["s_per_iter"]) > 0 for r in rows)
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    assert result.final_loss == pytest.approx(float(rows[-1]["loss"]))
    for name in ("checkpoint.pt", "config.yaml", "train_log.csv", "loss.png"):
        assert (tmp_path / "run" / name).is_file()
    payload = read_checkpoint(result.checkpoint)
    assert payload["stage"] == "done" and payload["iteration"] == 60
    assert payload["class_names"] == ["red", "blue"]


def test_resume_equals_uninterrupted(data, tmp_path):
    cfg = tiny_config(data)  # 6 iterations, checkpoint every 3, dropout on, flips on
    handler = signal.getsignal(signal.SIGINT)  # the default, or SIG_IGN under some runners
    full = train(cfg, out_dir=tmp_path / "full")

    def interrupt_at_4(completed):
        if completed == 4:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "cut", on_iteration=interrupt_at_4)
    assert read_checkpoint(tmp_path / "cut" / "checkpoint.pt")["iteration"] == 4
    resumed = train(cfg, out_dir=tmp_path / "cut", resume=True)

    a = read_checkpoint(full.checkpoint)["model"]
    b = read_checkpoint(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert read_rows(full.log_csv, False) == read_rows(resumed.log_csv, False)
    # A second Ctrl-C handler is not left behind.
    assert signal.getsignal(signal.SIGINT) is handler


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    cfg = tiny_config(data, iterations=30, lr=1e12, lr_steps=[], checkpoint_every=1)
    with pytest.raises(DetectError, match=r"diverged at iteration (\d+).*(nan|inf).*last good"):
        train(cfg, out_dir=tmp_path / "run")
    payload = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["stage"] == "finetune"
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if v.is_floating_point())


def test_fc_mode_keeps_conv_fixed(data, tmp_path):
    cfg = tiny_config(data, mode="fc", iterations=4, allow_random_backbone=True)
    base = tiny_config(data, iterations=0)
    start = read_checkpoint(train(base, out_dir=tmp_path / "init").checkpoint)["model"]
    assert (tmp_path / "init" / "train_log.csv").read_text() == (
        "iteration,loss,cls_loss,bbox_loss,lr,images_per_s,s_per_iter\n"
    )
    end = read_checkpoint(train(cfg, out_dir=tmp_path / "fc").checkpoint)["model"]
    conv = [k for k in start if k.startswith("backbone.")]
    head = [k for k in start if k.startswith("head.")]
    assert conv and head
    assert all(torch.equal(start[k], end[k]) for k in conv)  # incl. BatchNorm running stats
    assert any(not torch.equal(start[k], end[k]) for k in head)


def record_training_windows(monkeypatch):
    """Spy on fine-tuning: the windows sampled and the labels / targets each loss is taken on."""
    import detect.training.batches as batches_module
    import detect.training.finetune as finetune_module

    seen = {"sampled": [], "loss": []}
    sample, loss = batches_module.sample_rois, finetune_module.detection_loss

    def sample_spy(*args):
        rois = sample(*args)
        seen["sampled"].append((args[5:], rois))
        return rois

    def loss_spy(out, labels, targets, weight, num_windows=None):
        seen["loss"].append((labels.clone(), targets.clone(), weight))
        return loss(out, labels, targets, weight, num_windows)

    monkeypatch.setattr(batches_module, "sample_rois", sample_spy)
    monkeypatch.setattr(finetune_module, "detection_loss", loss_spy)
    return seen


def test_rcnn_baseline_trains_the_same_way(data, tmp_path, monkeypatch):
    # Same images, same windows, same labels and targets, same loss: only the forward differs.
    cfg = tiny_config(data, iterations=3, rois_per_image_batch=8)
    runs = {}
    for method in ("spp", "rcnn"):
        seen = record_training_windows(monkeypatch)
        result = train(cfg, out_dir=tmp_path / method, method=method)
        runs[method] = (seen, read_checkpoint(result.checkpoint))
        monkeypatch.undo()
    (spp, spp_payload), (rcnn, rcnn_payload) = runs["spp"], runs["rcnn"]
    assert rcnn_payload["method"] == "rcnn" and spp_payload["method"] == "spp"
    assert len(rcnn["sampled"]) == len(spp["sampled"]) == 3 * 2
    for (_, a), (_, b) in zip(spp["sampled"], rcnn["sampled"], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(rcnn["loss"]) == len(spp["loss"]) == 3
    for (labels_a, targets_a, _), (labels_b, targets_b, _) in zip(
        spp["loss"], rcnn["loss"], strict=True
    ):
        assert torch.equal(labels_a, labels_b) and torch.equal(targets_a, targets_b)
    # Both started from the same seeded weights and both were trained.
    torch.manual_seed(cfg.seed)
    start = build_detector("rcnn", cfg.model, 2).state_dict()
    assert any(not torch.equal(start[k], rcnn_payload["model"][k]) for k in start)


def test_training_samples_with_the_configured_values(data, tmp_path, monkeypatch):
    seen = record_training_windows(monkeypatch)
    cfg = tiny_config(
        data,
        iterations=2,
        fg_fraction=0.4,
        fg_iou=0.6,
        bg_iou_low=0.2,
        bg_iou_high=0.4,
        bbox_loss_weight=3.0,
    )
    train(cfg, out_dir=tmp_path / "run")
    assert len(seen["sampled"]) == 2 * 2 and len(seen["loss"]) == 2
    for values, rois in seen["sampled"]:
        assert values == (0.4, 0.6, 0.2, 0.4)
        fg = rois.labels > 0
        assert torch.all(rois.ious[fg] >= 0.6)
        assert torch.all((rois.ious[~fg] >= 0.2) & (rois.ious[~fg] < 0.4))
    assert all(weight == 3.0 for _, _, weight in seen["loss"])


def test_svm_and_ridge_stages(data, tmp_path):
    cfg = tiny_config(data, iterations=2)
    cfg = replace(
        cfg,
        svm=replace(cfg.svm, enabled=True, initial_negatives=50, rounds=1),
        bbox_reg=replace(cfg.bbox_reg, method="ridge", min_iou=0.5, ridge_lambda=50.0),
    )
    result = train(cfg, out_dir=tmp_path / "svm")
    assert result.stages == ("finetune", "svm", "ridge")
    payload = read_checkpoint(result.checkpoint)
    # Features of the fine-tuned network, by hand: every ground truth and proposal of each image.
    model = load_checkpoint(result.checkpoint).model
    dataset = load_dataset(cfg.data.root, "trainval", cfg.data.classes)
    proposals = load_or_compute_proposals(dataset, cfg.proposals)
    fc7, rows = [], {0: [], 1: []}
    with torch.no_grad():
        for ann in dataset.annotations:
            image, scale = model.prepare(read_image(ann.path))
            boxes = torch.cat([ann.boxes, proposals[ann.image_id].reshape(-1, 4).float()])
            out = model(image, boxes * scale)
            fc7.append(out.fc7)
            for r, box in enumerate(boxes.tolist()):
                overlaps = [box_overlap(box, g) for g in ann.boxes.tolist()]
                best = max(range(len(overlaps)), key=overlaps.__getitem__)
                if overlaps[best] >= 0.5:
                    gt = ann.boxes[best].tolist()
                    rows[int(ann.labels[best])].append((out.pooled[r], rcnn_targets(box, gt)))
    # SVMs on fc7 scaled to mean norm 20 (ground truths are also in the pool: counted twice).
    gt_rows = torch.cat([f[: len(a.boxes)] for f, a in zip(fc7, dataset.annotations, strict=True)])
    norms = torch.cat([gt_rows, *fc7]).double().norm(dim=1)
    assert payload["svm"]["scale"] == pytest.approx(20.0 / float(norms.mean()), rel=1e-4)
    assert payload["svm"]["weight"].shape == (2, 32)  # fc7 of fc_dims [32, 32]
    # Ridge per class: the closed form with an unpenalised intercept, in numpy.
    pooled = torch.stack([p for k in rows for p, _ in rows[k]]).double().numpy()
    scale = 20.0 / np.linalg.norm(pooled, axis=1).mean()
    assert payload["ridge"]["scale"] == pytest.approx(scale, rel=1e-4)
    for k in (0, 1):
        x = torch.stack([p for p, _ in rows[k]]).double().numpy() * scale
        y = np.array([t for _, t in rows[k]])
        design = np.hstack([x, np.ones((len(x), 1))])
        penalty = 50.0 * np.eye(design.shape[1])
        penalty[-1, -1] = 0.0
        beta = np.linalg.solve(design.T @ design + penalty, design.T @ y)
        np.testing.assert_allclose(payload["ridge"]["weight"][k].numpy(), beta[:-1], atol=1e-4)
        np.testing.assert_allclose(payload["ridge"]["bias"][k].numpy(), beta[-1], atol=1e-4)


def box_overlap(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def rcnn_targets(p, g) -> list[float]:
    pw, ph, gw, gh = p[2] - p[0], p[3] - p[1], g[2] - g[0], g[3] - g[1]
    dx = (g[0] + gw / 2 - p[0] - pw / 2) / pw
    dy = (g[1] + gh / 2 - p[1] - ph / 2) / ph
    return [dx, dy, math.log(gw / pw), math.log(gh / ph)]


def test_class_without_objects_is_an_error_up_front(data, tmp_path):
    from dataclasses import replace

    cfg = tiny_config(data)
    cfg = replace(cfg, data=replace(cfg.data, classes=("red", "blue", "green")))
    with pytest.raises(
        DetectError, match=r"no \(non-difficult\) objects of class\(es\) \['green'\]"
    ):
        train(cfg, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_init_checkpoint_with_other_classes_is_an_error(data, tmp_path):
    first = train(tiny_config(data, iterations=0), out_dir=tmp_path / "a")
    from dataclasses import replace

    cfg = tiny_config(data, init_checkpoint=str(first.checkpoint))
    swapped = replace(cfg, data=replace(cfg.data, classes=("blue", "red")))
    with pytest.raises(
        DetectError, match=r"checkpoint .*a/checkpoint.pt.*\['red', 'blue'\].*\['blue', 'red'\]"
    ):
        train(swapped, out_dir=tmp_path / "b")
    # Same classes: starts from those weights.
    result = train(
        replace(cfg, finetune=replace(cfg.finetune, iterations=0)), out_dir=tmp_path / "c"
    )
    a, c = read_checkpoint(first.checkpoint)["model"], read_checkpoint(result.checkpoint)["model"]
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_resume_errors(data, tmp_path):
    with pytest.raises(DetectError, match="no checkpoint to resume"):
        train(tiny_config(data), out_dir=tmp_path / "none", resume=True)
    train(tiny_config(data, iterations=1), out_dir=tmp_path / "run")
    with pytest.raises(DetectError, match=r"finetune.lr: 0.01 -> 0.02"):
        train(tiny_config(data, iterations=1, lr=0.02), out_dir=tmp_path / "run", resume=True)
    with pytest.raises(DetectError, match="method is 'spp'"):
        train(tiny_config(data, iterations=1), out_dir=tmp_path / "run", resume=True, method="rcnn")


def test_resume_ignores_sections_training_does_not_use(data, tmp_path):
    """test / bench / demo settings may change between a run and its resume; training may not."""
    first = train(tiny_config(data, iterations=1), out_dir=tmp_path / "run")
    cfg = tiny_config(data, iterations=1)
    cfg = replace(
        cfg,
        test=replace(cfg.test, nms_iou=0.5),
        bench=replace(cfg.bench, repeats=2),
        demo=replace(cfg.demo, bench_images=7),
    )
    resumed = train(cfg, out_dir=tmp_path / "run", resume=True)
    a, b = read_checkpoint(first.checkpoint)["model"], read_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(DetectError, match=r"model.dropout"):
        changed = replace(cfg, model=replace(cfg.model, dropout=0.1))
        train(changed, out_dir=tmp_path / "run", resume=True)


def test_flips_and_images_are_used(data, tmp_path, monkeypatch):
    seen = Counter()
    import detect.training.batches as batches_module

    original = batches_module.hflip_example

    def spy(image, proposals, gt_boxes):
        seen["flip"] += 1
        return original(image, proposals, gt_boxes)

    monkeypatch.setattr(batches_module, "hflip_example", spy)
    train(tiny_config(data, iterations=6), out_dir=tmp_path / "run")
    assert 0 < seen["flip"] < 12  # about half of the 12 image visits


def test_resume_of_a_checkpoint_older_than_a_config_key(data, tmp_path):
    """A key missing from the saved config (written before the key existed) means its default."""
    from detect.files import atomic_torch_save

    first = train(tiny_config(data, iterations=1), out_dir=tmp_path / "run")
    payload = read_checkpoint(first.checkpoint)
    assert payload["config"]["finetune"].pop("fg_fraction") == 0.25
    del payload["config"]["runtime"]
    atomic_torch_save(payload, first.checkpoint)
    resumed = train(tiny_config(data, iterations=1), out_dir=tmp_path / "run", resume=True)
    a, b = payload["model"], read_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(DetectError, match=r"finetune.fg_fraction: 0.25 -> 0.3"):
        cfg = tiny_config(data, iterations=1)
        changed = replace(cfg, finetune=replace(cfg.finetune, fg_fraction=0.3))
        train(changed, out_dir=tmp_path / "run", resume=True)
