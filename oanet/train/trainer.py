"""Training: one CPU process up to many GPUs on many nodes (torchrun + DistributedDataParallel).

The recipe is the paper's (§4.2): SGD with momentum 0.9 and weight decay 1e-4, the LR schedule of
:mod:`oanet.train.schedule`, 100k iterations of 16 images. :func:`train` checks the config and a
checkpoint to resume, builds the model, optimizer and loader, then runs :func:`run_loop`: one
:class:`~oanet.train.step.TrainStep` per iteration, then the hooks of :mod:`oanet.train.hooks`
(log lines, progress, periodic checkpoints).

Every iteration is a pure function of ``(seed, iteration)`` and the weights: the global batch comes
from :class:`~oanet.train.sampler.GlobalBatchSampler`, the augmentation from ``(seed, epoch, index)``, the
learning rate from :func:`~oanet.train.schedule.lr_at`, and the model's own randomness (RPN/RoI fg/bg
sampling) from a generator reseeded per image chunk from ``(seed, iteration, chunk)``. That is what
makes a resumed run continue the interrupted one, and 1 process with accumulation match N processes.

Bit-for-bit equality (what the tests check) holds on CPU, whose kernels are deterministic. On GPU the
backward passes of roi_align, grid_sample and index_add accumulate with atomics in no fixed order, so
a resumed or differently-sized run gets the same batches and learning rates but weights that are only
numerically close, not identical.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from oanet.config import Config, resolve_data_paths, save_config, validate
from oanet.data.dataset import collate
from oanet.model import checkpoint as ckpt
from oanet.train.sampler import GlobalBatchSampler, aspect_ratio_groups, num_accumulation_chunks
from oanet.distributed import DistContext, barrier, cleanup_distributed, init_distributed, once_per_node
from oanet.train.hooks import CheckpointHook, LogHook
from oanet.train.init import apply_init
from oanet.model.precision import check_precision, uses_grad_scaler
from oanet.train.schedule import effective_base_lr, lr_at, run_schedule, schedule_differences, schedule_of
from oanet.train.step import TrainStep
from oanet.errors import ConfigError, make_dir

LAST_CHECKPOINT = "last.pth"
FINAL_MODEL = "model_final.pth"
ANNOTATION_CACHE = ".annotation_cache"


# --------------------------------------------------------------------------------------------
# resume: the checkpoint to continue, and whether the current config can continue it exactly


def load_resume_state(last_path: Path, resume: bool, is_main: bool) -> Optional[dict]:
    """The checkpoint to continue (None: start at iteration 0). Without ``resume`` an existing
    ``last_path`` is refused rather than overwritten."""
    if not resume:
        if last_path.exists():
            raise ConfigError(f"{last_path} exists: pass --resume to continue that run, or choose another --output")
        return None
    if last_path.exists():
        return ckpt.load_checkpoint_file(last_path, map_location="cpu")
    if is_main:
        print(f"oanet train: no {last_path} yet, starting from iteration 0", file=sys.stderr)
    return None


def label_classes(label_space: dict) -> list[tuple[int, bool]]:
    """``(id, isthing)`` of each category of a stored label space: what the weights depend on.

    Names, colours and supercategories (e.g. colours added with ``data.categories_json``) may change
    between a run and its resumption.
    """
    return [(int(c["id"]), bool(c["isthing"])) for c in label_space.get("categories", [])]


def check_resumable(state: dict, cfg: Config, label_space: Any, last_path: Path) -> None:
    """ConfigError when ``cfg`` and the training data cannot continue ``state`` exactly: another model,
    a schedule changed before the checkpoint's iteration, another batch or seed, other classes."""
    ckpt.check_model_config(state["config"], cfg, last_path)
    differences = schedule_differences(state.get("schedule") or {}, run_schedule(cfg), int(state["iteration"]))
    if differences:
        raise ConfigError(
            f"{last_path}: cannot resume exactly with a different schedule: "
            + "; ".join(f"{line} (checkpoint != current)" for line in differences)
            + " (only solver.max_iter and steps not yet reached may change)"
        )
    stored = state.get("label_space")
    if stored is not None and label_classes(stored) != label_classes(label_space.to_dict()):
        raise ConfigError(
            f"{last_path}: checkpoint was trained on another label space than {cfg.data.train.panoptic_json}"
        )


def with_num_classes(cfg: Config, label_space: Any, source: str) -> Config:
    """Fill ``model.num_thing/stuff_classes`` from the data when 0; refuse values that disagree."""
    counts = {"num_thing_classes": label_space.num_things, "num_stuff_classes": label_space.num_stuff}
    model_cfg = cfg.model
    for key, found in counts.items():
        given = getattr(model_cfg, key)
        if given == 0:
            model_cfg = dataclasses.replace(model_cfg, **{key: found})
        elif given != found:
            raise ConfigError(
                f"model.{key}={given} but {source} has {found}; set it to {found} or 0 (= from the data)"
            )
    return dataclasses.replace(cfg, model=model_cfg)


# --------------------------------------------------------------------------------------------
# building: data, model, optimizer


def build_train_dataset(cfg: Config, dist_ctx: Optional[DistContext] = None):
    from oanet.data.coco_panoptic import PanopticSplit
    from oanet.data.dataset import PanopticDataset

    # One JSON parse per node at most: rank 0 indexes the annotations into a cache file in the output
    # folder, the other ranks (and a resumed run) memory-map it, and DataLoader workers share the pages.
    cache_dir = Path(cfg.output_dir) / ANNOTATION_CACHE
    split = once_per_node(
        lambda: PanopticSplit.from_config(cfg.data.train, where="data.train", cache_dir=cache_dir),
        dist_ctx or DistContext(0, 1, 0, torch.device("cpu")),
    )
    return PanopticDataset(
        split,
        instance_source=cfg.data.instance_source,
        stuff_classes=cfg.model.stuff_head.classes,
        hflip_prob=cfg.data.hflip_prob,
        seed=cfg.seed,
        train=True,
    )


def build_train_loader(cfg: Config, dataset, dist_ctx: DistContext, start_iter: int) -> torch.utils.data.DataLoader:
    """The global batches of iterations ``start_iter..max_iter``, this process's share of each."""
    groups = aspect_ratio_groups(dataset.aspect_ratios()) if cfg.data.aspect_ratio_grouping else [0] * len(dataset)
    sampler = GlobalBatchSampler(
        groups,
        cfg.solver.ims_per_batch,
        cfg.seed,
        rank=dist_ctx.rank,
        world_size=dist_ctx.world_size,
        start_iter=start_iter,
        max_iter=cfg.solver.max_iter,
    )
    return torch.utils.data.DataLoader(
        dataset,  # indexed by the sampler's (index, epoch) pairs: the epoch reaches the workers
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,  # ([images], [targets]): sizes differ, the model batches them
        pin_memory=dist_ctx.device.type == "cuda",
    )


def build_optimizer(model: torch.nn.Module, solver) -> torch.optim.SGD:
    """SGD with momentum; weight decay on every trainable parameter, as Mask R-CNN's recipe.

    The backbone's norms are frozen (no parameters), so "no decay on norm layers" would only change the
    heads' GroupNorm affine parameters and biases; the paper's Detectron lineage decays them too.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    return torch.optim.SGD(
        params,
        lr=effective_base_lr(solver) * solver.warmup_factor,
        momentum=solver.momentum,
        weight_decay=solver.weight_decay,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_train_model(cfg: Config, label_space: Any, output_dir: Path, resuming: bool,
                      dist_ctx: DistContext) -> torch.nn.Module:
    """The model in training mode on this process's device, the same initial weights on every rank.

    A fresh run starts from ``model.init`` (pretrained weights; its report printed and saved beside
    the checkpoints); ``model.freeze`` applies on resume too, so the optimiser sees the same parameters.
    """
    from oanet.model.oanet import build_model

    # Same seed on every rank: identical initial weights without relying on a broadcast.
    seed_everything(cfg.seed)
    model_cfg = cfg.model
    if resuming:  # every weight comes from the checkpoint: no ImageNet download on resume
        model_cfg = dataclasses.replace(model_cfg, backbone=dataclasses.replace(model_cfg.backbone, weights=None))
    if dist_ctx.distributed and not dist_ctx.is_main:
        barrier()  # let rank 0 fetch pretrained weights into the cache first (one download, no race)
    model = build_model(model_cfg).to(dist_ctx.device)
    apply_init(model, cfg, label_space, output_dir, fresh=not resuming, is_main=dist_ctx.is_main)
    if dist_ctx.distributed and dist_ctx.is_main:
        barrier()
    return model.train()


def restore_training_state(state: dict, model, optimizer, scaler, use_amp: bool, dist_ctx: DistContext) -> int:
    """Weights, optimizer, AMP scaler and this rank's RNG streams from ``state``; the iteration to start at."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if use_amp and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng_states = state.get("rng") or []
    if len(rng_states) == dist_ctx.world_size:
        ckpt.restore_rng_state(rng_states[dist_ctx.rank])
    return int(state["iteration"])


# --------------------------------------------------------------------------------------------
# the loop


def run_loop(loader, step: TrainStep, schedule: dict, start_iter: int, hooks: Sequence) -> int:
    """Run ``step`` on every batch of ``loader`` (iterations ``start_iter``, ...), then each hook's
    ``after_step``; returns the number of completed iterations."""
    iteration = start_iter
    tic = time.perf_counter()
    for images, targets in loader:
        data_time = time.perf_counter() - tic
        lr = lr_at(iteration, **schedule)
        losses = step(iteration, images, targets, lr)
        iteration += 1
        iter_time = time.perf_counter() - tic
        tic = time.perf_counter()
        record = {
            "loss": float(losses.sum()),
            **{f"loss_{name}": float(value) for name, value in zip(step.loss_names, losses)},
            "lr": lr,
            "time": iter_time,
            "data_time": data_time,
        }
        for hook in hooks:
            hook.after_step(iteration, record)
    return iteration


def train(cfg: Config, resume: bool = False) -> dict:
    """Train ``cfg`` (resume from ``cfg.output_dir/last.pth`` with ``resume``); returns a summary dict.

    Launch one process per device with torchrun for several devices; the world size is read from the
    environment torchrun sets. Only rank 0 writes files.
    """
    dist_ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, resume, dist_ctx)
    finally:
        cleanup_distributed()


def _prepare_output_dir(cfg: Config, output_dir: Path) -> None:
    make_dir(output_dir)
    # A run killed while writing a checkpoint leaves its temporary file; last.pth itself is intact.
    for stale in output_dir.glob(f".{LAST_CHECKPOINT}.*.tmp"):
        stale.unlink(missing_ok=True)
    save_config(cfg, output_dir / "config.yaml")


def build_train_step(cfg: Config, model: torch.nn.Module, optimizer, scaler, dist_ctx: DistContext) -> TrainStep:
    """One optimisation step over the (DistributedDataParallel-wrapped, under torchrun) model."""
    solver, device = cfg.solver, dist_ctx.device
    train_model = model
    if dist_ctx.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return TrainStep(
        train_model, optimizer, scaler, device=device, seed=cfg.seed, rank=dist_ctx.rank,
        chunks_per_rank=num_accumulation_chunks(solver.ims_per_batch, dist_ctx.world_size, solver.ims_per_device),
        distributed=dist_ctx.distributed, precision=solver.precision, clip_grad_norm=solver.clip_grad_norm,
    )


def _train(cfg: Config, resume: bool, dist_ctx: DistContext) -> dict:
    solver = validate(cfg, dist_ctx.world_size).solver
    # Absolute in config.yaml and the checkpoints: `oanet evaluate` from another folder finds the data.
    cfg = resolve_data_paths(cfg)
    output_dir = Path(cfg.output_dir)
    last_path = output_dir / LAST_CHECKPOINT
    state = load_resume_state(last_path, resume, dist_ctx.is_main)
    dataset = build_train_dataset(cfg, dist_ctx)
    label_space = dataset.label_space
    cfg = with_num_classes(cfg, label_space, cfg.data.train.panoptic_json)
    if state is not None:
        check_resumable(state, cfg, label_space, last_path)
    if dist_ctx.is_main:
        _prepare_output_dir(cfg, output_dir)

    device = dist_ctx.device
    model = build_train_model(cfg, label_space, output_dir, resuming=state is not None, dist_ctx=dist_ctx)
    optimizer = build_optimizer(model, solver)
    use_amp = uses_grad_scaler(check_precision(solver.precision, device), device.type)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_iter = 0
    if state is not None:
        start_iter = restore_training_state(state, model, optimizer, scaler, use_amp, dist_ctx)
        del state
    loader = build_train_loader(cfg, dataset, dist_ctx, start_iter)
    step = build_train_step(cfg, model, optimizer, scaler, dist_ctx)
    checkpointer = CheckpointHook(
        last_path, solver.checkpoint_period, solver.max_iter, dist_ctx.is_main,
        state_of=lambda iteration, rng_states: ckpt.training_state(
            model=model, optimizer=optimizer, scaler=scaler if use_amp else None, iteration=iteration, cfg=cfg,
            label_space=label_space, schedule=run_schedule(cfg), rng_states=rng_states,
        ),
    )
    log = LogHook(output_dir, dist_ctx.is_main, start_iter, solver.max_iter, solver.log_period, solver.ims_per_batch)
    try:
        iteration = run_loop(loader, step, schedule_of(solver), start_iter, [log, checkpointer])
    finally:
        log.close()

    if iteration > start_iter:  # the same decision on every rank (no file-system check)
        checkpointer.save(iteration)
    final_path = output_dir / FINAL_MODEL
    if dist_ctx.is_main:
        ckpt.atomic_save(ckpt.final_model_state(model, cfg, label_space, iteration), final_path)
    barrier()
    return {
        "iteration": iteration,
        "start_iteration": start_iter,
        "output_dir": str(output_dir),
        "last_checkpoint": str(last_path),
        "final_model": str(final_path),
        "metrics": log.last_scalars,
        "world_size": dist_ctx.world_size,
    }
