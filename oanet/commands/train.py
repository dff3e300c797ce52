"""``oanet train``: train OANet from a YAML config, on one CPU or, under torchrun, on many GPUs."""

from __future__ import annotations

import argparse

HELP = "train OANet from a YAML config (one process per device under torchrun)"

EPILOG = """\
examples:
  oanet train --config configs/synthetic_cpu.yaml --output runs/demo
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

    from oanet.errors import make_dir

    make_dir(cfg.output_dir, "output folder (output_dir)")  # before the (slow) imports and the work
    from oanet.train.trainer import train

    summary = train(cfg, resume=args.resume)
    if summary.get("world_size", 1) == 1 or _is_rank_zero():
        print(json.dumps({k: v for k, v in summary.items() if k != "metrics"}))
    return 0


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
