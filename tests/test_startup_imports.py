"""What a fresh process imports: ``detect --help`` and a fully cached ``detect proposals`` rerun
start without torch, OpenCV or scikit-learn, and a proposal worker runs without torch (importing
torch alone takes seconds)."""

import subprocess
import sys

from proposals_testdata import synthetic_image

from detect.cli import main
from detect.data.images import write_image

HEAVY = ("torch", "cv2", "sklearn")

# Runs the CLI with the arguments it is given, then prints which heavy modules it imported.
CLI_THEN_MODULES = f"""
import sys
from detect.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit_:
    status = exit_.code
print("heavy modules:", [m for m in {HEAVY!r} if m in sys.modules])
sys.exit(status)
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``detect ARGS`` in a fresh interpreter, its last line naming the heavy modules loaded."""
    return subprocess.run(
        [sys.executable, "-c", CLI_THEN_MODULES, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_imports_no_heavy_module():
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    assert "Detect objects in images with SPP-net" in done.stdout
    assert done.stdout.splitlines()[-1] == "heavy modules: []"


def test_a_fully_cached_proposals_rerun_imports_no_heavy_module(tmp_path):
    voc, cache = tmp_path / "voc", tmp_path / "cache"
    synth = ["synth", "--out", str(voc), "--train", "2", "--val", "0", "--test", "0"]
    assert main([*synth, "--size", "64x80"]) == 0
    args = ["proposals", "--data", str(voc), "--split", "train", "--out", str(cache)]
    args += ["--set", "proposals.resize_long_side=80"]
    assert main(args) == 0  # computes and caches both images
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "2 images, 2 cached, 0 computed" in done.stdout
    assert done.stdout.splitlines()[-1] == "heavy modules: []"


# What a spawned proposal worker runs: its module's imports, its initializer and one image.
WORKER_THEN_MODULES = """
import sys
from detect.proposals.cache import ProposalCache
from detect.proposals.compute import ImageItem, _compute_one, _init_worker
_init_worker()
task = (ImageItem("a", sys.argv[1]), ProposalCache(sys.argv[2], resize_long_side=80), 10**8)
image_id, boxes, seconds, error = _compute_one(task)
print(image_id, None if boxes is None else boxes.shape[1], error)
print("torch imported:", "torch" in sys.modules)
"""


def test_a_proposal_worker_never_imports_torch(tmp_path):
    image = tmp_path / "a.png"
    write_image(image, synthetic_image()[0])
    done = subprocess.run(
        [sys.executable, "-c", WORKER_THEN_MODULES, str(image), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["a 4 ", "torch imported: False"]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the worker wrote its entry
