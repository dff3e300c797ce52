"""``oanet synth``: write the synthetic occlusion benchmark (COCO panoptic layout). No torch."""

from __future__ import annotations

import argparse

HELP = "generate the synthetic occlusion benchmark (COCO panoptic + amodal instances)"

# Mirrors oanet.data.synthetic's defaults; kept literal here so `--help` imports nothing heavy.
DEFAULT_TRAIN = 2000
DEFAULT_VAL = 300
DEFAULT_SIZE = 256
DEFAULT_SEED = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created; must be empty)")
    parser.add_argument("--train", type=int, default=DEFAULT_TRAIN, metavar="N",
                        help=f"number of training images (default {DEFAULT_TRAIN})")
    parser.add_argument("--val", type=int, default=DEFAULT_VAL, metavar="M",
                        help=f"number of validation images (default {DEFAULT_VAL})")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="S",
                        help=f"image side in pixels, 64..2048; shapes scale with it (default {DEFAULT_SIZE})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="K",
                        help=f"random seed; same arguments give the same bytes (default {DEFAULT_SEED})")
    parser.add_argument("--workers", type=int, default=None, metavar="W",
                        help="worker processes (default: all available cores); does not change the output")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset already in DIR (only the files synth writes are removed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import time

    from oanet.data.synthetic import generate_dataset

    start = time.perf_counter()
    result = generate_dataset(args.out, train=args.train, val=args.val, size=args.size, seed=args.seed,
                              workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    stats = result["stats"]
    print(f"wrote {stats['images']} images ({args.train} train, {args.val} val, {args.size} px) to {result['root']} "
          f"in {time.perf_counter() - start:.1f} s")
    print(f"thing instances: {stats['things']}, overlapping another: {100 * stats['overlap_fraction']:.1f}%, "
          f"same-class overlapping pairs: {stats['same_class_overlap_pairs']}, images with a crowd: "
          f"{stats['crowd_images']}, void pixels: {100 * stats['void_fraction']:.2f}%")
    for split in ("train", "val"):
        paths = result[split]
        print(f"{split}: data.{split}.panoptic_json={paths['panoptic_json']} "
              f"data.{split}.panoptic_dir={paths['panoptic_dir']} data.{split}.image_dir={paths['image_dir']} "
              f"data.{split}.instances_json={paths['instances_json']}")
    return 0
