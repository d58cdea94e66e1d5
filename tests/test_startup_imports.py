"""What a fresh process imports: ``detect --help`` and a fully cached ``detect proposals`` rerun
start without torch, OpenCV or scikit-learn (importing torch alone takes seconds)."""

import subprocess
import sys

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
