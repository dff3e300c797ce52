"""FLOPs of the panoptic parts alone, per image: the stuff head and the SRM (``torch.utils.flop_counter``).

    python benchmarks/bench_flops_parts.py --preset demo r50_512 --channels 128 64

What OANet adds over Mask R-CNN in FLOPs, machine-independent and without timing, so it may run beside
other work (BENCHMARKS.md, "OANet against Mask R-CNN"). The presets are bench_overhead.py's: the same
model configs and input sizes; the stuff head sees FPN features of the preset's size, the SRM an
occupancy map with one channel per thing class at its stride.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_overhead  # noqa: E402  (a sibling script, not a package)

from oanet.model.oanet import OANet  # noqa: E402
from oanet.model.stuff_head import LEVELS  # noqa: E402


def part_gflops(preset_name: str, channels: int | None = None) -> dict:
    """``{"preset", "stuff_head_channels", "stuff_head", "srm"}``: forward GFLOPs per image."""
    preset = bench_overhead.PRESETS[preset_name]
    cfg = bench_overhead.model_config(preset)
    if channels:
        cfg = dataclasses.replace(cfg, stuff_head=dataclasses.replace(cfg.stuff_head, channels=channels))
    torch.manual_seed(0)
    model = OANet.from_config(cfg).eval()
    h, w = preset.size
    width = model.backbone.out_channels
    features = OrderedDict((key, torch.randn(1, width, h // 2 ** (i + 2), w // 2 ** (i + 2)))
                           for i, key in enumerate(LEVELS))
    stride = model.srm.stride
    occupancy = torch.zeros(1, preset.things, h // stride, w // stride)
    with torch.no_grad():
        return {"preset": preset_name, "stuff_head_channels": cfg.stuff_head.channels,
                "stuff_head": bench_overhead.gflops(lambda: model.stuff_head(features)),
                "srm": bench_overhead.gflops(lambda: model.srm(occupancy))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["demo", "r50_512"], choices=sorted(bench_overhead.PRESETS))
    parser.add_argument("--channels", nargs="+", type=int, default=[0],
                        help="stuff head widths to count (0: the preset's own)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [part_gflops(name, channels or None) for name in args.preset for channels in args.channels]
    print("| preset | stuff head channels | stuff head GFLOPs | SRM GFLOPs |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['preset']} | {row['stuff_head_channels']} | {row['stuff_head']:.2f} | {row['srm']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
