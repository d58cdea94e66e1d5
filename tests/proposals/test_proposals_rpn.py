"""``rpn`` proposals: the cache key follows the weights' content, ``detect proposals --method rpn``
and ``detect train`` / ``detect eval`` with a trained RPN, end to end on tiny data."""

import pytest
import torch
import yaml
from _train_data import make_tiny_voc, tiny_config, tiny_config_dict

from detect.cli import main
from detect.data import load_dataset
from detect.data.images import read_image
from detect.models.rpn import load_rpn
from detect.proposals.cache import ProposalCache
from detect.proposals.prefetch import proposal_workers
from detect.training.rpn import build_rpn, save_rpn


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


def _saved_rpn(data, path, seed):
    config = tiny_config(data)
    torch.manual_seed(seed)
    rpn = build_rpn(config, load_dataset(data / "voc", "trainval", config.data.classes))
    return save_rpn(rpn, path)


def test_cache_key_changes_with_the_weights(data, tmp_path):
    weights = _saved_rpn(data, tmp_path / "rpn.pt", seed=0)
    image = read_image(data / "voc" / "JPEGImages" / "0000.png")
    cache = ProposalCache(tmp_path / "cache", "rpn", weights=str(weights), min_size=2)
    assert cache.params["weights_sha256"]
    boxes = cache.get(image=image)
    assert boxes is None
    cache.put("0000", load_rpn(weights).propose(image, min_size=2), image.shape[:2], image=image)
    assert (
        ProposalCache(tmp_path / "cache", "rpn", weights=str(weights), min_size=2).get(image=image)
        is not None
    )
    _saved_rpn(data, weights, seed=1)  # other weights, same file name
    retrained = ProposalCache(tmp_path / "cache", "rpn", weights=str(weights), min_size=2)
    assert retrained.params["weights_sha256"] != cache.params["weights_sha256"]
    assert retrained.path_for("x") != cache.path_for("x")
    assert retrained.get(image=image) is None
    # The network runs in the calling process, never in the numpy-only proposal workers.
    assert proposal_workers(retrained, 2) == 0 and proposal_workers(ProposalCache(None), 2) == 2


def test_missing_weights_are_one_line_errors(data, tmp_path, capsys):
    args = [
        "proposals",
        "--data",
        str(data / "voc"),
        "--classes",
        "red,blue",
        "--out",
        str(tmp_path),
    ]
    assert main([*args, "--method", "rpn"]) == 2
    assert "proposals.rpn_weights is empty" in capsys.readouterr().err
    assert main([*args, "--rpn-weights", str(tmp_path / "none.pt")]) == 2
    assert "none.pt" in capsys.readouterr().err


def test_train_with_rpn_then_proposals_and_eval(data, tmp_path, capsys):
    values = tiny_config_dict(data, iterations=0)  # the detector as initialised
    values["proposals"] = {
        "method": "rpn",
        "cache_dir": str(tmp_path / "cache"),
        "rpn_iterations": 30,
        "rpn_lr": 0.02,
        "min_size": 2,
        "max_proposals": 100,
        "rpn_shared": False,  # the two-pass path: RUN/rpn.pt on its own backbone at test time
    }
    config_file = tmp_path / "rpn.yaml"
    config_file.write_text(yaml.safe_dump(values))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--out", str(run)]) == 0
    assert (run / "rpn.pt").is_file() and (run / "checkpoint.pt").is_file()
    assert "rpn.pt" in capsys.readouterr().out  # the run folder's files listed
    trained = (run / "rpn.pt").stat().st_mtime_ns
    assert main(["train", "--config", str(config_file), "--out", str(run), "--resume"]) == 0
    assert (run / "rpn.pt").stat().st_mtime_ns == trained  # resuming does not train it again
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["proposals"]["rpn_weights"] == str((run / "rpn.pt").resolve())
    # The detector starts from the RPN-trained conv layers.
    rpn = load_rpn(run / "rpn.pt")
    assert rpn.anchor_shapes.shape[1] == 2 and rpn.backbone.name == "tiny"
    detector = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    for key, value in rpn.backbone.state_dict().items():
        assert torch.equal(detector[f"backbone.{key}"], value), key

    out_dir = tmp_path / "props"
    args = ["proposals", "--data", str(data / "voc"), "--classes", "red,blue", "--split", "test"]
    args += ["--out", str(out_dir), "--set", "proposals.min_size=2"]
    assert main([*args, "--rpn-weights", str(run / "checkpoint.pt"), "--recall"]) == 0
    out = capsys.readouterr().out
    assert "rpn " in out and "6 computed" in out and "R@0.7" in out
    assert main([*args, "--rpn-weights", str(run / "rpn.pt")]) == 0
    assert "6 cached" in capsys.readouterr().out  # the same weights: the same entries
    assert (
        main([*args, "--method", "dense,rpn", "--rpn-weights", str(run / "rpn.pt"), "--recall"])
        == 0
    )
    assert "rpn" in capsys.readouterr().out

    evaluated = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(evaluated)]) == 0
    assert "mean" in capsys.readouterr().out
    cached = list((evaluated / "proposals").glob("*.npz"))
    assert len(cached) == 6  # eval computed the test images' proposals with the run's RPN

    # detect run with a run's RPN (in this process, whatever proposals.workers says)
    images = data / "voc" / "JPEGImages"
    args = ["run", str(images), "--checkpoint", str(run / "checkpoint.pt"), "--out"]
    assert main([*args, str(tmp_path / "found"), "--set", "proposals.workers=2"]) == 0
    assert "6 image(s) processed, 0 skipped" in capsys.readouterr().out
