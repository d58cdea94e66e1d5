"""Shards of `detect proposals`: taken from torchrun's RANK / WORLD_SIZE, and combined by
`--merge` (copy the shard folders' valid entries, then report as `--check`)."""

import filecmp

from proposals_testdata import write_images

from detect.cli import main

FAST = ["--set", "proposals.resize_long_side=160", "--set", "proposals.min_size=8"]


def test_torchrun_ranks_shard_then_merge_and_check(tmp_path, capsys, monkeypatch):
    write_images(tmp_path / "imgs", 3)
    base = ["proposals", "--data", str(tmp_path / "imgs"), *FAST]
    for index in (0, 1):  # two ranks of one torchrun, each with its own local cache folder
        monkeypatch.setenv("RANK", str(index))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main([*base, "--out", str(tmp_path / f"node{index}")]) == 0
        assert f"(shard {index}/2 of 3)" in capsys.readouterr().out
        # --shard contradicts torchrun's own sharding: a one-line error, exit status 2.
        assert main([*base, "--out", str(tmp_path / "x"), "--shard", "0/2"]) == 2
        assert "not under torchrun (WORLD_SIZE=2)" in capsys.readouterr().err
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    node0, node1 = sorted(tmp_path.glob("node*"))
    assert (
        len(list(node0.glob("*.npz"))) == 2 and len(list(node1.glob("*.npz"))) == 1
    )  # round robin

    # A corrupt entry in a shard folder is not copied: that image stays missing (exit status 1).
    (bad,) = node1.glob("*.npz")
    good = bad.read_bytes()
    bad.write_bytes(b"not an npz")
    merged = tmp_path / "merged"
    args = [*base, "--out", str(merged), "--merge", str(node0), str(node1)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "2 entries copied" in out and "missing: 1  e.g. img1" in out
    bad.write_bytes(good)
    assert main(args) == 0  # a rerun copies only what is still missing
    out = capsys.readouterr().out
    assert "1 entry copied" in out and "hit: 3" in out
    for shard in (node0, node1):
        for entry in shard.glob("*.npz"):
            assert filecmp.cmp(entry, merged / entry.name, shallow=False)
    assert main([*base, "--out", str(merged)]) == 0  # the merged cache serves every image
    assert "3 cached, 0 computed" in capsys.readouterr().out


def test_merge_from_a_missing_folder_is_one_line(tmp_path, capsys):
    write_images(tmp_path / "imgs", 1)
    args = ["proposals", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "c")]
    assert main([*args, "--merge", str(tmp_path / "nope")]) == 2
    assert f"--merge {tmp_path / 'nope'}: not a folder" in capsys.readouterr().err
