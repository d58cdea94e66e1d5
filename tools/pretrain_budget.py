"""SPP pretraining against training from scratch at several fine-tuning budgets and seeds.

For each seed: the demo's backbone pretraining (``detect.classify.demo.pretrain_backbone``: the
objects of ``demo.pretrain_images`` other generated images, ``demo.pretrain_overrides``), then,
for each budget, one detector from scratch and one from the pretrained backbone, fine-tuned with
the same iterations (lr step at 80% of them, as the demo's 320 of 400) and nothing else different;
each is scored (VOC07 mAP) on the demo's test split and on a validation set generated apart. The
table of docs/classification.md ("The comparison: the same fine-tuning budget") is this tool's
output with ``--seeds 0 1 2 --iterations 400 600 1200`` and ``--threads 1``.

::

    python tools/pretrain_budget.py --work runs/pretrain_budget --seeds 0 --iterations 400 1200

Writes only under ``--work``: the data sets (the demo's, the pretraining sets, the validation
set), proposal caches, checkpoints and ``results.jsonl`` (one line per detector, read back on a
rerun: finished rows are not trained again).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path


def _row_key(row: dict) -> tuple:
    """What a result depends on beyond the shipped demo config."""
    return row["seed"], row["iterations"], row["start"], row["val_images"], row["val_seed"]


def _table(rows: list[dict]) -> str:
    """Markdown: one line per seed and budget, val / test mAP from scratch and pretrained."""
    cells = {
        (r["seed"], r["iterations"], r["start"]): f"{r['val']:.3f} / {r['test']:.3f}" for r in rows
    }
    lines = ["| iterations | seed | from scratch | pretrained |", "| --- | --- | --- | --- |"]
    for seed, iterations in sorted(
        {(r["seed"], r["iterations"]) for r in rows}, key=lambda k: (k[1], k[0])
    ):
        scratch = cells.get((seed, iterations, "scratch"), "-")
        pretrained = cells.get((seed, iterations, "pretrained"), "-")
        lines.append(f"| {iterations} | {seed} | {scratch} | {pretrained} |")
    return "\n".join(lines)


def _ensure_set(root: Path, cfg, num_trainval: tuple[int, int], num_test: int, seed: int) -> None:
    """A generated data set at ``root`` with the demo's image size, and its proposals."""
    from detect.data import load_dataset
    from detect.data.synthetic import ensure_synthetic_dataset
    from detect.proposals import load_or_compute_proposals

    ensure_synthetic_dataset(
        root,
        num_train=num_trainval[0],
        num_val=num_trainval[1],
        num_test=num_test,
        image_size=tuple(cfg.demo.image_size),
        seed=seed,
    )
    splits = ("trainval", "test") if sum(num_trainval) else ("test",)
    proposals = replace(cfg.proposals, cache_dir=str(root / "proposals"))
    for split in splits:
        load_or_compute_proposals(load_dataset(root, split, cfg.data.classes), proposals)


def _detector(cfg, out_dir: Path, demo_root: Path, val_root: Path) -> dict:
    """Train (or reuse a finished) SPP-net; its VOC07 mAP on the test and validation sets."""
    from detect.evaluation.checkpoint_eval import evaluate_checkpoint
    from detect.training import train

    run = train(cfg, out_dir=out_dir, method="spp", resume=(out_dir / "checkpoint.pt").is_file())
    scores = {}
    for name, root in (("val", val_root), ("test", demo_root)):
        evaluation = evaluate_checkpoint(
            run.checkpoint,
            data_root=root,
            split="test",
            out_dir=out_dir / f"eval_{name}",
            proposal_cache=root / "proposals",
        )
        scores[name] = round(evaluation.mAP, 4)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/pretrain_budget"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--iterations", type=int, nargs="+", default=[400, 1200])
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--val-seed", type=int, default=55)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if min(args.iterations) < 1 or args.val_images < 1:
        parser.error(
            f"--iterations and --val-images must be >= 1, got {args.iterations} and "
            f"{args.val_images}"
        )
    logging.basicConfig(level=logging.WARNING)
    from detect.errors import DetectError

    try:
        return _run(args)
    except DetectError as exc:  # bad input: one line, no traceback
        print(f"pretrain_budget: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:

    import torch

    from detect.classify.demo import pretrain_backbone
    from detect.config import load_config
    from detect.data import load_dataset
    from detect.demo import DEMO_CONFIG

    for seed in args.seeds:  # a bad seed is one line before any data set is generated
        load_config(DEMO_CONFIG, [f"seed={seed}"])
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work.resolve()
    demo_root, val_root = work / "demo", work / "val"
    demo = load_config(DEMO_CONFIG)
    d = demo.demo
    # The demo's own images (its seed) for every training seed; the validation set apart.
    _ensure_set(demo_root, demo, (d.num_train, d.num_val), d.num_test, demo.seed)
    _ensure_set(val_root, demo, (0, 0), args.val_images, args.val_seed)
    results_path = work / "results.jsonl"
    done = {}
    if results_path.is_file():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            done[_row_key(row)] = row
    asked = []
    for seed in args.seeds:
        common = [
            f"seed={seed}",
            f"data.root={demo_root}",
            f"proposals.cache_dir={demo_root / 'proposals'}",
            f"demo.pretrain_root={work / f'pretrain_set_seed{seed}'}",  # seed + 1000, as the demo
        ]
        cfg = load_config(DEMO_CONFIG, common)
        train_set = load_dataset(demo_root, cfg.data.train_split, cfg.data.classes)
        backbone = pretrain_backbone(cfg, train_set, work / f"pretrain_seed{seed}").resolve()
        for iterations in args.iterations:
            budget = [
                f"finetune.iterations={iterations}",
                f"finetune.lr_steps=[{iterations * 4 // 5}]",
            ]
            for start, weights in (("scratch", []), ("pretrained", [f"model.weights={backbone}"])):
                row = {"seed": seed, "iterations": iterations, "start": start}
                row |= {"val_images": args.val_images, "val_seed": args.val_seed}
                if _row_key(row) not in done:
                    det_cfg = load_config(DEMO_CONFIG, [*common, *budget, *weights])
                    out = work / f"{start}_{iterations}_seed{seed}"
                    row |= _detector(det_cfg, out, demo_root, val_root)
                    with results_path.open("a") as file:
                        file.write(json.dumps(row) + "\n")
                    done[_row_key(row)] = row
                asked.append(done[_row_key(row)])
                print(json.dumps(asked[-1]), flush=True)
    print(f"\nVOC07 mAP, val ({args.val_images} images) / test (the demo's):\n")
    print(_table(asked))
    print(f"\nresults: {results_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
