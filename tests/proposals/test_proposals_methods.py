"""Proposal methods: ss-multi against its own hierarchies merged by hand, ss upscaling, each
method's parameters keying the cache, and `detect proposals --method A,B --recall`."""

import numpy as np
import pytest
from proposals_testdata import synthetic_dataset, synthetic_image

from detect.cli import main
from detect.config import ProposalConfig
from detect.data.voc import write_voc_dataset
from detect.errors import DetectError
from detect.proposals import multi
from detect.proposals.cache import ProposalCache, image_digest
from detect.proposals.methods import config_params, method_params, propose
from detect.proposals.ranking import box_iou_np
from detect.proposals.search import search_boxes


def test_ss_multi_is_its_hierarchies_merged_by_rank_without_near_duplicates():
    image = synthetic_image(1)[0]
    settings = dict(color_spaces=("hsv", "rgb"), ks=(50.0,), min_region=20, resize_long_side=0)
    boxes = multi.multi_search_boxes(
        image, dedup_iou=0.8, min_size=4.0, max_proposals=0, **settings
    )
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    lists = []
    for space in ("hsv", "rgb"):
        for strategy in multi.STRATEGIES:
            rects = multi._hierarchy(bgr, space, 50.0, 20, strategy)
            lists.append([[x, y, x + w, y + h] for x, y, w, h in rects.tolist()])
    merged = []  # by hand: rank 0 of every list, then rank 1, ...
    for rank in range(max(map(len, lists))):
        merged += [boxes_[rank] for boxes_ in lists if rank < len(boxes_)]
    kept = []
    for box in merged:
        if min(box[2] - box[0], box[3] - box[1]) < 4:
            continue
        if all(box_iou_np(np.array([box]), np.array([k]))[0, 0] <= 0.8 for k in kept):
            kept.append(box)
    assert boxes.tolist() == kept
    capped = multi.multi_search_boxes(
        image, dedup_iou=0.8, min_size=4.0, max_proposals=5, **settings
    )
    assert capped.tolist() == kept[:5]


def test_ss_upscale_searches_a_larger_image(monkeypatch):
    import detect.proposals.search as search

    seen = []

    def fake_search(image_bgr, mode):
        seen.append(image_bgr.shape[:2])
        return np.array([[2, 4, 10, 6]], np.int32)  # x, y, w, h on the searched image

    monkeypatch.setattr(search, "raw_selective_search", fake_search)
    image = synthetic_image(0)[0]  # 120 x 160
    boxes = search_boxes(image, resize_long_side=0, min_size=0, upscale=2.0)
    assert seen == [(240, 320)]
    assert boxes.tolist() == [[1.0, 2.0, 6.0, 5.0]]  # halved back to original pixels
    search_boxes(image, resize_long_side=80, min_size=0, upscale=1.5)
    assert seen[-1] == (90, 120)
    with pytest.raises(DetectError, match=r"proposals.upscale must be in \(0, 8\], got 0"):
        search_boxes(image, upscale=0)


def test_every_parameter_of_every_method_keys_the_cache(tmp_path):
    dense = ProposalConfig(method="dense", dense_shapes=((10.0, 12.0),))
    configs = [
        ProposalConfig(),
        ProposalConfig(upscale=2.0),
        ProposalConfig(method="ss-multi"),
        ProposalConfig(method="ss-multi", multi_ks=(100.0,)),
        ProposalConfig(method="ss-multi", multi_color_spaces=("lab",)),
        ProposalConfig(method="ss-multi", multi_min_region=20),
        ProposalConfig(method="ss-multi", multi_dedup_iou=0.7),
        ProposalConfig(method="ss-multi", upscale=2.0),
        ProposalConfig(method="ss-multi", min_size=4.0),
        dense,
        ProposalConfig(method="dense", dense_shapes=((10.0, 13.0),)),
        ProposalConfig(method="dense", dense_shapes=((10.0, 12.0),), dense_stride=0.2),
        ProposalConfig(method="dense", dense_shapes=((10.0, 12.0),), dense_ring=0.2),
        ProposalConfig(method="dense", dense_shapes=((10.0, 12.0),), dense_nms_iou=0.5),
        ProposalConfig(method="dense", dense_shapes=((10.0, 12.0),), max_proposals=10),
    ]
    paths = {ProposalCache.from_config(cfg).path_for("digest") for cfg in configs}
    assert len(paths) == len(configs)
    # selective search at upscale 1 keys as before the setting existed (same computation)
    assert config_params(ProposalConfig()) == {
        "mode": "fast",
        "resize_long_side": 500,
        "min_size": 16.0,
        "max_proposals": 2000,
    }
    assert config_params(dense)["shapes"] == [[10.0, 12.0]]


def test_a_cache_never_serves_another_methods_boxes(tmp_path):
    image = synthetic_image(2)[0]
    ss = ProposalCache(tmp_path, resize_long_side=80)
    ss.put("a", np.array([[1, 2, 3, 4]], np.float32), image.shape[:2], image=image)
    dense = ProposalCache(tmp_path, "dense", shapes=[[10, 10]])
    assert dense.lookup(image=image).status == "missing"
    # selective search's entry copied under the dense key is stale, never served
    digest = image_digest(image=image)
    dense.path_for(digest).write_bytes(ss.path_for(digest).read_bytes())
    found = dense.lookup(image=image)
    assert found.status == "stale" and "written by detect-proposals-v2/opencv" in found.reason


def test_bad_methods_and_parameters():
    with pytest.raises(DetectError, match=r"proposals.method must be one of \['ss', 'ss-multi', "):
        ProposalCache(None, "edges")
    with pytest.raises(DetectError, match=r"unknown parameter\(s\) \['ks'\]"):
        method_params("ss", {"ks": [1]})
    with pytest.raises(DetectError, match=r"proposals.multi_color_spaces must be a non-empty list"):
        ProposalCache.from_config(ProposalConfig(method="ss-multi", multi_color_spaces=("cmyk",)))
    with pytest.raises(DetectError, match=r"proposals.dense_shapes is empty"):
        ProposalCache.from_config(ProposalConfig(method="dense"))
    with pytest.raises(DetectError, match=r"proposals.method must be one of"):
        propose(synthetic_image(0)[0], "edges", {})


def test_proposals_cli_compares_methods(tmp_path, capsys):
    root = tmp_path / "voc"
    dataset = synthetic_dataset(root / "JPEGImages", 2)
    write_voc_dataset(
        root, ("box",), {"test": dataset.annotations, "trainval": dataset.annotations}
    )
    args = ["proposals", "--data", str(root), "--split", "test", "--classes", "box"]
    args += ["--out", str(tmp_path / "c"), "--set", "proposals.resize_long_side=160"]
    args += ["--set", "proposals.multi_ks=[100]", "--set", "proposals.dense_num_shapes=3"]
    args += ["--set", "proposals.dense_stride=0.03"]
    assert main([*args, "--method", "ss,ss-multi,dense", "--recall"]) == 0
    out = capsys.readouterr().out
    assert "dense window shapes (k-means of the boxes of" in out
    rows = {line.split("|")[0].strip(): line for line in out.splitlines() if "|" in line}
    for method in ("ss", "ss-multi", "dense"):
        cells = [c.strip() for c in rows[method].split("|")]
        assert 0 <= float(cells[2]) <= 1 and float(cells[5]) > 0  # R@0.5; seconds per image
    assert float(rows["dense"].split("|")[3]) == 1.0  # the rectangles' own shapes find them
    assert (tmp_path / "c" / "recall_test.png").is_file()
    assert main([*args, "--method", "dense,ss", "--recall"]) == 0  # now from the cache
    assert "cached" in capsys.readouterr().out.splitlines()[-3]
    assert main([*args, "--method", "ss,dense"]) == 2
    assert "several methods only with --recall" in capsys.readouterr().err
    assert main([*args, "--method", "edges", "--recall"]) == 2


@pytest.mark.slow
def test_detect_train_fits_dense_shapes_into_the_saved_config(tmp_path):
    import yaml
    from _train_data import make_tiny_voc, tiny_config_dict

    root = make_tiny_voc(tmp_path / "tiny")
    values = tiny_config_dict(root, iterations=1)
    values["proposals"] = {
        "method": "dense",
        "dense_num_shapes": 2,
        "max_proposals": 50,
        "cache_dir": str(tmp_path / "cache"),
    }
    config = tmp_path / "dense.yaml"
    config.write_text(yaml.safe_dump(values))
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    assert main(args) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["proposals"]
    assert saved["method"] == "dense" and len(saved["dense_shapes"]) == 2
    assert len(list((tmp_path / "cache").glob("*.npz"))) > 0
    assert main([*args, "--resume"]) == 0  # the shapes are fitted alike: the configs agree
