"""`model.weights: imagenet`: torchvision's cached file, the download into that cache, and the
one-line errors when offline or for a backbone without ImageNet weights. No network, ever: every
download goes through a fake ``urlopen`` or a fake downloader."""

import email.message
import http.client
import io
import socket
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torch.hub
import torchvision
import yaml
from _train_data import make_tiny_voc, tiny_config_dict

from detect.cli import main
from detect.errors import DetectError
from detect.models.weights import load_backbone, torchvision_cache_file

ALEXNET = torchvision.models.AlexNet_Weights.IMAGENET1K_V1


@pytest.fixture
def torch_home(monkeypatch, tmp_path):
    """An empty torch hub cache; a download not faked by the test fails it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _write_torchvision_file(model_fn, path):
    """A state dict with the keys and shapes of torchvision's ``model_fn`` checkpoint, saved in
    the legacy (non-zip) format of the released files: random ``features.*`` tensors, the
    classifier as broadcast zeros (its real shapes in a few bytes; the detector has its own head)."""
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in model_fn(weights=None).state_dict().items()}
    state = {
        key: torch.randn(shape) if key.startswith("features.") else torch.zeros(()).expand(shape)
        for key, shape in shapes.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return state


@pytest.mark.parametrize(
    "backbone, model_fn, weights",
    [
        ("alexnet", torchvision.models.alexnet, ALEXNET),
        ("vgg16", torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    ],
)
def test_imagenet_weights_load_from_the_torchvision_cache(torch_home, backbone, model_fn, weights):
    path = torchvision_cache_file(backbone)
    assert path == torch_home / weights.url.rsplit("/", 1)[1]  # torchvision's cache file name
    state = _write_torchvision_file(model_fn, path)
    loaded = load_backbone(backbone, "imagenet").state_dict()
    conv = {key: value for key, value in state.items() if key.startswith("features.")}
    assert loaded.keys() == conv.keys()  # every conv layer, none of the classifier
    for key, value in loaded.items():
        assert torch.equal(value, conv[key]), key


def test_a_missing_file_is_downloaded_into_the_cache_with_a_progress_bar(torch_home, monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix, progress):
        calls.append((url, dst, hash_prefix, progress))
        _write_torchvision_file(torchvision.models.alexnet, Path(dst))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    load_backbone("alexnet", "imagenet")
    path = torch_home / "alexnet-owt-7be5be79.pth"
    assert calls == [(ALEXNET.url, str(path), "7be5be79", True)]  # SHA-256 prefix checked
    load_backbone("alexnet", "imagenet")  # cached now: no second download
    assert len(calls) == 1


class _Response:
    """What ``urlopen`` returns: ``body`` in chunks, then ``failure`` raised (if any)."""

    def __init__(self, body: bytes, failure: Exception | None = None):
        self.body, self.failure = io.BytesIO(body), failure

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def info(self):
        headers = email.message.Message()
        headers["Content-Length"] = str(len(self.body.getvalue()) * 2)
        return headers

    def read(self, size):
        chunk = self.body.read(size)
        if not chunk and self.failure is not None:
            raise self.failure
        return chunk


def _fail_with(failure):
    def urlopen(request):
        if isinstance(failure, _Response):
            return failure
        raise failure

    return urlopen


@pytest.mark.parametrize(
    "failure, reason",
    [
        (URLError(socket.gaierror(-3, "Temporary failure in name resolution")), "URLError"),
        (TimeoutError("timed out"), "TimeoutError"),
        (
            _Response(b"x" * 5000, ConnectionResetError(104, "reset by peer")),
            "ConnectionResetError",
        ),
        (_Response(b"x" * 5000, http.client.IncompleteRead(b"", 5000)), "IncompleteRead"),
        (_Response(b"not the weights"), "invalid hash value"),  # a proxy's page, say
    ],
)
def test_a_failed_download_is_one_line_naming_file_and_url(
    torch_home, monkeypatch, failure, reason
):
    monkeypatch.setattr(torch.hub, "urlopen", _fail_with(failure))
    with pytest.raises(DetectError) as caught:
        load_backbone("alexnet", "imagenet")
    message = str(caught.value)
    assert "\n" not in message and reason in message
    path = torch_home / "alexnet-owt-7be5be79.pth"
    assert message.endswith(f"); fetch {ALEXNET.url} by hand and place it at {path}")
    assert list(torch_home.iterdir()) == []  # no partial file, no file with a wrong hash


def test_offline_train_exits_2_naming_file_and_url(torch_home, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.hub, "urlopen", _fail_with(URLError("no network")))
    config = tmp_path / "alexnet.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(make_tiny_voc(tmp_path / "data"))))
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    overrides = ["--set", "model.backbone=alexnet", "--set", "model.weights=imagenet"]
    assert main([*args, *overrides]) == 2
    err = capsys.readouterr().err
    path = torch_home / "alexnet-owt-7be5be79.pth"
    assert err == (
        "detect train: error: model.weights: cannot download the ImageNet weights of alexnet "
        f"(URLError: <urlopen error no network>); fetch {ALEXNET.url} by hand and place it at "
        f"{path}\n"
    )
    assert list(torch_home.iterdir()) == []
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backbone", ["zf5", "tiny"])
def test_a_backbone_without_imagenet_weights_is_one_line(torch_home, backbone):
    with pytest.raises(DetectError) as caught:
        load_backbone(backbone, "imagenet")
    assert str(caught.value) == (
        f"model.weights: torchvision has no ImageNet weights for backbone {backbone!r} "
        "(only ['alexnet', 'vgg16'] have them); use weights: none or a state dict path"
    )
    assert not torch_home.exists()  # nothing looked up, nothing created
