"""Mutation testing of the core modules with mutmut, one module at a time (``make mutation``).

Each module is mutated together with the test files that check it, in a fresh copy of the
project under ``build/mutation/<module>/`` (mutmut itself writes its mutated sources to a
``mutants/`` folder inside that copy), so the working tree's sources are never edited, even when a
run is interrupted. Per module it prints mutmut's counts and the surviving mutants; the scores of
the run go to ``build/mutation/scores.json``. ``docs/mutation.md`` explains how to read them.

Usage: ``python tools/mutation.py [--jobs N] [MODULE ...]`` (default: every module).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
FINETUNE_FUNCTIONS = (
    "detect.training.finetune.x_detection_loss",
    "detect.training.batches.x_image_order",
    "detect.training.batches.x__epoch_permutation",
)
KILLED = ("killed", "timeout", "caught by type check")

# module name -> (the sources mutated, the test files run against each mutant, and optionally the
# functions of those sources to mutate, as mutmut mutant-name patterns; default every function)
MODULES: dict[str, tuple[list[str], list[str], list[str]] | tuple[list[str], list[str]]] = {
    "boxes": (["detect/ops/boxes.py"], ["tests/ops/test_boxes.py"]),
    "spp": (
        ["detect/models/spp.py"],
        ["tests/models/test_spp.py", "tests/models/test_backbones.py"],
    ),
    "heads": (["detect/models/heads.py"], ["tests/models/test_heads.py"]),
    "sampling": (
        ["detect/training/sampling.py"],
        ["tests/training/test_sampling.py", "tests/training/test_multiscale_finetune.py"],
    ),
    "svm": (["detect/training/svm.py"], ["tests/training/test_svm.py"]),
    "bbox_reg": (["detect/training/bbox_reg.py"], ["tests/training/test_bbox_reg.py"]),
    # The fine-tuning loss and image order, not the training loop's plumbing (hooks: checkpoints,
    # logging, ...).
    "finetune_loss": (
        ["detect/training/finetune.py", "detect/training/batches.py"],
        ["tests/training/test_detection_loss.py", "tests/training/test_finetune.py"],
        [f"{name}__mutmut_*" for name in FINETUNE_FUNCTIONS],
    ),
    "schedule": (["detect/training/schedule.py"], ["tests/training/test_schedule.py"]),
    "voc": (
        ["detect/data/voc.py"],
        ["tests/data/test_voc.py", "tests/data/test_voc_xml_fields.py"],
    ),
    "coco": (
        ["detect/data/coco.py", "detect/evaluation/coco.py", "detect/evaluation/coco_results.py"],
        [
            "tests/test_coco.py",
            "tests/evaluation/test_coco_results_json.py",
            "tests/data/test_coco_reader_fields.py",
        ],
    ),
    "voc_ap": (["detect/evaluation/voc_ap.py"], ["tests/evaluation/test_voc_ap.py"]),
    "voc_files": (
        ["detect/evaluation/voc_files.py"],
        ["tests/evaluation/test_voc_files.py", "tests/evaluation/test_comp4_by_hand.py"],
    ),
    "proposal_cache": (
        ["detect/proposals/cache.py"],
        ["tests/proposals/test_proposals_cache.py", "tests/proposals/test_proposals_cache_keys.py"],
    ),
}

# What the tests read besides the package and the tests themselves.
COPIED = ("detect", "tests")  # the configs ship inside detect/configs/


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def prepare_copy(name: str, sources: list[str], tests: list[str]) -> Path:
    """A fresh copy of the project for ``name`` whose pyproject.toml configures mutmut."""
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for entry in COPIED:
        shutil.copytree(ROOT / entry, work / entry, ignore=shutil.ignore_patterns("__pycache__"))
    settings = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["detect"]',
            f"only_mutate = {_toml_list(sources)}",
            f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
            "use_git_change_detection = false",
            # Workers fork from a clean server process: forked from one that ran torch, numpy's
            # BLAS or liblinear they can deadlock, and a hang would count as a (timeout) kill.
            'process_isolation = "forkserver"',
            "",
        ]
    )
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + settings)
    return work


# One thread per test process: mutmut runs several at once, on few cores.
SINGLE_THREADED = {
    name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
}


def mutmut(work: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mutmut", *args]
    environment = {**os.environ, **SINGLE_THREADED}
    return subprocess.run(command, cwd=work, text=True, capture_output=True, env=environment)


def mutant_statuses(work: Path, patterns: list[str]) -> dict[str, str]:
    """mutant name -> mutmut's status, for the mutants matching ``patterns`` (all when empty)."""
    listing = mutmut(work, "results", "--all", "true")
    listing.check_returncode()
    statuses = {}
    for line in listing.stdout.splitlines():
        name, _, status = line.strip().partition(": ")
        if status and (not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)):
            statuses[name] = status
    return statuses


def run_module(name: str, jobs: int) -> dict:
    sources, tests, *selection = MODULES[name]
    missing = [path for path in sources + tests if not (ROOT / path).is_file()]
    if missing:
        raise SystemExit(f"module {name}: {', '.join(missing)} not found (update MODULES)")
    patterns = selection[0] if selection else []
    work = prepare_copy(name, sources, tests)
    print(f"== {name}: {', '.join(sources)} against {', '.join(tests)}", flush=True)
    run = mutmut(work, "run", "--max-children", str(jobs), *patterns)
    if run.returncode != 0:
        print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
        raise SystemExit(f"mutmut run failed for {name}")
    statuses = mutant_statuses(work, patterns)
    killed = sum(status in KILLED for status in statuses.values())
    not_killed = {m: status for m, status in statuses.items() if status not in KILLED}
    score = round(killed / len(statuses), 4) if statuses else None
    timeouts = sum(status == "timeout" for status in statuses.values())
    print(
        f"   {killed}/{len(statuses)} killed ({score:.1%}; {timeouts} of them by timeout)"
        if statuses
        else "   no mutants"
    )
    for mutant, status in not_killed.items():
        print(f"   {mutant}: {status}")
    print(f"   (mutmut show NAME in {work} prints a mutant's diff)", flush=True)
    return {
        "killed": killed,
        "timeouts": timeouts,
        "total": len(statuses),
        "score": score,
        "not_killed": not_killed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", choices=[[], *MODULES], metavar="MODULE")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested in parallel")
    args = parser.parse_args(argv)
    scores_path = WORK / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    for name in args.modules or list(MODULES):
        scores[name] = run_module(name, args.jobs)
        scores_path.write_text(json.dumps(scores, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
