"""``oanet train``: train OANet from a YAML config, on one CPU or, under torchrun, on many GPUs."""

from __future__ import annotations

import argparse

HELP = "train OANet from a YAML config (one process per device under torchrun)"

EPILOG = """\
examples:
  oanet synth --out datasets/synthetic     # once: the benchmark the synthetic_cpu preset reads
  oanet train --config synthetic_cpu --output runs/demo
  oanet train --config configs/coco_r50.yaml --output runs/r50 solver.ims_per_batch=8 solver.scale_lr_with_batch=true
  oanet train --config configs/coco_r50.yaml --output runs/r50 --resume
  torchrun --nproc-per-node 8 -m oanet.cli train --config configs/coco_r50.yaml --output runs/r50
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML config (see configs/)")
    parser.add_argument(
        "--output", metavar="DIR", default=None,
        help="output folder for checkpoints, metrics and config.yaml (default: the config's output_dir)",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from DIR/last.pth (starts at iteration 0 when there is none yet)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="config overrides, e.g. solver.max_iter=2000 model.backbone.depth=101",
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from oanet.config import load_config

    cfg = load_config(args.config, list(args.overrides))
    if args.output is not None:
        cfg = dataclasses.replace(cfg, output_dir=args.output)
    check_training_json(cfg.data.train.panoptic_json)

    from oanet.errors import make_dir

    make_dir(cfg.output_dir, "output folder (output_dir)")  # before the (slow) imports and the work
    from oanet.train.trainer import train

    summary = train(cfg, resume=args.resume)
    if summary.get("world_size", 1) == 1 or _is_rank_zero():
        print(json.dumps({k: v for k, v in summary.items() if k != "metrics"}))
    return 0


def check_training_json(panoptic_json: str) -> None:
    """FileNotFoundError with what to do when the training JSON is missing: before the slow imports, and
    with a hint a fresh clone needs (the presets name data that `oanet synth` or a download makes)."""
    from pathlib import Path

    path = Path(panoptic_json)
    if not panoptic_json or path.is_file():
        return  # an unset path is the trainer's error; a present one is read there
    if path.name == "panoptic_train.json" and path.parent.name == "annotations":  # the layout `oanet synth` writes
        root = path.parent.parent
        hint = (f"generate the synthetic benchmark with `oanet synth --out {root}` "
                f"(or, after `oanet demo`, link its identical oanet-demo/data to {root})")
    else:
        hint = "download the dataset there (docs/training.md) or point data.train.* at yours (KEY=VALUE overrides)"
    raise FileNotFoundError(f"{path}: training JSON (data.train.panoptic_json) not found; {hint}")


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
