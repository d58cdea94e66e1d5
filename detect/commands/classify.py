"""``detect classify train | eval | predict``: the image classifier with image-level SPP
(:mod:`detect.classify`, docs/classification.md).

* ``train --config YAML|NAME [--data ROOT] [--out DIR] [--mode fixed|single|multi|variable]
  [--resume | --overwrite]``: ``checkpoint.pt``, ``config.yaml``, ``train_log.csv`` in ``--out``;
* ``eval --checkpoint CK [--data ROOT] [--split test] [--json OUT]``: top-1 (and top-5 with more
  than 5 classes) error for the centre crop, the warp and the full image at its own size;
* ``predict --checkpoint CK IMAGE... [--top 3] [--json OUT]``: each image's best classes, the
  full image at its own size (the fixed-size network: warped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detect.commands import add_config_argument, add_override_argument, add_runtime_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = sub.add_parser("train", help="train a classifier (modes a-d)")
    add_config_argument(train, "its model and classify sections; default: the paper's settings")
    train.add_argument("--data", help="ImageFolder root <root>/<split>/<class>/ (classify.root)")
    train.add_argument("--out", type=Path, default=Path("runs/classify"), help="run folder")
    train.add_argument(
        "--mode",
        choices=["fixed", "single", "multi", "variable"],
        help="(a) fixed 224 without SPP, (b) SPP at 224, (c) SPP 224/180 alternating per epoch, "
        "(d) SPP at a random size per batch (default: classify.mode)",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_override_argument(train, "classify.epochs=10")
    add_runtime_arguments(train)

    evaluate = sub.add_parser("eval", help="top-1 / top-5 error per test view")
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--data", help="ImageFolder root (default: the checkpoint's)")
    evaluate.add_argument("--split", help="sub-folder to test (default: classify.test_split)")
    evaluate.add_argument("--json", type=Path, help="also write the errors to this json file")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    add_runtime_arguments(evaluate)

    predict = sub.add_parser("predict", help="classify images at their own size")
    predict.add_argument("--checkpoint", type=Path, required=True)
    predict.add_argument("images", nargs="+", type=Path, help="image files")
    predict.add_argument("--top", type=int, default=3, help="classes shown per image")
    predict.add_argument("--json", type=Path, help="also write the predictions to this json")
    add_runtime_arguments(predict)


def _runtime(args: argparse.Namespace) -> dict[str, str]:
    """The ``--device`` / ``--precision`` values given (folded into ``args.overrides``)."""
    pairs = (item.split("=", 1) for item in getattr(args, "overrides", None) or [])
    return {key.split(".", 1)[1]: value for key, value in pairs if key.startswith("runtime.")}


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "predict": _predict}[args.action](args)


def _train(args: argparse.Namespace) -> int:
    from detect.classify.train import train_classifier
    from detect.config import load_config

    extra = [f"classify.root={args.data}"] if args.data else []
    extra += [f"classify.mode={args.mode}"] if args.mode else []
    cfg = load_config(args.config, [*args.overrides, *extra])
    result = train_classifier(
        cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet
    )
    last = result.rows[-1] if result.rows else {}
    print(
        f"trained mode {cfg.classify.mode} ({len(result.class_names)} classes: "
        f"{', '.join(result.class_names)}) for {cfg.classify.epochs} epochs; last epoch: loss "
        f"{last.get('loss', float('nan')):.4f}, training error {last.get('train_error', 0):.3f}"
    )
    print(f"  run folder  {args.out}: checkpoint.pt, config.yaml, train_log.csv")
    print(f"next: detect classify eval --checkpoint {result.checkpoint}")
    return 0


def _loaded(args: argparse.Namespace):
    from detect.classify.evaluate import load_classifier

    runtime = _runtime(args)
    return load_classifier(args.checkpoint, runtime.get("device"), runtime.get("precision"))


def _eval(args: argparse.Namespace) -> int:
    from detect.classify.data import read_image_folder
    from detect.classify.evaluate import evaluate_classifier, format_errors
    from detect.files import atomic_write_text

    loaded = _loaded(args)
    c = loaded.config.classify
    _, samples = read_image_folder(
        args.data or c.root, args.split or c.test_split, loaded.class_names
    )
    errors = evaluate_classifier(loaded, samples, progress=not args.quiet)
    print(format_errors(errors, len(samples), c.test_size))
    if args.json:
        record = {"checkpoint": str(args.checkpoint), "num_images": len(samples), **errors}
        atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from detect.data.images import read_image
    from detect.files import atomic_write_text

    loaded = _loaded(args)
    view = "full" if "full" in loaded.views() else "warp"
    max_pixels = loaded.config.data.max_image_pixels
    images = [read_image(path, max_pixels) for path in args.images]
    probabilities = loaded.logits(images, view).softmax(dim=1)
    top = max(1, min(args.top, len(loaded.class_names)))
    records = {}
    for path, probs in zip(args.images, probabilities, strict=True):
        values, indices = probs.topk(top)
        best = [
            (loaded.class_names[int(i)], float(v)) for v, i in zip(values, indices, strict=True)
        ]
        records[str(path)] = [{"class": name, "probability": p} for name, p in best]
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in best))
    if args.json:
        atomic_write_text(args.json, json.dumps(records, indent=1) + "\n")
    return 0
