"""`detect proposals` end to end on tiny images: VOC + recall + export/import, shards, failures."""

import scipy.io
from proposals_testdata import synthetic_dataset, write_images

from detect.cli import main
from detect.data.voc import write_voc_dataset

FAST = ["--set", "proposals.resize_long_side=160", "--set", "proposals.min_size=8"]


def test_voc_recall_export_and_import(tmp_path, capsys):
    root = tmp_path / "voc"
    dataset = synthetic_dataset(root / "JPEGImages", 2)
    write_voc_dataset(root, ("box",), {"test": dataset.annotations})
    cache, exported = tmp_path / "cache", tmp_path / "boxes.mat"
    args = [
        "proposals",
        "--data",
        str(root),
        "--split",
        "test",
        "--classes",
        "box",
        "--out",
        str(cache),
    ]
    assert main([*args, *FAST, "--recall", "--export", str(exported)]) == 0
    out = capsys.readouterr().out
    assert "2 images" in out and "2 computed" in out and "R@0.7" in out
    assert (cache / "recall_test.png").is_file()
    assert len(scipy.io.loadmat(exported)["boxes"].ravel()) == 2
    assert main([*args, "--import", str(exported), "--recall"]) == 0
    out = capsys.readouterr().out
    assert "imported" in out and "2 of 2 images" in out
    # Solid rectangles are found at IoU 0.7 with 300 proposals.
    row = next(line for line in out.splitlines() if line.strip().startswith("300 |"))
    assert float(row.split("|")[2]) == 1.0


def test_shards_then_check(tmp_path, capsys):
    write_images(tmp_path / "imgs", 3)
    base = ["proposals", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "c"), *FAST]
    assert main([*base, "--shard", "0/2"]) == 0
    assert "2 images (shard 0/2 of 3)" in capsys.readouterr().out
    assert main([*base, "--check"]) == 1
    assert "missing: 1  e.g. img1" in capsys.readouterr().out
    assert main([*base, "--shard", "1/2"]) == 0
    assert main([*base, "--check"]) == 0
    assert main([*base, "--workers", "2"]) == 0  # resume: nothing left to compute
    assert "3 cached, 0 computed" in capsys.readouterr().out


def test_bad_image_fails_the_run_but_not_the_others(tmp_path, capsys):
    write_images(tmp_path, 2)
    (tmp_path / "zz_broken.png").write_bytes(b"\x89PNG truncated")
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\nimg0.png\n\nzz_broken.png\nimg1.png\n")
    code = main(["proposals", "--data", str(listing), "--out", str(tmp_path / "c"), *FAST])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 computed" in captured.out and "1 failed" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("detect proposals: error: skipped image ")
    assert str(tmp_path / "zz_broken.png") in last


def test_bad_arguments_exit_2(tmp_path, capsys):
    write_images(tmp_path, 1)
    assert main(["proposals", "--data", str(tmp_path / "nope")]) == 2
    assert main(["proposals", "--data", str(tmp_path), "--shard", "2/2"]) == 2
    assert main(["proposals", "--data", str(tmp_path), "--recall"]) == 2
    assert "--recall needs annotations" in capsys.readouterr().err


def test_bad_settings_fail_before_any_search(tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, 1)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    cache = str(tmp_path / "cache")
    cases = [
        (["--data", str(images), "--out", cache, "--workers", "0"], "proposals.workers must be"),
        (["--data", str(images), "--out", cache, "--export", "x.txt"], "x.txt: unknown format"),
        (["--data", str(images), "--out", str(tmp_path / "a_file")], "a_file (proposals.cache_"),
        (["--data", str(images), "--out", cache, "--set", "proposals.mode=slow"], "mode must"),
        (["--data", str(tmp_path / "empty"), "--out", cache], "empty: no images"),
        (["--data", str(images), "--out", cache, "--config", str(tmp_path)], "is a folder"),
    ]
    for args, message in cases:
        assert main(["proposals", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith("detect proposals: error:"), err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()
