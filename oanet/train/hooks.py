"""What the training loop does between iterations: logging and periodic checkpoints.

Each hook has ``after_step(iteration, record)``, called on every rank after each iteration with the
number of completed iterations and that iteration's record (``loss``, ``loss_<term>``, ``lr``,
``time``, ``data_time``). Plain classes, called in the order the loop lists them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from oanet.model import checkpoint as ckpt
from oanet.distributed import all_gather_objects, barrier
from oanet.progress import Progress


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


def summarize(window: list[dict], ims_per_batch: int) -> dict:
    """Means of the loss terms over the records since the last log line, the last lr, and throughput."""
    keys = [k for k in window[0] if k not in ("lr", "time", "data_time")]
    out = {k: sum(w[k] for w in window) / len(window) for k in keys}
    time_per_iter = sum(w["time"] for w in window) / len(window)
    out["lr"] = window[-1]["lr"]
    out["time_per_iter"] = time_per_iter
    out["data_time"] = sum(w["data_time"] for w in window) / len(window)
    out["images_per_s"] = ims_per_batch / time_per_iter if time_per_iter > 0 else 0.0
    return out


class LogHook:
    """The progress bar (loss and lr in its postfix) and, every ``log_period`` iterations and at the
    end, the means since the last line in metrics.jsonl / TensorBoard. Rank 0 only (``enabled``)."""

    def __init__(self, output_dir: Path, enabled: bool, start_iter: int, max_iter: int, log_period: int,
                 ims_per_batch: int):
        self.max_iter, self.log_period, self.ims_per_batch = max_iter, log_period, ims_per_batch
        self.writer = MetricWriter(output_dir, enabled=enabled, start_iter=start_iter)
        self.progress = Progress(total=max_iter, initial=start_iter, desc="train", unit="it", disable=not enabled)
        self.window: list[dict] = []
        self.last_scalars: dict = {}

    def after_step(self, iteration: int, record: dict) -> None:
        self.window.append(record)
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
        if iteration % self.log_period == 0 or iteration == self.max_iter:
            self.last_scalars = summarize(self.window, self.ims_per_batch)
            self.writer.write(iteration, self.last_scalars)
            self.window = []

    def close(self) -> None:
        self.progress.close()
        self.writer.close()


class CheckpointHook:
    """``last.pth`` every ``period`` iterations before ``max_iter`` (the end is saved by :meth:`save`).

    ``state_of(iteration, rng_states)`` builds the checkpoint; the RNG states of every rank are
    gathered, so a resumed multi-process run continues each rank's streams. Rank 0 writes.
    """

    def __init__(self, path: Path, period: int, max_iter: int, is_main: bool,
                 state_of: Callable[[int, list], dict]):
        self.path, self.period, self.max_iter, self.is_main = path, period, max_iter, is_main
        self.state_of = state_of

    def save(self, iteration: int) -> None:
        rng_states = all_gather_objects(ckpt.capture_rng_state())
        if self.is_main:
            ckpt.atomic_save(self.state_of(iteration, rng_states), self.path)
        barrier()

    def after_step(self, iteration: int, record: dict) -> None:
        if iteration % self.period == 0 and iteration < self.max_iter:
            self.save(iteration)
