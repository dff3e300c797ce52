"""The synthetic occlusion benchmark as the experiments use it: where a generated benchmark's splits
are, generating it when absent, the --quick sizes, and reading a training run's metrics back.

``oanet demo`` and ``oanet ablate`` both train and evaluate on it; this is what they share.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Sequence

from oanet.config import Config, SplitConfig
from oanet.errors import DataError

PRESET = "synthetic_cpu.yaml"
# Benchmark sizes: the full demo uses the generator's own defaults; --quick a handful of small images.
QUICK_DATA = {"train": 4, "val": 3, "size": 64}
# --quick shrinks the network to the test suite's size too: it is a smoke test of the whole job.
QUICK_OVERRIDES = [
    "model.min_size=[64]",
    "model.max_size=96",
    "model.backbone.fpn_channels=16",
    "model.rpn.pre_nms_top_n_train=50",
    "model.rpn.post_nms_top_n_train=20",
    "model.rpn.pre_nms_top_n_test=50",
    "model.rpn.post_nms_top_n_test=20",
    "model.roi_heads.batch_size_per_image=32",
    "model.roi_heads.box_representation_size=32",
    "model.roi_heads.mask_head_channels=16",
    "model.roi_heads.detections_per_img=10",
    "model.stuff_head.channels=16",
    "solver.max_iter=2",
    "solver.warmup_iters=1",
    "solver.steps=[]",
    "solver.ims_per_batch=2",
    "solver.log_period=1",
    "solver.checkpoint_period=1000",
    "data.num_workers=0",
]


def benchmark_split(data_dir: Path, split: str) -> SplitConfig:
    """The COCO-panoptic layout ``oanet synth`` writes, for one split."""
    instances = data_dir / "annotations" / f"instances_{split}.json"
    return SplitConfig(
        panoptic_json=str(data_dir / "annotations" / f"panoptic_{split}.json"),
        panoptic_dir=str(data_dir / "annotations" / f"panoptic_{split}"),
        image_dir=str(data_dir / "images" / split),
        instances_json=str(instances) if instances.is_file() else None,
    )


def has_benchmark(data_dir: Path) -> bool:
    return all(Path(benchmark_split(data_dir, s).panoptic_json).is_file() for s in ("train", "val"))


def ensure_benchmark(data_dir: Path, quick: bool, log=print, step: str = "[1/4] ") -> None:
    """Generate the benchmark into ``data_dir`` unless it is already there (``step`` prefixes the log)."""
    if has_benchmark(data_dir):
        log(f"{step}using the benchmark in {data_dir}")
        return
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir}: exists and is not a folder; pass --data with a benchmark folder or a new one")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataError(
            f"{data_dir}: folder is not empty but holds no benchmark "
            "(annotations/panoptic_train.json and panoptic_val.json); pass --data with another folder"
        )
    from oanet.data.synthetic import generate_dataset

    log(f"{step}generating the synthetic occlusion benchmark in {data_dir}")
    if quick:
        generate_dataset(data_dir, train=QUICK_DATA["train"], val=QUICK_DATA["val"], size=QUICK_DATA["size"], seed=0)
    else:
        generate_dataset(data_dir, seed=0)


def scale_schedule(cfg: Config, max_iter: int) -> Config:
    """``cfg`` trained for ``max_iter`` iterations, with the learning-rate steps moved proportionally."""
    solver = cfg.solver
    factor = max_iter / solver.max_iter
    steps = tuple(sorted({max(1, round(s * factor)) for s in solver.steps}))
    warmup = min(solver.warmup_iters, max(1, max_iter // 8))
    solver = dataclasses.replace(solver, max_iter=max_iter, steps=steps, warmup_iters=warmup)
    return dataclasses.replace(cfg, solver=solver)


def read_metrics(path: Path) -> list[dict]:
    """The trainer's metrics.jsonl (one JSON object per logged iteration); [] when absent."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number} is not JSON ({exc})") from None
    return rows


def training_seconds(metrics: Sequence[Mapping]) -> float:
    """Time spent in training iterations, from the logged per-iteration means (survives resumes)."""
    total, previous = 0.0, 0
    for row in metrics:
        if "time_per_iter" in row and "iteration" in row:
            total += float(row["time_per_iter"]) * max(0, int(row["iteration"]) - previous)
            previous = int(row["iteration"])
    return total


