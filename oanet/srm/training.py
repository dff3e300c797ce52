"""``train_spatial_ranker``: a standalone SRM from panoptic annotations (``oanet srm train``).

Each iteration draws a batch of images, perturbs their instance masks (:mod:`oanet.srm.samples`),
and takes an SGD step on Eq. 2 at the cells where two or more masks overlap. Only a window around
those cells is run through the SRM: its largest kernel (gcn7) sees 3 cells to each side, so with a
margin of 3 cells the logits at the overlap cells are exactly those of the whole grid, for a small
share of the cost (overlaps cover a few per cent of an image).

Deterministic for a seed and a thread count. Writes ``--out`` atomically at the end and a resume
file every ``checkpoint_period`` iterations: a killed run started again continues from there.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from oanet.data.labels import IGNORE
from oanet.errors import ConfigError
from oanet.model.srm import SRM_KERNELS, SpatialRankingModule, occupancy_map, present_channels_forward
from oanet.progress import Progress
from oanet.srm.ranker import SpatialRanker
from oanet.srm.samples import PERTURBATIONS, AnnotationSamples, Perturbation, overlap_targets, perturb

MARGIN = 3  # cells: the reach of the largest kernel (7 // 2)


@dataclass
class SRMTrainConfig:
    kernel: str = "gcn7"
    stride: int = 4
    short_side: int = 800  # the scale the ranker resizes masks to (OANet's test size)
    max_size: int = 1333
    iterations: int = 2000
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 100
    seed: int = 0
    checkpoint_period: int = 500
    perturbation: Perturbation = field(default_factory=lambda: PERTURBATIONS["light"])

    def check(self) -> None:
        if self.kernel not in SRM_KERNELS:
            raise ConfigError(f"--kernel must be one of {SRM_KERNELS}, got {self.kernel!r}")
        for name in ("iterations", "batch_size", "short_side", "max_size", "stride", "checkpoint_period"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")


def lr_at(cfg: SRMTrainConfig, iteration: int) -> float:
    """Linear warm-up, then a cosine decay to 0 (no step schedule to tune for a linear model)."""
    warmup = min(cfg.warmup, cfg.iterations // 10)  # a short run must not spend itself warming up
    if iteration < warmup:
        return cfg.lr * (0.1 + 0.9 * iteration / warmup)
    progress = (iteration - warmup) / max(1, cfg.iterations - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def overlap_window(target: torch.Tensor) -> Optional[tuple[slice, slice]]:
    """The rows and columns around the target's non-ignored cells (with MARGIN), or None if there are none."""
    rows = (target != IGNORE).any(1).nonzero()
    if not len(rows):
        return None
    cols = (target != IGNORE).any(0).nonzero()
    h, w = target.shape
    r0, r1 = max(0, int(rows[0]) - MARGIN), min(h, int(rows[-1]) + 1 + MARGIN)
    c0, c1 = max(0, int(cols[0]) - MARGIN), min(w, int(cols[-1]) + 1 + MARGIN)
    return slice(r0, r1), slice(c0, c1)


def batch_loss(srm: SpatialRankingModule, samples: list, cfg: SRMTrainConfig, generator: torch.Generator
               ) -> tuple[Optional[torch.Tensor], int, int]:
    """Eq. 2 over a batch (the mean over all its overlap cells), the cells and the cells ranked right."""
    total, cells, right = None, 0, 0
    for sample in samples:
        masks, labels = sample.masks, sample.labels
        if not sample.from_detector:
            masks, kept = perturb(masks, cfg.perturbation, generator, sample.shown)
            labels = labels[kept]
        target = overlap_targets(masks, sample.visible)
        window = overlap_window(target)
        if window is None:
            continue
        rows, cols = window
        occupancy = occupancy_map(masks[:, rows, cols], labels, srm.num_classes)
        logits = present_channels_forward(srm, occupancy[None], torch.unique(labels))[0]
        crop = target[rows, cols]
        loss = F.cross_entropy(logits[None], crop[None], ignore_index=IGNORE, reduction="sum")
        total = loss if total is None else total + loss
        valid = crop != IGNORE
        cells += int(valid.sum())
        right += int((logits.argmax(0)[valid] == crop[valid]).sum())
    return (None if total is None else total / max(cells, 1)), cells, right


def train_spatial_ranker(split: Any, out: str | Path, cfg: SRMTrainConfig, predictions: Optional[dict] = None,
                         score_thresh: float = 0.5, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train an SRM on ``split`` (a PanopticSplit); write it to ``out``; return a summary."""
    from oanet.model.checkpoint import atomic_save, load_checkpoint_file

    cfg.check()
    out = Path(out)
    samples = AnnotationSamples(split, cfg.short_side, cfg.max_size, cfg.stride, predictions, score_thresh)
    if not len(samples):
        raise ConfigError(f"{split.panoptic_json}: no image to train on")
    if predictions is None and not split.has_instances:
        print(f"oanet srm train: warning: {split.panoptic_json}: without --instances-json the masks are the panoptic "
              "segments, which never overlap; their perturbed overlaps teach no order between classes. Pass the "
              "instances JSON of the same images (or --predictions) to learn one.", file=sys.stderr)
    torch.manual_seed(cfg.seed)
    srm = SpatialRankingModule(split.label_space().num_things, cfg.kernel, cfg.stride).train()
    optimizer = torch.optim.SGD(srm.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    order = torch.Generator().manual_seed(cfg.seed + 1)
    settings = _settings(cfg, split, predictions is not None)
    resume = out.with_name(out.name + ".resume")
    start, history = 0, []
    if resume.is_file():
        state = load_checkpoint_file(resume)
        if state.get("config") == settings:
            srm.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            order.set_state(state["order"])
            start, history = int(state["iteration"]), list(state["history"])
            log(f"resuming {out} from iteration {start} ({resume})")
    began = time.perf_counter()
    with Progress(total=cfg.iterations, initial=start, desc="train SRM", unit="it", disable=not progress) as bar:
        for iteration in range(start, cfg.iterations):
            batch = torch.randint(len(samples), (cfg.batch_size,), generator=order).tolist()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, iteration)
            optimizer.zero_grad(set_to_none=True)
            loss, cells, right = batch_loss(srm, [samples[k] for k in batch], cfg, generator)
            if loss is not None:
                loss.backward()
                optimizer.step()
                history.append((float(loss.detach()), cells, right))
            bar.update(1)
            if history:
                bar.set_postfix(loss=f"{history[-1][0]:.3f}")
            if (iteration + 1) % cfg.checkpoint_period == 0 and iteration + 1 < cfg.iterations:
                atomic_save({"model": srm.state_dict(), "optimizer": optimizer.state_dict(), "config": settings,
                             "generator": generator.get_state(), "order": order.get_state(),
                             "iteration": iteration + 1, "history": history}, resume)
    seconds = time.perf_counter() - began
    recent = history[-50:]
    summary = {
        "iterations": cfg.iterations, "images": len(samples), "seconds": round(seconds, 2),
        "loss": round(sum(h[0] for h in recent) / max(len(recent), 1), 4),
        "overlap_cell_accuracy": round(100.0 * sum(h[2] for h in recent) / max(sum(h[1] for h in recent), 1), 2),
        "batches_with_overlaps": len(history),
    }
    ranker = SpatialRanker(srm.eval(), split.label_space(), cfg.short_side, cfg.max_size)
    ranker.save(out, config=settings, training=summary)
    resume.unlink(missing_ok=True)
    log(f"SRM ({cfg.kernel}) trained on {len(samples)} images, {cfg.iterations} iterations in {seconds:.1f} s: "
        f"loss {summary['loss']}, {summary['overlap_cell_accuracy']}% of overlap cells ranked right -> {out}")
    return summary


def _settings(cfg: SRMTrainConfig, split: Any, from_detector: bool) -> dict:
    """What the run was trained with (stored in the file; a resume file must match it)."""
    return {**dataclasses.asdict(cfg), "panoptic_json": str(Path(split.panoptic_json).resolve()),
            "instances_json": str(Path(split.instances_json).resolve()) if split.instances_json else None,
            "predictions": from_detector}
