"""`detect run`: a folder with a readable image and an unreadable file; grey / RGBA inputs; the
bad-input cases (exit status 2)."""

import json

import cv2
import numpy as np
import pytest
from _tiny_model import red_box_scene, save_tiny_checkpoint

from detect.cli import main
from detect.data.images import write_image


@pytest.fixture
def checkpoint(tmp_path):
    return save_tiny_checkpoint(tmp_path / "model.pt", cache_dir=tmp_path / "cache")


def test_run_writes_json_and_drawing_and_skips_unreadable(tmp_path, checkpoint, capsys):
    images = tmp_path / "images"
    write_image(images / "scene.png", red_box_scene())
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    status = main(["run", "--checkpoint", str(checkpoint), str(images), "--out", str(out)])
    assert status == 1  # some image could not be read; the others are done
    payload = json.loads((out / "scene.json").read_text())
    assert payload["classes"] == ["circle", "square"]
    assert (payload["width"], payload["height"]) == (140, 100)
    assert all(0 <= d["box"][0] <= d["box"][2] <= 140 for d in payload["detections"])
    assert (out / "scene.jpg").is_file() and not (out / "broken.json").exists()
    captured = capsys.readouterr()
    assert "1 image(s) processed, 1 skipped" in captured.out
    last = captured.err.strip().splitlines()[-1]
    broken = images / "broken.jpg"
    assert (
        last == f"detect run: error: skipped image {broken}: not a readable image file (12 bytes)"
    )
    assert "Traceback" not in captured.err


def test_grey_and_rgba_inputs_give_the_colour_results_of_their_pixels(tmp_path, checkpoint, capsys):
    colour = red_box_scene()
    grey = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "grey.png"), grey)
    cv2.imwrite(str(images / "rgba.png"), cv2.cvtColor(colour, cv2.COLOR_RGB2BGRA))
    write_image(images / "grey3.png", np.repeat(grey[:, :, None], 3, axis=2))
    write_image(images / "colour.png", colour)
    out = tmp_path / "out"
    assert main(["run", "--checkpoint", str(checkpoint), str(images), "--out", str(out)]) == 0
    capsys.readouterr()
    results = {n: json.loads((out / f"{n}.json").read_text()) for n in ("grey", "grey3")}
    results.update({n: json.loads((out / f"{n}.json").read_text()) for n in ("rgba", "colour")})
    # A grey file is read as its grey value in all three channels; RGBA as its RGB pixels.
    assert results["grey"]["detections"] == results["grey3"]["detections"]
    assert results["rgba"]["detections"] == results["colour"]["detections"]
    drawn = cv2.imread(str(out / "rgba.jpg"))
    assert drawn.shape == (100, 140, 3)


def test_bad_input_is_one_line_and_exit_2(tmp_path, checkpoint, capsys):
    images = tmp_path / "images"
    write_image(images / "scene.png", red_box_scene())
    write_image(tmp_path / "other" / "scene.jpg", red_box_scene())
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "text.pt").write_text("hello")
    ck, out = str(checkpoint), str(tmp_path / "out")
    cases = [
        ([str(tmp_path / "empty")], "image folder", "empty: no images"),
        ([str(images), str(tmp_path / "other" / "scene.jpg")], "", "share the id 'scene'"),
        ([str(images), "--out", str(tmp_path / "a_file")], "", "a_file: exists and is not"),
        ([str(images), "--scales", "0"], "", "test.scales must be positive sizes, got (0,)"),
        ([str(images), "--checkpoint", str(tmp_path / "text.pt")], "", "text.pt: cannot read"),
    ]
    for args, start, message in cases:
        assert main(["run", "--checkpoint", ck, "--out", out, *args]) == 2, args
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"detect run: error: {start}"), err
        assert message in lines[0]
    assert not (tmp_path / "out").exists()
