"""Measure the figures quoted in docs/model.md: parameter counts and inference cost of OANet.

    python benchmarks/bench_model.py                     # R50, 512x512, CPU, 2 threads, best of 3
    python benchmarks/bench_model.py --size 800 --repeat 5 --device cuda

Random init, nothing downloaded, default thresholds. A random box classifier spreads each proposal's
probability over all 81 classes (scores ~0.012, no detections); its weights are multiplied by
``--logit-scale`` (20) so every proposal is confident in one class, as with a trained model. Then
``detections_per_img`` (100) detections, all above ``fusion.score_thresh``, reach the mask head, the
SRM and the fusion: the worst case a trained model can produce, so the SRM + fusion share is an upper
bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_overhead import label_space, part_timers, timed
from oanet.config import ModelConfig
from oanet.model.fusion import fuse
from oanet.model.oanet import OANet


def count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def parameter_counts(model: OANet) -> dict:
    b = model.backbone
    return {
        "total": count(model),
        "resnet (instance/shared)": count(b.body),
        "fpn (instance/shared)": count(b.fpn),
        "resnet (stuff, sharing=none)": count(b.stuff_body),
        "fpn (stuff, sharing!=fpn)": count(b.stuff_fpn),
        "rpn": count(model.rpn),
        "roi_heads.box": count(model.roi_heads.box_head) + count(model.roi_heads.box_predictor),
        "roi_heads.mask": count(model.roi_heads.mask_head) + count(model.roi_heads.mask_predictor),
        "stuff_head": count(model.stuff_head),
        "srm": count(model.srm),
    }


def bench_config(sharing: str, size: int, things: int, stuff: int, detections: int = 100) -> ModelConfig:
    cfg = ModelConfig(num_thing_classes=things, num_stuff_classes=stuff, sharing=sharing, min_size=(size,), max_size=size)
    return dataclasses.replace(cfg, roi_heads=dataclasses.replace(cfg.roi_heads, detections_per_img=detections))


def time_once(model: OANet, image: torch.Tensor, labels, device: torch.device) -> dict:
    """One inference + fusion in both orders; the SRM step inside forward is timed separately."""
    # The feature extractor alone (ResNet(s) + FPN(s)): the part the sharing modes differ in.
    padded = image.new_zeros((1, 3) + tuple(-(-d // 32) * 32 for d in image.shape[-2:]))
    backbone_s = timed(lambda: model.backbone(padded), device)

    parts: dict = {}
    with part_timers(model, {"srm": (model, "rank_detections")}, device, parts):
        outputs = []
        forward_s = timed(lambda: outputs.append(model([image])[0]), device)
    output = outputs[0]
    fusion_s = timed(lambda: fuse(output, labels, model.cfg.stuff_head.classes, model.cfg.fusion), device)
    total = forward_s + fusion_s
    return {
        "forward_s": forward_s,
        "backbone_s": backbone_s,
        "srm_s": parts["srm"],
        "fusion_both_orders_s": fusion_s,
        "total_s": total,
        "srm_plus_fusion_share": (parts["srm"] + fusion_s) / total,
        "detections": int(output["boxes"].shape[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", type=int, default=512, help="square input side (pixels)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per mode (best is kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--things", type=int, default=80)
    parser.add_argument("--stuff", type=int, default=53)
    parser.add_argument("--detections", type=int, default=100, help="roi_heads.detections_per_img")
    parser.add_argument("--logit-scale", type=float, default=20.0, help="box classifier weight multiplier")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    labels = label_space(args.things, args.stuff)
    image = torch.rand(3, args.size, args.size, device=device)
    report = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "input": [args.size, args.size],
        "depth": args.depth,
        "detections_per_img": args.detections,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    models = {}
    for sharing in ("fpn", "none"):
        cfg = bench_config(sharing, args.size, args.things, args.stuff, args.detections)
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, depth=args.depth))
        models[sharing] = OANet.from_config(cfg).to(device).eval()
        with torch.no_grad():
            models[sharing].roi_heads.box_predictor.cls_score.weight.mul_(args.logit_scale)
        report[sharing] = {"parameters": parameter_counts(models[sharing])}
    # Interleaved runs (the first one warms up): load changes on a shared machine hit both modes alike.
    best: dict = {}
    with torch.inference_mode():
        for run in range(args.repeat + 1):
            for sharing, model in models.items():
                timing = time_once(model, image, labels, device)
                if run > 0 and (sharing not in best or timing["forward_s"] < best[sharing]["forward_s"]):
                    best[sharing] = timing
        for sharing, model in models.items():
            # Machine-independent cost (convolutions and matmuls; NMS, RoIAlign, resampling excluded).
            with FlopCounterMode(display=False) as counter:
                model([image])
            report[sharing]["gflops_forward"] = counter.get_total_flops() / 1e9
            with FlopCounterMode(display=False) as counter:
                model.backbone(image[None])
            report[sharing]["gflops_backbone"] = counter.get_total_flops() / 1e9
    for sharing in models:
        report[sharing]["timing_best"] = best[sharing]
    report["forward_ratio_fpn_over_none"] = best["fpn"]["forward_s"] / best["none"]["forward_s"]
    report["gflops_ratio_fpn_over_none"] = report["fpn"]["gflops_forward"] / report["none"]["gflops_forward"]
    report["backbone_ratio_fpn_over_none"] = best["fpn"]["backbone_s"] / best["none"]["backbone_s"]
    report["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
