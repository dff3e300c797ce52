"""oanet.config.validate: the cross-field checks every command can run before touching data."""

from __future__ import annotations

from pathlib import Path

import pytest

from oanet.config import Config, load_config, validate
from oanet.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_preset_is_valid(path):
    cfg = load_config(path)
    assert validate(cfg) is cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=-1", "seed must be >= 0, got -1"),
        ("data.num_workers=-2", "data.num_workers must be >= 0, got -2"),
        ("data.hflip_prob=1.5", "data.hflip_prob must be in 0..1"),
        ("solver.max_iter=0", "solver.max_iter must be >= 1"),
        ("solver.ims_per_batch=0", "global batch"),
        ("solver.ims_per_device=-1", "solver.ims_per_device must be >= 0"),
        ("solver.base_lr=0", "need base_lr > 0"),
        ("solver.warmup_factor=0", "0 < warmup_factor <= 1"),
        ("solver.warmup_iters=-1", "warmup_iters >= 0"),
        ("solver.steps=[80000,60000]", r"solver.steps must be increasing, got \[80000, 60000\]"),
        ("solver.clip_grad_norm=-1", "clip_grad_norm >= 0"),
        ("solver.weight_decay=-0.1", "weight_decay"),
        ("solver.log_period=0", "log_period must be >= 1"),
        ("solver.checkpoint_period=0", "checkpoint_period"),
        ("model.pixel_std=[1,0,1]", "pixel_std must not contain 0"),
        ("model.pixel_mean=[1,2]", "pixel_mean needs 3 values"),
        ("model.input_scale=0", "input_scale must be > 0"),
        ("model.roi_heads.pooler_sampling_ratio=-1", "pooler_sampling_ratio must be >= 0"),
        ("model.backbone.depth=18 model.backbone.stride_in_1x1=true", "stride_in_1x1 needs a bottleneck ResNet"),
        ("model.freeze=['']", "model.freeze entries must be module names"),
        ("model.fusion.score_thresh=1.5", r"model.fusion.score_thresh must be a number in \[0, 1\]"),
        ("model.max_size=0", "must be positive"),
    ],
)
def test_each_bad_value_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config(None, override.split(" ")))


def test_global_batch_must_split_over_the_processes():
    cfg = load_config(None, ["solver.ims_per_batch=6"])
    assert validate(cfg, world_size=3) is cfg
    with pytest.raises(ConfigError, match=r"ims_per_batch=6 is the global batch .* processes \(4\)"):
        validate(cfg, world_size=4)
    default = Config()  # the paper: 16 images on 16 GPUs
    assert validate(default, world_size=16) is default
