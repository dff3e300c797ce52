"""``oanet srm train``: a standalone spatial ranking module, from panoptic annotations alone."""

from __future__ import annotations

import argparse

HELP = "train a spatial ranking module for any detector's masks (`oanet srm train`), for `oanet merge --srm`"

EPILOG = """examples:
  oanet srm train --panoptic-json panoptic_train2017.json --panoptic-dir panoptic_train2017 --out srm.pth
  oanet srm train --panoptic-json panoptic_train2017.json --panoptic-dir panoptic_train2017 \\
      --instances-json instances_train2017.json --predictions maskrcnn_train_results.json --out srm_pred.pth
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="srm_command", metavar="SUBCOMMAND", required=True)
    train = sub.add_parser("train", help="train an SRM from annotations (no images, no detector)",
                           description="Train an SRM from the instance masks of the annotations, perturbed as "
                                       "detector masks err, supervised by the panoptic labels on the overlaps.",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--panoptic-json", required=True, help="COCO panoptic JSON of the training split")
    train.add_argument("--panoptic-dir", required=True, help="folder of its PNGs")
    train.add_argument("--instances-json", help="COCO instances JSON of the same images (their masks overlap; "
                                                "default: the panoptic segments, perturbed)")
    train.add_argument("--predictions", metavar="RESULTS.json",
                       help="a detector's COCO instance results on these images: train on its own masks")
    train.add_argument("--out", required=True, help="the SRM file to write (e.g. srm.pth)")
    train.add_argument("--kernel", default="gcn7", choices=("1x1", "3x3", "gcn7"), help="SRM kernel (Table 5; gcn7)")
    train.add_argument("--perturbation", default="light", choices=("none", "light", "heavy"),
                       help="how the masks are perturbed as detector masks err: light = small shifts, dilations "
                            "and erosions; heavy adds spills into neighbours and partial amodal completion (light)")
    train.add_argument("--iterations", type=int, default=2000, help="SGD iterations (2000)")
    train.add_argument("--batch-size", type=int, default=8, help="images per iteration (8)")
    train.add_argument("--lr", type=float, default=0.02, help="learning rate (0.02, cosine decay)")
    train.add_argument("--short-side", type=int, default=800,
                       help="the scale masks are resized to, as a detector's input (800; the grid is 1/4 of it)")
    train.add_argument("--max-size", type=int, default=1333, help="longest side at that scale (1333)")
    train.add_argument("--score-thresh", type=float, default=0.5, help="with --predictions: the results kept (0.5)")
    train.add_argument("--seed", type=int, default=0, help="random seed (0)")
    train.add_argument("--checkpoint-period", type=int, default=500,
                       help="write OUT.resume every this many iterations; a killed run continues from it (500)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from oanet.data.coco_panoptic import PanopticSplit
    from oanet.errors import check_output_file
    from oanet.srm.samples import PERTURBATIONS, read_predictions
    from oanet.srm.training import SRMTrainConfig, train_spatial_ranker

    cfg = SRMTrainConfig(kernel=args.kernel, short_side=args.short_side, max_size=args.max_size,
                         iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         checkpoint_period=args.checkpoint_period, perturbation=PERTURBATIONS[args.perturbation])
    cfg.check()
    check_output_file(Path(args.out), "SRM file (--out)")
    split = PanopticSplit(args.panoptic_json, args.panoptic_dir, args.panoptic_dir, instances_json=args.instances_json)
    predictions = read_predictions(args.predictions, split) if args.predictions else None
    train_spatial_ranker(split, args.out, cfg, predictions, score_thresh=args.score_thresh, progress=not args.no_progress)
    return 0
