"""``oanet pq``: Panoptic Quality of COCO-format predictions, with the COCO panoptic API's semantics."""

from __future__ import annotations

import argparse

HELP = "Panoptic Quality (PQ/SQ/RQ) of COCO panoptic predictions against a ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt-json", required=True, help="ground-truth COCO panoptic JSON")
    parser.add_argument("--gt-dir", required=True, help="folder of the ground-truth PNGs")
    parser.add_argument("--pred-json", required=True, help="predicted COCO panoptic JSON")
    parser.add_argument("--pred-dir", required=True, help="folder of the predicted PNGs")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="threads (processes without the C extension; default: all cores; 0 or 1: in this thread)",
    )
    parser.add_argument("--output", help="write the results (All/Things/Stuff and per class) to this JSON file")
    parser.add_argument("--per-class", action="store_true", help="also print a table of every counted class")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import gc
    import json
    import os
    import time
    from pathlib import Path

    # PQ makes no BLAS call: without this, importing numpy starts a BLAS thread per core, which costs
    # tens of milliseconds of start-up and spins on the cores the evaluation wants. A user's setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The JSONs make ~10 Python objects per segment, all alive until the process ends and none in a
    # cycle: the cyclic collector would only walk them, again and again, while they are parsed.
    gc.disable()

    from oanet.errors import ConfigError, make_dir
    from oanet.evaluation.pq import format_per_class_table, format_table, pq_compute

    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if args.output and Path(args.output).is_dir():
        raise ConfigError(f"{args.output}: --output names a folder; give a JSON file name")
    if args.output:
        make_dir(Path(args.output).parent, "folder of --output")  # before the evaluation, not after
    start = time.perf_counter()
    result = pq_compute(
        args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, workers=args.workers, progress=not args.no_progress
    )
    elapsed = time.perf_counter() - start
    if args.per_class:
        print(format_per_class_table(result))
        print()
    print(format_table(result))
    print(f"{result.n_images} images in {elapsed:.2f} s ({result.n_images / elapsed:.0f} images/s)")
    if args.output:
        output = Path(args.output)
        try:
            output.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"{output}: cannot write the results ({exc.strerror or exc})") from None
        print(f"results written to {output}")
    return 0
