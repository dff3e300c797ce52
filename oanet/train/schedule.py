"""The learning-rate schedule, and what a checkpoint stores of it so that a resumed run can be checked.

The recipe is the paper's (§4.2): linear warm-up over 2,000 iterations from 0.002 to 0.02, x0.1 at 60k
and 80k, 100k iterations of 16 images. Pure functions of the iteration and the solver config; no torch.
"""

from __future__ import annotations

from typing import Sequence

from oanet.config import Config, SolverConfig

REFERENCE_IMS_PER_BATCH = 16  # the paper's batch, for which base_lr = 0.02 is given


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


def effective_base_lr(solver: SolverConfig) -> float:
    """``solver.base_lr``, times ``ims_per_batch / 16`` with ``solver.scale_lr_with_batch`` (linear rule)."""
    if solver.scale_lr_with_batch:
        return solver.base_lr * solver.ims_per_batch / REFERENCE_IMS_PER_BATCH
    return solver.base_lr


def schedule_of(solver: SolverConfig) -> dict:
    """The keyword arguments of :func:`lr_at` for ``solver`` (the state is the iteration itself)."""
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
