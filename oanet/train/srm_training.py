"""Train spatial ranking modules alone, on exactly the batches and schedule of a network's training run.

The SRM reads nothing but instance masks: its input is the occupancy map of the instances (one
channel per thing class, paper §3.2) and its loss (Eq. 2) depends on its own weights only. In joint
training no other parameter gets a gradient from it, and it gets none from the others. So an SRM
trained alone on the same samples (same global batches, flips and multi-scale draws, from the same
seed), with the same initial weights, learning-rate schedule, momentum and weight decay, is the SRM
the joint run would have trained: on the CPU its weights come out bit-identical
(tests/test_ablate.py checks it). The conditions are those of the trainer: no gradient clipping
(``solver.clip_grad_norm`` takes the norm over all parameters), no AMP (a skipped fp16 step skips the
SRM's too), a run that did not stop on a non-finite loss.

That makes the SRM's ablations (Table 5's kernels) cost one network plus a few seconds per SRM.

``masks="predicted"`` trains an SRM on what it sees at test time instead: the masks the trained network
detects on the training images (its selected detections, in eval mode, on the augmented images),
with the targets built the same way as from the ground truth: at pixels where two or more of those
masks overlap, the class of the visible panoptic segment (ignore elsewhere, on crowd, void and stuff).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from oanet.config import Config, to_dict
from oanet.data import targets as T
from oanet.data.labels import IGNORE
from oanet.errors import ConfigError
from oanet.progress import Progress

MASK_SOURCES = ("gt", "predicted")


@dataclass(frozen=True)
class SRMVariant:
    """One SRM to train: ``name`` (its file is ``srm_<name>.pth``), ``kernel`` (1x1, 3x3, gcn7) and
    the instance masks it learns from (``gt`` or ``predicted``)."""

    name: str
    kernel: str = "gcn7"
    masks: str = "gt"

    def __post_init__(self) -> None:
        if self.masks not in MASK_SOURCES:
            raise ConfigError(f"SRM variant {self.name}: masks must be one of {MASK_SOURCES}, got {self.masks!r}")


def srm_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"srm_{name}.pth"


# --------------------------------------------------------------------------------------------
# targets (pure)


def visible_thing_map(index: np.ndarray, segment_thing_index: np.ndarray, segment_iscrowd: np.ndarray) -> np.ndarray:
    """``H x W`` int64: the thing index of the visible (panoptic) segment at each pixel; IGNORE on
    stuff, void and crowd. It is the SRM target without its "two or more masks overlap" condition."""
    thing = np.asarray(segment_thing_index, dtype=np.int64).reshape(-1)
    crowd = np.asarray(segment_iscrowd, dtype=bool).reshape(-1)
    return T.semantic_target(index, np.where((thing >= 0) & ~crowd, thing, IGNORE))


def overlap_target(masks: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """The SRM target of ``masks`` (``N x H x W`` binary): ``visible`` where >= 2 masks overlap, else IGNORE."""
    if masks.shape[0] < 2:
        return torch.full_like(visible, IGNORE)
    overlap = masks.to(torch.int32).sum(0) >= 2
    return torch.where(overlap, visible, torch.full_like(visible, IGNORE))


class VisibleThingDataset(torch.utils.data.Dataset):
    """The training samples of ``dataset`` (a PanopticDataset), each target with ``visible`` added:
    :func:`visible_thing_map`, augmented like the sample (the dataset's own transform, replayed from
    the sample's seed on that map alone)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, dict]:
        index, epoch = key
        image, target = self.dataset.get(index, epoch)
        base = self.dataset
        info = base.image_info(index)
        ann = base.split.annotation(info.id)
        where = str(base.split.panoptic_json)
        visible = torch.from_numpy(visible_thing_map(
            base.split.load_index_map(info.id), base.label_space.thing_index(ann.category_ids, where), ann.iscrowd))
        if base.transforms is not None:
            # The same generator state draws the same augmentation; "sem_seg" is a key it moves.
            _, moved = base.transforms(image, {"sem_seg": visible}, base.sample_rng(index, epoch))
            visible = moved["sem_seg"]
        return image, dict(target, visible=visible)


# --------------------------------------------------------------------------------------------
# training


def initial_srm(cfg: Config, kernel: str) -> torch.nn.Module:
    """The SRM a joint run of ``cfg`` with ``kernel`` starts from: the model is built after seeding
    with ``cfg.seed``, as the trainer does, and its SRM taken (built last, its draws follow the rest)."""
    from oanet.train.trainer import seed_everything
    from oanet.model.oanet import build_model

    model_cfg = cfg.model
    model_cfg = dataclasses.replace(
        model_cfg,
        srm=dataclasses.replace(model_cfg.srm, enabled=True, kernel=kernel),
        backbone=dataclasses.replace(model_cfg.backbone, weights=None),  # same draws, no download
    )
    seed_everything(cfg.seed)
    return build_model(model_cfg).srm


def predicted_instances(network: torch.nn.Module, images: list, targets: list, score_thresh: float) -> list[dict]:
    """Targets whose instances are ``network``'s selected detections on ``images`` (binarised at 0.5),
    with the SRM target of those masks over each target's ``visible`` map."""
    with torch.inference_mode():
        outputs = network(images, score_thresh=score_thresh)
    predicted = []
    for output, target in zip(outputs, targets):
        keep = output["selected"]
        masks = (output["masks"][keep] > 0.5).to(torch.uint8)
        predicted.append({"boxes": output["boxes"][keep].clone(), "labels": output["labels"][keep].clone(),
                          "masks": masks, "srm": overlap_target(masks, target["visible"])})
    return predicted


def occupancy_and_targets(transform: torch.nn.Module, images: list, targets: list, num_classes: int,
                          stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The SRM's input and target for a chunk of images, as the model builds them in training."""
    from oanet.model.srm import occupancy_map, subsample

    _, resized = transform(images, [dict(t) for t in targets])
    occupancy = torch.stack([occupancy_map(subsample(t["masks"], stride), t["labels"], num_classes) for t in resized])
    return occupancy, subsample(torch.stack([t["srm"] for t in resized]), stride)


def train_srms(
    cfg: Config,
    variants: Sequence[SRMVariant],
    out_dir: str | Path,
    network_checkpoint: Optional[str | Path] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Train every variant alone over ``cfg``'s training run; write ``out_dir/srm_<name>.pth``.

    ``network_checkpoint`` (the network trained with ``cfg``) is needed by ``predicted`` variants.
    Returns ``{name: {"path", "loss" (mean of the last 20 iterations), "iterations"}}``. A killed
    call starts again from iteration 0 (it takes seconds to minutes).
    """
    from oanet.data.dataset import collate
    from oanet.model.checkpoint import atomic_save
    from oanet.train.sampler import GlobalBatchSampler, aspect_ratio_groups
    from oanet.train.trainer import build_train_dataset, with_num_classes

    variants = list(variants)
    if not variants:
        return {}
    if cfg.solver.clip_grad_norm > 0:
        raise ConfigError("solver.clip_grad_norm > 0 couples the SRM to the other parameters: it cannot be trained alone")
    predicted = [v.name for v in variants if v.masks == "predicted"]
    if predicted and network_checkpoint is None:
        raise ConfigError(f"SRM variant(s) {predicted} learn from predicted masks: give the network's checkpoint")
    base = build_train_dataset(cfg)
    cfg = with_num_classes(cfg, base.label_space, cfg.data.train.panoptic_json)
    network = None
    if predicted:
        from oanet.model.checkpoint import load_model_from_checkpoint

        network = load_model_from_checkpoint(network_checkpoint, device="cpu")[0].eval()
    groups = aspect_ratio_groups(base.aspect_ratios()) if cfg.data.aspect_ratio_grouping else [0] * len(base)
    sampler = GlobalBatchSampler(groups, cfg.solver.ims_per_batch, cfg.seed, max_iter=cfg.solver.max_iter)
    loader = torch.utils.data.DataLoader(VisibleThingDataset(base) if predicted else base, batch_sampler=sampler,
                                         num_workers=cfg.data.num_workers, collate_fn=collate)
    srms = {v.name: initial_srm(cfg, v.kernel).train() for v in variants}
    recent = _train_loop(cfg, variants, srms, loader, network, progress)

    summary = {}
    for variant in variants:
        path = srm_path(out_dir, variant.name)
        atomic_save({"model": srms[variant.name].state_dict(), "kernel": variant.kernel, "masks": variant.masks,
                     "iterations": cfg.solver.max_iter, "num_thing_classes": cfg.model.num_thing_classes,
                     "stride": cfg.model.srm.stride, "loss_weight": cfg.model.srm.loss_weight,
                     "label_space": base.label_space.to_dict(), "config": to_dict(cfg)}, path)
        loss = float(np.mean(recent[variant.name])) if recent[variant.name] else float("nan")
        summary[variant.name] = {"path": str(path), "loss": loss, "iterations": cfg.solver.max_iter}
        log(f"SRM {variant.name} ({variant.kernel}, {variant.masks} masks): loss {loss:.4f} -> {path}")
    return summary


def _train_loop(cfg: Config, variants: Sequence[SRMVariant], srms: dict, loader, network, progress: bool) -> dict:
    """The trainer's iteration, SRMs only: LR, chunks weighted by their share of the batch, seeds per
    chunk before the resize draws its size. Returns each SRM's last 20 iteration losses."""
    from oanet.train.sampler import num_accumulation_chunks, split_chunks
    from oanet.train.schedule import lr_at, schedule_of
    from oanet.train.trainer import build_optimizer
    from oanet.train.step import chunk_seed, set_lr

    solver = cfg.solver
    optimizers = {name: build_optimizer(srm, solver) for name, srm in srms.items()}
    schedule = schedule_of(solver)
    transform = _training_transform(cfg)
    sources = {v.masks for v in variants}
    chunks_per_rank = num_accumulation_chunks(solver.ims_per_batch, 1, solver.ims_per_device)
    recent: dict[str, list[float]] = {name: [] for name in srms}
    with Progress(total=solver.max_iter, desc="train SRMs", unit="it", disable=not progress) as bar:
        for iteration, (batch_images, batch_targets) in enumerate(loader):
            lr = lr_at(iteration, **schedule)
            for optimizer in optimizers.values():
                set_lr(optimizer, lr)
                optimizer.zero_grad(set_to_none=True)
            share = len(batch_images)
            size = math.ceil(share / chunks_per_rank)
            losses = {name: 0.0 for name in srms}
            for c, (images, targets) in enumerate(zip(split_chunks(batch_images, size), split_chunks(batch_targets, size))):
                inputs = _chunk_inputs(cfg, transform, network, images, targets, sources,
                                       chunk_seed(cfg.seed, iteration, c))
                for variant in variants:
                    srm = srms[variant.name]
                    loss = srm.loss(srm(inputs[variant.masks][0]), inputs[variant.masks][1])
                    (loss * (len(images) / share)).backward()
                    losses[variant.name] += float(loss.detach()) * (len(images) / share)
            for name, optimizer in optimizers.items():
                optimizer.step()
                recent[name] = (recent[name] + [losses[name]])[-20:]
            bar.update(1)
            bar.set_postfix(**{name: f"{recent[name][-1]:.3f}" for name in srms})
    return recent


def _chunk_inputs(cfg: Config, transform, network, images: list, targets: list, sources: set, seed: int) -> dict:
    """``{"gt" | "predicted": (occupancy, SRM target)}`` for one chunk of images."""
    num_classes, stride = cfg.model.num_thing_classes, cfg.model.srm.stride
    inputs = {}
    if "gt" in sources:
        torch.manual_seed(seed)  # the joint run seeds here, before its transform draws a size
        inputs["gt"] = occupancy_and_targets(transform, images, targets, num_classes, stride)
    if "predicted" in sources:
        detected = predicted_instances(network, images, targets, cfg.model.fusion.score_thresh)
        torch.manual_seed(seed)  # the same size draw as the ground truth's
        inputs["predicted"] = occupancy_and_targets(transform, images, detected, num_classes, stride)
    return inputs


def _training_transform(cfg: Config) -> torch.nn.Module:
    """The model's resize-and-pad transform, in training mode (multi-scale draws as in training)."""
    from oanet.model.transform import PanopticTransform

    m = cfg.model
    return PanopticTransform(min_size=tuple(int(s) for s in m.min_size), max_size=m.max_size,
                             image_mean=list(m.pixel_mean), image_std=list(m.pixel_std), size_divisible=32).train()


def load_srm(path: str | Path) -> torch.nn.Module:
    """An SRM written by :func:`train_srms`, in eval mode."""
    from oanet.model.checkpoint import load_checkpoint_file
    from oanet.model.srm import SpatialRankingModule

    state = load_checkpoint_file(path, map_location="cpu")
    srm = SpatialRankingModule(int(state["num_thing_classes"]), state["kernel"], int(state["stride"]),
                               float(state["loss_weight"]))
    srm.load_state_dict(state["model"])
    return srm.eval()


def with_srm(model: torch.nn.Module, srm: torch.nn.Module) -> torch.nn.Module:
    """``model`` (an OANet) ranking with ``srm`` instead of its own (in place; returns it)."""
    if srm.num_classes != model.num_thing_classes:
        raise ConfigError(f"the SRM ranks {srm.num_classes} thing classes, the model detects {model.num_thing_classes}")
    model.srm = srm.to(next(model.parameters()).device).eval()
    return model
