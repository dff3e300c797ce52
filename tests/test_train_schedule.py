"""Pure training logic: the LR schedule, the global batch sampler, accumulation chunks."""

from __future__ import annotations

import dataclasses
import math

import pytest

from oanet.config import SolverConfig
from oanet.train.sampler import (
    GlobalBatchSampler,
    aspect_ratio_groups,
    epoch_batches,
    num_accumulation_chunks,
    rank_slice,
    split_chunks,
)
from oanet.train.schedule import effective_base_lr, lr_at, schedule_of
from oanet.train.step import chunk_seed
from oanet.errors import ConfigError

PAPER = dict(base_lr=0.02, warmup_iters=2000, warmup_factor=0.1, steps=(60000, 80000), gamma=0.1)


@pytest.mark.parametrize(
    "iteration, expected",
    [
        (0, 0.002),  # paper: warm-up starts at 0.002
        (1000, 0.011),  # half-way: 0.002 + 0.5 * 0.018
        (2000, 0.02),
        (59999, 0.02),
        (60000, 0.002),
        (79999, 0.002),
        (80000, 0.0002),
        (99999, 0.0002),
    ],
)
def test_paper_schedule(iteration, expected):
    assert lr_at(iteration, **PAPER) == pytest.approx(expected, rel=1e-12)


def test_schedule_defaults_are_the_papers():
    assert schedule_of(SolverConfig()) == {**PAPER, "steps": [60000, 80000]}
    assert SolverConfig().max_iter == 100000 and SolverConfig().ims_per_batch == 16


def test_warmup_is_linear_and_monotone():
    lrs = [lr_at(i, **PAPER) for i in range(2001)]
    diffs = [b - a for a, b in zip(lrs, lrs[1:])]
    assert all(d == pytest.approx(0.018 / 2000) for d in diffs)


def test_no_warmup_and_step_inside_warmup():
    assert lr_at(0, base_lr=0.1, warmup_iters=0, warmup_factor=0.1, steps=(), gamma=0.1) == 0.1
    # A step before warm-up ends multiplies the warm-up ramp too.
    assert lr_at(5, base_lr=1.0, warmup_iters=10, warmup_factor=0.0 + 0.5, steps=(5,), gamma=0.1) == pytest.approx(
        0.1 * (0.5 * 0.5 + 0.5)
    )


def test_linear_scaling_rule():
    assert effective_base_lr(SolverConfig(ims_per_batch=8)) == 0.02  # off by default
    assert effective_base_lr(SolverConfig(ims_per_batch=8, scale_lr_with_batch=True)) == pytest.approx(0.01)
    assert effective_base_lr(SolverConfig(ims_per_batch=64, scale_lr_with_batch=True)) == pytest.approx(0.08)


def test_epoch_batches_cover_every_image_once_and_group_by_orientation():
    ratios = [1.5, 0.7, 1.3, 0.6, 1.0, 0.8, 1.4, 1.2, 0.5, 2.0, 1.1]  # 7 landscape/square, 4 portrait
    groups = aspect_ratio_groups(ratios)
    assert groups == [0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0]
    batches = epoch_batches(groups, 4, seed=3, epoch=0)
    assert len(batches) == math.ceil(11 / 4)
    flat = [i for b in batches for i in b]
    assert set(flat) == set(range(11))  # each image at least once
    assert len(flat) - 11 == 1  # one image repeated to complete the last batch
    pure = [b for b in batches if len({groups[i] for i in b}) == 1]
    assert len(pure) >= len(batches) - 2  # at most one mixed batch per group


def test_epochs_differ_and_are_reproducible():
    groups = [0] * 20
    assert epoch_batches(groups, 4, seed=0, epoch=0) == epoch_batches(groups, 4, seed=0, epoch=0)
    assert epoch_batches(groups, 4, seed=0, epoch=0) != epoch_batches(groups, 4, seed=0, epoch=1)
    assert epoch_batches(groups, 4, seed=0, epoch=0) != epoch_batches(groups, 4, seed=1, epoch=0)


def test_tiny_dataset_smaller_than_the_batch():
    batches = epoch_batches([0, 1, 0], 8, seed=0, epoch=0)
    assert len(batches) == 1 and len(batches[0]) == 8 and set(batches[0]) == {0, 1, 2}


def _run(sampler):
    return [list(batch) for batch in sampler]


@pytest.mark.parametrize("world_size", [2, 4])
def test_global_batches_are_world_size_independent(world_size):
    groups = aspect_ratio_groups([1.3, 0.75] * 9 + [1.0])  # 19 images, two orientations
    single = _run(GlobalBatchSampler(groups, 4, seed=7, max_iter=25))
    ranks = [_run(GlobalBatchSampler(groups, 4, seed=7, rank=r, world_size=world_size, max_iter=25)) for r in range(world_size)]
    assert len(single) == 25
    for iteration in range(25):
        merged = [pair for r in range(world_size) for pair in ranks[r][iteration]]
        assert merged == single[iteration]
        assert all(len(ranks[r][iteration]) == 4 // world_size for r in range(world_size))
    # 25 iterations of 5 batches per epoch span epochs 0..4, passed along with each index.
    assert {epoch for batch in single for _, epoch in batch} == {0, 1, 2, 3, 4}


def test_sampler_resumes_at_any_iteration():
    groups = [0, 1] * 10
    full = _run(GlobalBatchSampler(groups, 6, seed=1, max_iter=17))
    for start in (0, 3, 4, 11, 16):
        assert _run(GlobalBatchSampler(groups, 6, seed=1, start_iter=start, max_iter=17)) == full[start:]
    assert len(GlobalBatchSampler(groups, 6, seed=1, start_iter=5, max_iter=17)) == 12


def test_sampler_rejects_batch_not_divisible_by_world_size():
    with pytest.raises(ConfigError, match="divisible"):
        GlobalBatchSampler([0] * 10, 3, seed=0, rank=0, world_size=2, max_iter=1)


def test_rank_slice_and_chunks():
    assert rank_slice([10, 11, 12, 13, 14, 15], 1, 3) == [12, 13]
    assert split_chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert num_accumulation_chunks(16, 8, 0) == 1  # 2 per GPU, the paper's setup
    assert num_accumulation_chunks(16, 1, 2) == 8  # one GPU accumulating the paper's batch
    assert num_accumulation_chunks(2, 1, 1) == 2
    assert num_accumulation_chunks(2, 2, 1) == 1


def test_chunk_seeds_distinct():
    seeds = {chunk_seed(0, it, c) for it in range(100) for c in range(16)}
    assert len(seeds) == 1600


def test_negative_loader_workers_is_a_config_error_before_any_work(tmp_path):
    from pathlib import Path

    from oanet.config import load_config
    from oanet.train.trainer import train

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny_test.yaml"
    cfg = load_config(tiny, ["data.num_workers=-1", "device=cpu", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ConfigError, match="data.num_workers must be >= 0, got -1"):
        train(cfg)
    assert not (tmp_path / "out").exists()


def test_resume_schedule_may_extend_but_not_change_the_past():
    from oanet.config import Config
    from oanet.train.schedule import run_schedule, schedule_differences

    cfg = Config()
    stored = run_schedule(cfg)
    assert stored["ims_per_batch"] == 16 and stored["seed"] == 0 and stored["max_iter"] == 100000

    def changed(iteration=50000, seed=0, **solver):
        other = dataclasses.replace(cfg, seed=seed, solver=dataclasses.replace(cfg.solver, **solver))
        return schedule_differences(stored, run_schedule(other), iteration)

    assert changed() == []
    assert changed(max_iter=200000, steps=(60000, 150000)) == []  # steps not reached yet may move
    assert changed(max_iter=10) == []
    assert changed(iteration=70000, steps=(65000, 80000)) == [
        "solver.steps before iteration 70000: [60000] != [65000]"
    ]
    assert changed(ims_per_batch=8, seed=3, warmup_iters=10, base_lr=0.01) == [
        "solver.base_lr (effective): 0.02 != 0.01",
        "solver.warmup_iters: 2000 != 10",
        "solver.ims_per_batch: 16 != 8",
        "seed: 0 != 3",
    ]
    # older checkpoints stored the LR schedule only: what they lack is not compared
    assert schedule_differences({"base_lr": 0.02}, run_schedule(dataclasses.replace(cfg, seed=5)), 10) == []


def test_resume_label_space_ignores_names_and_colours():
    from oanet.train.trainer import label_classes

    cats = [{"id": 1, "name": "disc", "isthing": 1, "color": [1, 2, 3]}, {"id": 7, "name": "sky", "isthing": 0}]
    recoloured = [{**c, "color": [9, 9, 9], "name": c["name"].upper()} for c in cats]
    assert label_classes({"categories": cats}) == label_classes({"categories": recoloured}) == [(1, True), (7, False)]
    assert label_classes({"categories": [{**cats[0], "isthing": 0}, cats[1]]}) != label_classes({"categories": cats})
