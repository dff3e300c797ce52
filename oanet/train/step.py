"""One training iteration: what detectron2's ``run_step`` does, without its trainer class hierarchy.

A process's share of the global batch goes through the model in chunks of at most
``solver.ims_per_device`` images (gradient accumulation), under the autocast of ``solver.precision``
(:mod:`oanet.model.precision`). Each chunk's random
draws (RPN/RoI fg/bg sampling) come from a generator reseeded from ``(seed, iteration, chunk)``, where
``chunk`` counts over the whole global batch, so one process accumulating N chunks computes what N
processes with one chunk each compute. The loss terms, averaged over all processes, are checked for
NaN/inf before the optimizer steps.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence

import numpy as np
import torch

from oanet.train.sampler import split_chunks
from oanet.distributed import all_reduce_mean
from oanet.model.precision import autocast, check_precision
from oanet.errors import OANetError


class NonFiniteLossError(OANetError, FloatingPointError):
    """Training diverged: a loss term became NaN or infinite (the CLI prints it as one line)."""


def chunk_seed(seed: int, iteration: int, chunk: int) -> int:
    """Seed of the model's random draws for one chunk of images of one iteration.

    ``chunk`` counts chunks over the whole global batch (rank * chunks_per_rank + local chunk), so
    one process accumulating 2 chunks draws exactly what 2 processes with one chunk each draw.
    """
    return int(np.random.SeedSequence([seed, iteration, chunk]).generate_state(1, dtype=np.uint64)[0] >> 1)


def to_device(images: list, targets: list, device: torch.device) -> tuple[list, list]:
    non_blocking = device.type == "cuda"
    images = [image.to(device, non_blocking=non_blocking) for image in images]
    targets = [
        {k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def describe_non_finite(names: Sequence[str], values: torch.Tensor, iteration: int) -> str:
    bad = [f"{name}={value}" for name, value in zip(names, values.tolist()) if not math.isfinite(value)]
    return (
        f"loss is not finite at iteration {iteration}: {', '.join(bad)}. Training stopped; "
        "lower solver.base_lr, add warm-up or set solver.clip_grad_norm, then resume from the last checkpoint"
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class TrainStep:
    """``step(iteration, images, targets, lr)`` runs one iteration and returns the loss terms.

    ``model`` is the training module (DistributedDataParallel when ``distributed``); ``rank`` and
    ``chunks_per_rank`` place this process's chunks in the global batch; ``precision`` is one of
    :data:`oanet.model.precision.PRECISIONS` (``scaler`` must be enabled exactly when
    :func:`~oanet.model.precision.uses_grad_scaler` says so). The returned CPU tensor holds
    the loss terms named by :attr:`loss_names` (set on the first call), each the mean over the global
    batch and equal on every rank, so every rank stops together on a non-finite loss.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        *,
        device: torch.device,
        seed: int,
        rank: int,
        chunks_per_rank: int,
        distributed: bool,
        precision: str = "fp32",
        clip_grad_norm: float = 0.0,
    ):
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.device, self.seed, self.rank = device, seed, rank
        self.chunks_per_rank, self.distributed = chunks_per_rank, distributed
        self.precision, self.clip_grad_norm = check_precision(precision, device), clip_grad_norm
        self.loss_names: Optional[list[str]] = None

    def __call__(self, iteration: int, images: list, targets: list, lr: float) -> torch.Tensor:
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        reduced = all_reduce_mean(self._accumulate(iteration, images, targets))
        if not torch.isfinite(reduced).all():
            raise NonFiniteLossError(describe_non_finite(self.loss_names, reduced.cpu(), iteration))
        if self.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return reduced.cpu()

    def _accumulate(self, iteration: int, images: list, targets: list) -> torch.Tensor:
        """Backward over the chunks; the loss terms weighted by each chunk's share of the images."""
        share = len(images)  # this process's images this iteration
        chunk_size = math.ceil(share / self.chunks_per_rank)
        chunks = list(zip(split_chunks(images, chunk_size), split_chunks(targets, chunk_size)))
        loss_sum = None
        for c, (chunk_images, chunk_targets) in enumerate(chunks):
            torch.manual_seed(chunk_seed(self.seed, iteration, self.rank * self.chunks_per_rank + c))
            # Each chunk weighs by its share of the process's images: the mean over the batch.
            weight = len(chunk_images) / share
            # Gradients are all-reduced once per iteration, on the last chunk's backward.
            sync = c == len(chunks) - 1 or not self.distributed
            with contextlib.nullcontext() if sync else self.model.no_sync():
                values = self._losses(chunk_images, chunk_targets)
                self.scaler.scale(values.sum() * weight).backward()
            weighted = values.detach() * weight
            loss_sum = weighted if loss_sum is None else loss_sum + weighted
        return loss_sum

    def _losses(self, images: list, targets: list) -> torch.Tensor:
        images, targets = to_device(images, targets, self.device)
        with autocast(self.precision, self.device.type):
            losses = self.model(images, targets)
        if self.loss_names is None:
            self.loss_names = list(losses)
        return torch.stack([losses[name].float() for name in self.loss_names])
