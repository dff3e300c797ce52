"""Training: one CPU process up to many GPUs on many nodes (torchrun + DistributedDataParallel).

The recipe is the paper's (§4.2): SGD with momentum 0.9 and weight decay 1e-4, linear warm-up over
2,000 iterations from 0.002 to 0.02, x0.1 at 60k and 80k, 100k iterations of 16 images.

Every iteration is a pure function of ``(seed, iteration)`` and the weights: the global batch comes
from :class:`~oanet.engine.data.GlobalBatchSampler`, the augmentation from ``(seed, epoch, index)``, the
learning rate from :func:`lr_at`, and the model's own randomness (RPN/RoI fg/bg sampling) from a
generator reseeded per image chunk from ``(seed, iteration, chunk)``. That is what makes a resumed run
continue the interrupted one, and 1 process with accumulation match N processes.

Bit-for-bit equality (what the tests check) holds on CPU, whose kernels are deterministic. On GPU the
backward passes of roi_align, grid_sample and index_add accumulate with atomics in no fixed order, so
a resumed or differently-sized run gets the same batches and learning rates but weights that are only
numerically close, not identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from oanet.config import Config, save_config
from oanet.data.dataset import collate
from oanet.engine import checkpoint as ckpt
from oanet.engine.data import (
    GlobalBatchSampler,
    aspect_ratio_groups,
    num_accumulation_chunks,
    split_chunks,
)
from oanet.engine.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from oanet.engine.init import apply_init
from oanet.errors import ConfigError, OANetError, make_dir

REFERENCE_IMS_PER_BATCH = 16  # the paper's batch, for which base_lr = 0.02 is given
LAST_CHECKPOINT = "last.pth"
FINAL_MODEL = "model_final.pth"


class NonFiniteLossError(OANetError, FloatingPointError):
    """Training diverged: a loss term became NaN or infinite (the CLI prints it as one line)."""


# --------------------------------------------------------------------------------------------
# learning-rate schedule (pure)


def lr_at(
    iteration: int,
    *,
    base_lr: float,
    warmup_iters: int,
    warmup_factor: float,
    steps: Sequence[int],
    gamma: float,
) -> float:
    """Learning rate for (0-based) ``iteration``: linear warm-up, then a step decay.

    Warm-up goes linearly from ``base_lr * warmup_factor`` at iteration 0 to ``base_lr`` at
    ``warmup_iters``; the rate is multiplied by ``gamma`` for each step ``s`` with ``iteration >= s``.
    The paper: 0.002 -> 0.02 over 2000 iterations, 0.002 from 60k, 0.0002 from 80k.
    """
    decay = gamma ** sum(1 for step in steps if iteration >= step)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        return base_lr * (warmup_factor * (1.0 - alpha) + alpha) * decay
    return base_lr * decay


def effective_base_lr(solver) -> float:
    """``solver.base_lr``, times ``ims_per_batch / 16`` with ``solver.scale_lr_with_batch`` (linear rule)."""
    if solver.scale_lr_with_batch:
        return solver.base_lr * solver.ims_per_batch / REFERENCE_IMS_PER_BATCH
    return solver.base_lr


def schedule_of(solver) -> dict:
    """The schedule's parameters, stored in checkpoints (the state is the iteration itself)."""
    return {
        "base_lr": effective_base_lr(solver),
        "warmup_iters": solver.warmup_iters,
        "warmup_factor": solver.warmup_factor,
        "steps": list(solver.steps),
        "gamma": solver.gamma,
    }


def run_schedule(cfg: Config) -> dict:
    """What a training checkpoint stores of the run beyond the model: :func:`schedule_of` plus the
    global batch, the seed and ``max_iter``. Resuming compares it with the current config."""
    solver = cfg.solver
    return {
        **schedule_of(solver),
        "ims_per_batch": solver.ims_per_batch,
        "seed": cfg.seed,
        "max_iter": solver.max_iter,
    }


def schedule_differences(stored: dict, current: dict, iteration: int) -> list[str]:
    """What of a checkpoint's :func:`run_schedule` (``stored``, written after ``iteration`` completed
    iterations) ``current`` changes in a way that resuming could not continue exactly.

    ``max_iter`` may change (a run extended or cut short is a prefix of the longer one), and so may
    LR steps at or after ``iteration`` (they only affect iterations still to come); steps already
    passed, warm-up, gamma, the (effective) base LR, the global batch and the seed may not. Keys a
    checkpoint lacks (older checkpoints store the LR schedule only) are not compared.
    """
    differences = []
    for key, old in stored.items():
        if key == "max_iter" or key not in current:
            continue
        name = "seed" if key == "seed" else f"solver.{key}"
        new = current[key]
        if key == "steps":
            old, new = sorted(s for s in old if s < iteration), sorted(s for s in new if s < iteration)
            name = f"solver.steps before iteration {iteration}"
        elif key == "base_lr":
            name = "solver.base_lr (effective)"
        if old != new:
            differences.append(f"{name}: {old} != {new}")
    return differences


def label_classes(label_space: dict) -> list[tuple[int, bool]]:
    """``(id, isthing)`` of each category of a stored label space: what the weights depend on.

    Names, colours and supercategories (e.g. colours added with ``data.categories_json``) may change
    between a run and its resumption.
    """
    return [(int(c["id"]), bool(c["isthing"])) for c in label_space.get("categories", [])]


def check_solver(solver, world_size: int) -> None:
    if solver.max_iter < 1:
        raise ConfigError(f"solver.max_iter must be >= 1, got {solver.max_iter}")
    if solver.ims_per_batch < 1 or solver.ims_per_batch % world_size:
        raise ConfigError(
            f"solver.ims_per_batch={solver.ims_per_batch} is the global batch and must be a positive "
            f"multiple of the number of processes ({world_size})"
        )
    if solver.ims_per_device < 0:
        raise ConfigError(f"solver.ims_per_device must be >= 0, got {solver.ims_per_device}")
    if solver.base_lr <= 0 or solver.warmup_iters < 0 or not 0 < solver.warmup_factor <= 1:
        raise ConfigError(
            "solver: need base_lr > 0, warmup_iters >= 0 and 0 < warmup_factor <= 1 "
            f"(got {solver.base_lr}, {solver.warmup_iters}, {solver.warmup_factor})"
        )
    if list(solver.steps) != sorted(solver.steps):
        raise ConfigError(f"solver.steps must be increasing, got {list(solver.steps)}")
    if solver.checkpoint_period < 1 or solver.log_period < 1:
        raise ConfigError("solver.checkpoint_period and solver.log_period must be >= 1")


# --------------------------------------------------------------------------------------------
# optimiser


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------------------------
# data and classes


def build_train_dataset(cfg: Config):
    from oanet.data.coco_panoptic import PanopticSplit
    from oanet.data.dataset import PanopticDataset

    return PanopticDataset(
        PanopticSplit.from_config(cfg.data.train, where="data.train"),
        instance_source=cfg.data.instance_source,
        stuff_classes=cfg.model.stuff_head.classes,
        hflip_prob=cfg.data.hflip_prob,
        seed=cfg.seed,
        train=True,
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


def to_device(images: list, targets: list, device: torch.device) -> tuple[list, list]:
    non_blocking = device.type == "cuda"
    images = [image.to(device, non_blocking=non_blocking) for image in images]
    targets = [
        {k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, targets


# --------------------------------------------------------------------------------------------
# determinism helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def chunk_seed(seed: int, iteration: int, chunk: int) -> int:
    """Seed of the model's random draws for one chunk of images of one iteration.

    ``chunk`` counts chunks over the whole global batch (rank * chunks_per_rank + local chunk), so
    one process accumulating 2 chunks draws exactly what 2 processes with one chunk each draw.
    """
    return int(np.random.SeedSequence([seed, iteration, chunk]).generate_state(1, dtype=np.uint64)[0] >> 1)


# --------------------------------------------------------------------------------------------
# output: metrics.jsonl, TensorBoard, progress bar (rank 0 only)


class MetricWriter:
    """metrics.jsonl and TensorBoard. On resume, records past ``start_iter`` (written after the last
    checkpoint by the interrupted run, and about to be redone) are dropped from both."""

    def __init__(self, output_dir: Path, enabled: bool, start_iter: int = 0, tensorboard: bool = True):
        self.enabled = enabled
        self.jsonl = None
        self.tb = None
        if not enabled:
            return
        path = output_dir / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if _iteration_of(line) <= start_iter]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        self.jsonl = open(path, "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=start_iter + 1)

    def write(self, iteration: int, scalars: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"iteration": iteration, **scalars}) + "\n")
        if self.tb is not None:
            for key, value in scalars.items():
                group = "loss" if key.startswith("loss") else "train"
                self.tb.add_scalar(f"{group}/{key}", value, iteration)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def _iteration_of(line: str) -> float:
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut short by a kill: drop it


def describe_non_finite(names: Sequence[str], values: torch.Tensor, iteration: int) -> str:
    bad = [f"{name}={value}" for name, value in zip(names, values.tolist()) if not math.isfinite(value)]
    return (
        f"loss is not finite at iteration {iteration}: {', '.join(bad)}. Training stopped; "
        "lower solver.base_lr, add warm-up or set solver.clip_grad_norm, then resume from the last checkpoint"
    )


# --------------------------------------------------------------------------------------------
# the loop


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


def _train(cfg: Config, resume: bool, dist_ctx: DistContext) -> dict:
    from oanet.model.oanet import build_model

    device = dist_ctx.device
    solver = cfg.solver
    check_solver(solver, dist_ctx.world_size)
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {cfg.data.num_workers}")
    output_dir = Path(cfg.output_dir)
    last_path = output_dir / LAST_CHECKPOINT

    if not resume and last_path.exists():
        raise ConfigError(
            f"{last_path} exists: pass --resume to continue that run, or choose another --output"
        )
    state = None
    if resume:
        if last_path.exists():
            state = ckpt.load_checkpoint_file(last_path, map_location="cpu")
        elif dist_ctx.is_main:
            print(f"oanet train: no {last_path} yet, starting from iteration 0", file=sys.stderr)

    dataset = build_train_dataset(cfg)
    label_space = dataset.label_space
    cfg = with_num_classes(cfg, label_space, cfg.data.train.panoptic_json)
    if state is not None:
        ckpt.check_model_config(state["config"], cfg, last_path)
        differences = schedule_differences(state.get("schedule") or {}, run_schedule(cfg), int(state["iteration"]))
        if differences:
            raise ConfigError(
                f"{last_path}: cannot resume exactly with a different schedule: "
                + "; ".join(f"{line} (checkpoint != current)" for line in differences)
                + " (only solver.max_iter and steps not yet reached may change)"
            )
        if state.get("label_space") is not None and label_classes(state["label_space"]) != label_classes(
            label_space.to_dict()
        ):
            raise ConfigError(
                f"{last_path}: checkpoint was trained on another label space than {cfg.data.train.panoptic_json}"
            )

    if dist_ctx.is_main:
        make_dir(output_dir)
        # A run killed while writing a checkpoint leaves its temporary file; last.pth itself is intact.
        for stale in output_dir.glob(f".{LAST_CHECKPOINT}.*.tmp"):
            stale.unlink(missing_ok=True)
        save_config(cfg, output_dir / "config.yaml")

    # Same seed on every rank: identical initial weights without relying on a broadcast.
    seed_everything(cfg.seed)
    model_cfg = cfg.model
    if state is not None:  # every weight comes from the checkpoint: no ImageNet download on resume
        model_cfg = dataclasses.replace(model_cfg, backbone=dataclasses.replace(model_cfg.backbone, weights=None))
    if dist_ctx.distributed and not dist_ctx.is_main:
        barrier()  # let rank 0 fetch pretrained weights into the cache first (one download, no race)
    model = build_model(model_cfg).to(device)
    apply_init(model, cfg, label_space, output_dir, fresh=state is None, is_main=dist_ctx.is_main)
    if dist_ctx.distributed and dist_ctx.is_main:
        barrier()
    model.train()
    optimizer = build_optimizer(model, solver)
    use_amp = solver.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_iter = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_iter = int(state["iteration"])
        rng_states = state.get("rng") or []
        if len(rng_states) == dist_ctx.world_size:
            ckpt.restore_rng_state(rng_states[dist_ctx.rank])
        del state

    train_model = model
    if dist_ctx.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    groups = (
        aspect_ratio_groups(dataset.aspect_ratios())
        if cfg.data.aspect_ratio_grouping
        else [0] * len(dataset)
    )
    sampler = GlobalBatchSampler(
        groups,
        solver.ims_per_batch,
        cfg.seed,
        rank=dist_ctx.rank,
        world_size=dist_ctx.world_size,
        start_iter=start_iter,
        max_iter=solver.max_iter,
    )
    loader = torch.utils.data.DataLoader(
        dataset,  # indexed by the sampler's (index, epoch) pairs: the epoch reaches the workers
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,  # ([images], [targets]): sizes differ, the model batches them
        pin_memory=device.type == "cuda",
    )

    writer = MetricWriter(output_dir, enabled=dist_ctx.is_main, start_iter=start_iter)
    progress = None
    if dist_ctx.is_main:
        from tqdm import tqdm

        progress = tqdm(
            total=solver.max_iter, initial=start_iter, desc="train", unit="it", dynamic_ncols=True,
            file=sys.stderr,
        )
    chunks_per_rank = num_accumulation_chunks(solver.ims_per_batch, dist_ctx.world_size, solver.ims_per_device)
    schedule = schedule_of(solver)

    def save_last(completed: int) -> None:
        # Every rank's RNG state, so a resumed multi-process run continues each rank's streams.
        rng_states = all_gather_objects(ckpt.capture_rng_state())
        if dist_ctx.is_main:
            ckpt.atomic_save(
                ckpt.training_state(
                    model=model, optimizer=optimizer, scaler=scaler if use_amp else None,
                    iteration=completed, cfg=cfg, label_space=label_space, schedule=run_schedule(cfg),
                    rng_states=rng_states,
                ),
                last_path,
            )
        barrier()

    loss_names: list[str] | None = None
    window: list[dict] = []
    last_scalars: dict = {}
    iteration = start_iter
    tic = time.perf_counter()
    try:
        for batch_images, batch_targets in loader:
            data_time = time.perf_counter() - tic
            lr = lr_at(iteration, **schedule)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)

            share = len(batch_images)  # this process's images this iteration
            chunk_size = math.ceil(share / chunks_per_rank)
            chunks = list(zip(split_chunks(batch_images, chunk_size), split_chunks(batch_targets, chunk_size)))
            loss_sum = None
            for c, (chunk_images, chunk_targets) in enumerate(chunks):
                torch.manual_seed(chunk_seed(cfg.seed, iteration, dist_ctx.rank * chunks_per_rank + c))
                images, targets = to_device(chunk_images, chunk_targets, device)
                # Gradients are all-reduced once per iteration, on the last chunk's backward.
                sync = c == len(chunks) - 1 or not dist_ctx.distributed
                with contextlib.nullcontext() if sync else train_model.no_sync():
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                        losses = train_model(images, targets)
                    if loss_names is None:
                        loss_names = list(losses)
                    values = torch.stack([losses[name].float() for name in loss_names])
                    total = values.sum()
                    # Each chunk weighs by its share of the process's images: the mean over the batch.
                    scaler.scale(total * (len(chunk_images) / share)).backward()
                weighted = values.detach() * (len(chunk_images) / share)
                loss_sum = weighted if loss_sum is None else loss_sum + weighted

            reduced = all_reduce_mean(loss_sum)  # equal on every rank, so every rank stops together
            if not torch.isfinite(reduced).all():
                raise NonFiniteLossError(describe_non_finite(loss_names, reduced.cpu(), iteration))
            if solver.clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            iteration += 1

            iter_time = time.perf_counter() - tic
            tic = time.perf_counter()
            reduced = reduced.cpu()
            total_loss = float(reduced.sum())
            window.append(
                {"loss": total_loss, **{f"loss_{n}": float(v) for n, v in zip(loss_names, reduced)},
                 "time": iter_time, "data_time": data_time}
            )
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{total_loss:.3f}", lr=f"{lr:.2e}", refresh=False)
            if iteration % solver.log_period == 0 or iteration == solver.max_iter:
                last_scalars = summarize(window, lr, solver.ims_per_batch)
                writer.write(iteration, last_scalars)
                window = []
            if iteration % solver.checkpoint_period == 0 and iteration < solver.max_iter:
                save_last(iteration)
    finally:
        if progress is not None:
            progress.close()
        writer.close()

    if iteration > start_iter:  # the same decision on every rank (no file-system check)
        save_last(iteration)
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
        "metrics": last_scalars,
        "world_size": dist_ctx.world_size,
    }


def summarize(window: list[dict], lr: float, ims_per_batch: int) -> dict:
    """Means over the iterations since the last log line, plus lr and throughput."""
    keys = [k for k in window[0] if k not in ("time", "data_time")]
    out = {k: sum(w[k] for w in window) / len(window) for k in keys}
    time_per_iter = sum(w["time"] for w in window) / len(window)
    out["lr"] = lr
    out["time_per_iter"] = time_per_iter
    out["data_time"] = sum(w["data_time"] for w in window) / len(window)
    out["images_per_s"] = ims_per_batch / time_per_iter if time_per_iter > 0 else 0.0
    return out
