"""What the panoptic part of OANet costs over torchvision's Mask R-CNN with the same instance network.

    python benchmarks/bench_overhead.py --preset demo r50_512 --repeat 10      # CPU, about 6 min idle
    python benchmarks/bench_overhead.py --preset tiny --repeat 1 --warmup 0    # seconds (smoke test)

Both models are built from one config (``--preset``: the demo's ``synthetic_cpu.yaml`` at 160 px,
``coco_r50.yaml`` at 512x512 or 800x1333, or the test suite's tiny one), random init:
torchvision's ``MaskRCNN`` gets OANet's ResNet+FPN, RPN and RoIHeads sizes (``build_rpn`` /
``build_roi_heads``) and a copy of OANet's weights for them, so both detect exactly the same boxes.

* **Training step** (both sides): ``zero_grad``, forward to the loss dict under the ``--precision``
  autocast, backward of the summed losses (through a GradScaler for fp16), SGD step (momentum and
  weight decay of the preset, learning rate 0 so every repetition does the same work). Same
  synthetic images and targets, same seed for the RPN/RoI samplers. OANet adds the stuff head, its
  full-resolution loss and the SRM.
* **Inference** on one image: Mask R-CNN's ``forward`` = resize and normalise, backbone, RPN,
  RoI heads with the mask head, and torchvision's postprocess, which pastes every detection's
  mask at the original size. OANet's ``forward`` does all of that (the same code) plus the stuff
  head, the SRM ranking of the selected detections and the stuff labels at the original size;
  then ``fuse`` in both orders (score and SRM). Both return their masks at full resolution.

A random box classifier gives no confident detections, so its weights are multiplied by a factor
(the same in both models; the largest of 20, 10, 5, ... at which the detection scores are distinct,
see ``calibrate``): then about ``detections_per_img`` detections (100 for R50, 50 for the demo)
reach the mask head and the full-size paste, and the score threshold is set so that ``--selected``
of them (20 by default, a busy COCO image) are ranked by the SRM and pasted by the fusion.

The two models alternate (which goes first alternates too), and the report gives medians and the
ratio of the medians, and a per-part breakdown of OANet's inference from separate runs. Shared by
benchmarks/gpu_check.py (same functions on CUDA).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import MaskRCNN

from oanet.config import ModelConfig, load_config
from oanet.data.labels import Category, LabelSpace
from oanet.model.precision import autocast, check_precision, uses_grad_scaler
from oanet.model import oanet as oanet_module
from oanet.model.backbone import OANetBackbone
from oanet.model.fusion import fuse
from oanet.model.oanet import OANet, build_roi_heads, build_rpn

CONFIGS = Path(oanet_module.__file__).resolve().parents[1] / "configs"


@dataclasses.dataclass(frozen=True)
class Preset:
    config: str  # a file in oanet/configs
    size: tuple  # (height, width) of the synthetic images; the model's input is the same size
    things: int
    stuff: int
    batch: int  # training images per step (one process)


PRESETS = {
    "demo": Preset("synthetic_cpu.yaml", (160, 160), 8, 5, 4),
    "r50_512": Preset("coco_r50.yaml", (512, 512), 80, 53, 2),
    "r50_800": Preset("coco_r50.yaml", (800, 1333), 80, 53, 2),
    "tiny": Preset("tiny_test.yaml", (64, 96), 3, 2, 2),
}

INCLUDES = {
    "maskrcnn_train": "forward (transform, ResNet+FPN, RPN, RoI heads with box and mask losses), backward, SGD step",
    "oanet_train": "the same + stuff head and its full-resolution loss + SRM and its loss",
    "maskrcnn_inference": "transform, ResNet+FPN, RPN, RoI heads + mask head, paste of every mask at the original size",
    "oanet_inference": "the same + stuff head, SRM ranking, stuff labels at the original size, fusion in both orders",
}


def model_config(preset: Preset) -> ModelConfig:
    cfg = load_config(CONFIGS / preset.config).model
    h, w = preset.size
    return dataclasses.replace(
        cfg, num_thing_classes=preset.things, num_stuff_classes=preset.stuff, min_size=(min(h, w),),
        max_size=max(h, w), backbone=dataclasses.replace(cfg.backbone, weights=None),
    )


class FPNFeatures(nn.Module):
    """ResNet + FPN as torchvision's ``BackboneWithFPN`` (same attribute and state-dict names)."""

    def __init__(self, body: nn.Module, fpn: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body, self.fpn, self.out_channels = body, fpn, out_channels

    def forward(self, x):
        return self.fpn(self.body(x))


def build_maskrcnn(cfg: ModelConfig) -> MaskRCNN:
    """torchvision's MaskRCNN with OANet's ResNet+FPN (frozen stages, norm), RPN and RoI heads."""
    backbone = OANetBackbone(cfg.backbone, "fpn")
    model = MaskRCNN(
        FPNFeatures(backbone.body, backbone.fpn, backbone.out_channels), num_classes=cfg.num_thing_classes + 1,
        min_size=tuple(cfg.min_size), max_size=cfg.max_size, image_mean=list(cfg.pixel_mean),
        image_std=list(cfg.pixel_std),
    )
    model.rpn = build_rpn(cfg.rpn, backbone.out_channels)
    model.roi_heads = build_roi_heads(cfg.roi_heads, backbone.out_channels, cfg.num_thing_classes)
    return model


def build_pair(cfg: ModelConfig, seed: int = 0) -> tuple[OANet, MaskRCNN]:
    """OANet and a Mask R-CNN holding a copy of its instance-branch weights."""
    torch.manual_seed(seed)
    oanet = OANet.from_config(cfg)
    maskrcnn = build_maskrcnn(cfg)
    own = oanet.state_dict()
    maskrcnn.load_state_dict({k: own[k] for k in maskrcnn.state_dict()}, strict=True)
    return oanet, maskrcnn


def synthetic_batch(n: int, size: tuple, things: int, stuff: int, classes: str = "all", instances: int = 6,
                    seed: int = 0) -> tuple[list, list, list]:
    """``n`` random images with overlapping elliptic instances: ``(images, oanet_targets, maskrcnn_targets)``."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy, xx = torch.arange(h)[:, None] + 0.5, torch.arange(w)[None, :] + 0.5
    images, targets, mr_targets = [], [], []
    for _ in range(n):
        r = torch.rand(instances, 4, generator=g)
        cy, cx = r[:, 0] * h, r[:, 1] * w
        ry, rx = (0.08 + 0.2 * r[:, 2]) * h, (0.08 + 0.2 * r[:, 3]) * w
        masks = (((yy - cy[:, None, None]) / ry[:, None, None]) ** 2 + ((xx - cx[:, None, None]) / rx[:, None, None]) ** 2) <= 1
        labels = torch.randint(0, things, (instances,), generator=g)
        count = masks.sum(0)
        top = (masks * torch.arange(1, instances + 1)[:, None, None]).argmax(0)  # later instances on top
        bands = torch.randint(0, stuff, (2,), generator=g)
        offset = things if classes == "all" else 1
        sem_seg = torch.where(yy < h * (0.3 + 0.4 * torch.rand((), generator=g)), bands[0], bands[1]).expand(h, w) + offset
        sem_seg = torch.where(count > 0, labels[top] if classes == "all" else torch.zeros_like(top), sem_seg)
        srm = torch.where(count >= 2, labels[top], 255)
        ys, xs = masks.any(2), masks.any(1)
        boxes = torch.stack(
            [xs.float().argmax(1), ys.float().argmax(1), w - xs.flip(1).float().argmax(1), h - ys.flip(1).float().argmax(1)],
            dim=1,
        ).float()  # exclusive maximum, as the dataset's boxes
        image = torch.rand(3, h, w, generator=g) * 0.5
        image += 0.5 * (labels[top] + 1).float().div(things + 1) * (count > 0)
        images.append(image)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks.to(torch.uint8), "sem_seg": sem_seg, "srm": srm})
        mr_targets.append({"boxes": boxes, "labels": labels + 1, "masks": masks.to(torch.uint8)})
    return images, targets, mr_targets


def label_space(things: int, stuff: int) -> LabelSpace:
    return LabelSpace(
        [Category(i, f"thing{i}", True, (0, 0, 0)) for i in range(1, things + 1)]
        + [Category(1000 + i, f"stuff{i}", False, (0, 0, 0)) for i in range(stuff)]
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def to_device(batch: list, device: torch.device) -> list:
    return [{k: v.to(device) for k, v in t.items()} if isinstance(t, dict) else t.to(device) for t in batch]


class Trainer:
    """One training step of a detection model, as described in the module docstring."""

    def __init__(self, model: nn.Module, solver, precision: str, device: torch.device) -> None:
        self.model = model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.0, momentum=solver.momentum, weight_decay=solver.weight_decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=uses_grad_scaler(precision, device.type))
        self.precision, self.device = check_precision(precision, device), device

    def __call__(self, images: list, targets: list, seed: int = 0) -> float:
        torch.manual_seed(seed)  # the RPN/RoI samplers draw the same on both sides
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.precision, self.device.type):
            losses = self.model(images, targets)
        loss = sum(losses.values())
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


LOGIT_SCALES = (20.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.25)


def calibrate(oanet: OANet, maskrcnn: MaskRCNN, image: torch.Tensor, selected: int, precision: str) -> dict:
    """Scale both box classifiers (same factor) so the image gets ``detections_per_img`` detections
    with distinct scores, and return the score threshold that selects ``selected`` of them."""
    weights = [m.roi_heads.box_predictor.cls_score.weight for m in (oanet, maskrcnn)]
    base = weights[0].detach().clone()
    wanted = oanet.cfg.roi_heads.detections_per_img
    for scale in LOGIT_SCALES:
        with torch.no_grad():
            for w in weights:
                w.copy_(base * scale)
        with torch.inference_mode(), autocast(precision, image.device.type):
            (out,) = oanet([image], score_thresh=float("inf"))
        scores = out["scores"].sort(descending=True).values.tolist()
        if selected <= 0:
            return {"logit_scale": scale, "score_thresh": float("inf"), "detections": len(scores)}
        if len(scores) > selected and scores[selected - 1] > scores[selected] and len(scores) >= wanted // 2:
            return {"logit_scale": scale, "score_thresh": scores[selected - 1], "detections": len(scores)}
    return {"logit_scale": scale, "score_thresh": 0.0, "detections": len(scores)}


def oanet_inference(model: OANet, image: torch.Tensor, thresh: float, labels: LabelSpace, precision: str) -> dict:
    with torch.inference_mode():
        with autocast(precision, image.device.type):
            (out,) = model([image], score_thresh=thresh)
        return fuse(out, labels, model.cfg.stuff_head.classes, model.cfg.fusion, ("score", "srm"))


def maskrcnn_inference(model: MaskRCNN, image: torch.Tensor, precision: str) -> list:
    with torch.inference_mode(), autocast(precision, image.device.type):
        return model([image])


@contextlib.contextmanager
def part_timers(model: nn.Module, parts: dict, device: torch.device, times: dict):
    """Time ``parts`` ({name: (object, method name)}) of ``model`` while the context is open."""
    saved = []
    for name, (owner, method) in parts.items():
        original = getattr(owner, method)

        def wrapper(*args, _original=original, _name=name, **kwargs):
            synchronize(device)
            start = time.perf_counter()
            out = _original(*args, **kwargs)
            synchronize(device)
            times[_name] = times.get(_name, 0.0) + time.perf_counter() - start
            return out

        saved.append((owner, method, owner.__dict__.get(method)))
        setattr(owner, method, wrapper)
    try:
        yield times
    finally:
        for owner, method, previous in saved:
            if previous is None:
                delattr(owner, method)
            else:
                setattr(owner, method, previous)


def inference_parts(model: nn.Module) -> dict:
    parts = {
        "backbone": (model.backbone, "forward"),
        "rpn": (model.rpn, "forward"),
        "roi_heads": (model.roi_heads, "forward"),
        "paste_full_size": (model.transform, "postprocess"),
    }
    if isinstance(model, OANet):
        parts.update({"stuff_head": (model.stuff_head, "forward"), "srm_ranking": (model, "rank_detections"),
                      "stuff_labels": (oanet_module, "stuff_labels")})
    return parts


def median(values: list) -> Optional[float]:
    return statistics.median(values) if values else None


def interleaved(runs: dict, repeat: int, warmup: int, device: torch.device) -> dict:
    """``{name: [seconds per repetition]}``; the order of the callables alternates every repetition."""
    names = list(runs)
    times: dict = {name: [] for name in names}
    for rep in range(warmup + repeat):
        for name in names if rep % 2 == 0 else names[::-1]:
            elapsed = timed(runs[name], device)
            if rep >= warmup:
                times[name].append(elapsed)
    return times


def peak_memory(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Peak bytes allocated on a CUDA device while ``fn`` runs (None on the CPU)."""
    if device.type != "cuda":
        fn()
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def training_parts(oanet: OANet, images: list, targets: list, precision: str, device: torch.device,
                   repeat: int) -> dict:
    """Seconds of the parts OANet adds to a training step, forward + backward each, on the step's
    own FPN features: the stuff head, its full-resolution loss alone, the SRM with its loss."""
    from oanet.model.srm import occupancy_map, subsample

    targets = oanet._check_and_offset_targets(targets)
    with torch.no_grad(), autocast(precision, device.type):
        image_list, targets = oanet.transform(images, targets)
        _, features = oanet.backbone(image_list.tensors)
    sem_seg = torch.stack([t["sem_seg"] for t in targets])
    features = {k: v.detach().requires_grad_() for k, v in features.items()}  # backward reaches the FPN

    def stuff_head():
        with autocast(precision, device.type):
            loss = oanet.stuff_head.loss(oanet.stuff_head(features), sem_seg)
        loss.backward()

    with torch.no_grad(), autocast(precision, device.type):
        logits = oanet.stuff_head(features).detach()

    def stuff_loss():
        leaf = logits.clone().requires_grad_()
        with autocast(precision, device.type):
            loss = oanet.stuff_head.loss(leaf, sem_seg)
        loss.backward()

    runs = {"stuff_head_with_loss": stuff_head, "stuff_loss_alone": stuff_loss}
    if oanet.srm is not None:
        stride = oanet.srm.stride

        def srm():
            with autocast(precision, device.type):
                occupancy = torch.stack([occupancy_map(subsample(t["masks"], stride), t["labels"] - 1,
                                                       oanet.num_thing_classes) for t in targets])
                srm_targets = subsample(torch.stack([t["srm"] for t in targets]), stride)
                loss = oanet.srm.loss(oanet.srm(occupancy), srm_targets)
            loss.backward()

        runs["srm_with_loss"] = srm
    times = interleaved(runs, max(1, repeat // 2), 1, device)
    oanet.zero_grad(set_to_none=True)
    return {name: median(t) for name, t in times.items()}


def gflops(fn: Callable[[], object]) -> float:
    """Convolution and matmul GFLOPs of one call (``torch.utils.flop_counter``): machine-independent."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def measure_training(oanet: OANet, maskrcnn: MaskRCNN, preset: Preset, solver, precision: str, device: torch.device,
                     repeat: int, warmup: int) -> dict:
    cfg = oanet.cfg
    images, targets, mr_targets = synthetic_batch(preset.batch, preset.size, preset.things, preset.stuff,
                                                  cfg.stuff_head.classes)
    images, targets, mr_targets = to_device(images, device), to_device(targets, device), to_device(mr_targets, device)
    trainers = {"maskrcnn": Trainer(maskrcnn, solver, precision, device), "oanet": Trainer(oanet, solver, precision, device)}
    batches = {"maskrcnn": mr_targets, "oanet": targets}
    losses = {}

    def step(name):
        def run():
            losses[name] = float(trainers[name](images, batches[name]))
        return run

    runs = {name: step(name) for name in trainers}
    times = interleaved(runs, repeat, warmup, device)
    memory = {name: peak_memory(run, device) for name, run in runs.items()}
    flops = {name: gflops(run) for name, run in runs.items()}
    med = {name: median(t) for name, t in times.items()}
    return {
        "batch": preset.batch,
        "gflops": flops,
        "gflops_ratio": flops["oanet"] / flops["maskrcnn"],
        "oanet_parts_s": training_parts(oanet, images, targets, precision, device, repeat),
        "seconds": times,
        "median_s": med,
        "images_per_s": {name: preset.batch / m for name, m in med.items()},
        "ratio_oanet_over_maskrcnn": med["oanet"] / med["maskrcnn"],
        "last_loss": losses,
        "peak_memory_bytes": memory,
        "includes": {"maskrcnn": INCLUDES["maskrcnn_train"], "oanet": INCLUDES["oanet_train"]},
    }


def measure_inference(oanet: OANet, maskrcnn: MaskRCNN, preset: Preset, precision: str, device: torch.device,
                      repeat: int, warmup: int, selected: int) -> dict:
    oanet.eval()
    maskrcnn.eval()
    labels = label_space(preset.things, preset.stuff)
    image = synthetic_batch(1, preset.size, preset.things, preset.stuff, seed=1)[0][0].to(device)
    calibration = calibrate(oanet, maskrcnn, image, selected, precision)
    thresh = calibration["score_thresh"]
    detections = {}

    def run_oanet():
        fused = oanet_inference(oanet, image, thresh, labels, precision)
        detections["oanet_segments"] = {o: len(segments) for o, (_, segments) in fused.items()}

    def run_maskrcnn():
        (out,) = maskrcnn_inference(maskrcnn, image, precision)
        detections["maskrcnn"] = int(out["boxes"].shape[0])

    runs = {"maskrcnn": run_maskrcnn, "oanet": run_oanet}
    times = interleaved(runs, repeat, warmup, device)
    memory = {name: peak_memory(run, device) for name, run in runs.items()}
    flops = {name: gflops(run) for name, run in runs.items()}
    med = {name: median(t) for name, t in times.items()}
    breakdown = {}
    for name, model in (("oanet", oanet), ("maskrcnn", maskrcnn)):
        part_times: dict = {}
        for _ in range(max(1, repeat // 2)):
            with part_timers(model, inference_parts(model), device, part_times):
                if name == "oanet":
                    with torch.inference_mode(), autocast(precision, device.type):
                        (out,) = oanet([image], score_thresh=thresh)
                    part_times["fusion_both_orders"] = part_times.get("fusion_both_orders", 0.0) + timed(
                        lambda: fuse(out, labels, oanet.cfg.stuff_head.classes, oanet.cfg.fusion), device)
                else:
                    maskrcnn_inference(maskrcnn, image, precision)
        breakdown[name] = {k: v / max(1, repeat // 2) for k, v in part_times.items()}
    with torch.inference_mode(), autocast(precision, device.type):
        (out,) = oanet([image], score_thresh=thresh)
    return {
        "seconds": times,
        "median_s": med,
        "ratio_oanet_over_maskrcnn": med["oanet"] / med["maskrcnn"],
        # The measure: SRM ranking + fusion of both orders as a share of OANet's inference.
        "srm_plus_fusion_share": (breakdown["oanet"]["srm_ranking"] + breakdown["oanet"]["fusion_both_orders"])
        / med["oanet"],
        "gflops": flops,
        "gflops_ratio": flops["oanet"] / flops["maskrcnn"],
        "detections": int(out["boxes"].shape[0]),
        "selected": int(out["selected"].sum()),
        "calibration": calibration,
        "segments": detections.get("oanet_segments"),
        "peak_memory_bytes": memory,
        "breakdown_s": breakdown,
        "includes": {"maskrcnn": INCLUDES["maskrcnn_inference"], "oanet": INCLUDES["oanet_inference"]},
    }


def measure(preset_name: str, device: torch.device, precision: str = "fp32", repeat: int = 5, warmup: int = 1,
            selected: int = 20, parts: tuple = ("train", "inference")) -> dict:
    """Both measurements of one preset on one device (what the CLI and gpu_check.py run)."""
    preset = PRESETS[preset_name]
    cfg = model_config(preset)
    oanet, maskrcnn = build_pair(cfg)
    oanet, maskrcnn = oanet.to(device), maskrcnn.to(device)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    report = {
        "preset": preset_name, "config": preset.config, "input": list(preset.size), "precision": precision,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(), "repeat": repeat, "warmup": warmup,
        "parameters": {"oanet": count(oanet), "maskrcnn": count(maskrcnn)},
    }
    if "train" in parts:
        solver = load_config(CONFIGS / preset.config).solver
        report["train"] = measure_training(oanet, maskrcnn, preset, solver, precision, device, repeat, warmup)
    if "inference" in parts:
        report["inference"] = measure_inference(oanet, maskrcnn, preset, precision, device, repeat, warmup, selected)
    return report


def summary_lines(report: dict) -> list[str]:
    lines = [f"{report['preset']} ({report['input'][0]}x{report['input'][1]}, {report['precision']}, {report['device']}, "
             f"{report['threads']} threads, {report['repeat']} repetitions)"]
    for part in ("train", "inference"):
        if part in report:
            m = report[part]["median_s"]
            g = report[part]["gflops"]
            lines.append(f"  {part}: Mask R-CNN {m['maskrcnn']:.4f} s, OANet {m['oanet']:.4f} s, "
                         f"ratio {report[part]['ratio_oanet_over_maskrcnn']:.3f}; GFLOPs {g['maskrcnn']:.1f} vs "
                         f"{g['oanet']:.1f}, ratio {report[part]['gflops_ratio']:.3f}")
    if "train" in report:
        lines.append("  oanet train parts (forward + backward): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in report["train"]["oanet_parts_s"].items()))
    if "inference" in report:
        lines.append(f"  SRM + fusion (both orders) share of OANet inference: {report['inference']['srm_plus_fusion_share']:.3f}")
        for name, parts in report["inference"]["breakdown_s"].items():
            lines.append(f"  {name} parts: " + ", ".join(f"{k} {v:.4f}" for k, v in parts.items()))
    return lines


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["demo", "r50_512"], choices=sorted(PRESETS))
    parser.add_argument("--repeat", type=int, default=10, help="timed repetitions per model (medians reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "amp_fp16", "bf16"])
    parser.add_argument("--selected", type=int, default=20, help="detections ranked and pasted by the fusion")
    parser.add_argument("--parts", nargs="+", default=["train", "inference"], choices=["train", "inference"])
    parser.add_argument("--json", help="write the full report here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reports = []
    for name in args.preset:
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        report = measure(name, device, args.precision, args.repeat, args.warmup, args.selected, tuple(args.parts))
        report["load_average_before_after"] = [load, os.getloadavg() if hasattr(os, "getloadavg") else None]
        reports.append(report)
        print("\n".join(summary_lines(report)), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
