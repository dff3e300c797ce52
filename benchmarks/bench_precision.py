"""How much bf16 (and, on CUDA, fp16) inference changes OANet's panoptic maps, against fp32.

    python benchmarks/bench_precision.py                                  # random tiny model: the worst case
    python benchmarks/bench_precision.py --checkpoint runs/demo/train/model_final.pth \\
        --images datasets/synthetic/images/val --limit 100                # a trained model, real inputs

For every image and both fusion orders: the share of pixels whose segment differs, up to a renaming
of segment ids (``oanet.evaluation.differences.panoptic_map_difference``), between the fp32 result
and the result under each other precision; the report gives the mean, the maximum, the share of
maps that are identical, and the median seconds per image of each precision. Without
``--checkpoint`` a random-init tiny model (the test suite's) is used on synthetic images: random
weights have no margins, so every near-tie of scores, mask or class logits can flip; a trained
model is the number to quote.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from oanet.data.images import list_image_files, load_rgb_image
from oanet.inference.torch_predictor import Predictor
from oanet.evaluation.differences import panoptic_map_difference


def synthetic_rgbs(n: int, size: int) -> list:
    from oanet.data.synthetic.image import render_image

    return [render_image(0, "val", i, size)["rgb"] for i in range(n)]


def tiny_checkpoint(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import write_tiny_checkpoint

    return write_tiny_checkpoint(folder / "tiny.pth")


def compare(checkpoint: Path, rgbs: list, device: str, precisions: list) -> dict:
    predictors = {p: Predictor.from_checkpoint(checkpoint, device=device, order="both", precision=p)
                  for p in ["fp32"] + precisions}
    seconds: dict = {p: [] for p in predictors}
    diffs: dict = {p: [] for p in precisions}
    for rgb in rgbs:
        results = {}
        for p, predictor in predictors.items():
            start = time.perf_counter()
            results[p] = predictor(rgb)
            seconds[p].append(time.perf_counter() - start)
        for p in precisions:
            diffs[p] += [panoptic_map_difference(results["fp32"][o].panoptic, results[p][o].panoptic)
                         for o in ("score", "srm")]
    return {
        p: {
            "maps": len(diffs[p]),
            "mean_pixel_share_differing": float(np.mean(diffs[p])),
            "max_pixel_share_differing": float(np.max(diffs[p])),
            "share_of_maps_identical": float(np.mean([d == 0 for d in diffs[p]])),
            "median_s_per_image": statistics.median(seconds[p]),
            "fp32_median_s_per_image": statistics.median(seconds["fp32"]),
        }
        for p in precisions
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="model_final.pth of oanet train (default: a random tiny model)")
    parser.add_argument("--images", help="folder of images (default: synthetic images)")
    parser.add_argument("--limit", type=int, default=16, help="number of images")
    parser.add_argument("--size", type=int, default=96, help="synthetic image size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.images:
        rgbs = [load_rgb_image(p) for p in list_image_files(args.images)[: args.limit]]
    else:
        rgbs = synthetic_rgbs(args.limit, args.size)
    precisions = ["bf16"] + (["amp_fp16"] if args.device.startswith("cuda") else [])
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(Path(tmp))
        report = {"checkpoint": args.checkpoint or "random tiny model", "images": len(rgbs), "device": args.device,
                  "results": compare(checkpoint, rgbs, args.device, precisions)}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
