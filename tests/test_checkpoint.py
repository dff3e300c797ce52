"""Checkpoint files: atomic writes, weights_only loads, RNG round trips, refusing another model config."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from oanet.config import Config, load_config, to_dict
from oanet.model import checkpoint as ckpt
from oanet.errors import ConfigError


def test_atomic_save_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "last.pth"
    ckpt.atomic_save({"model": {"w": torch.ones(2)}, "config": {}}, path)
    ckpt.atomic_save({"model": {"w": torch.zeros(2)}, "config": {}}, path)
    assert torch.equal(ckpt.load_checkpoint_file(path)["model"]["w"], torch.zeros(2))
    assert os.listdir(path.parent) == ["last.pth"]


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.pth"
    ckpt.atomic_save({"model": {"w": torch.ones(2)}, "config": {}}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ckpt.atomic_save({"model": Unsaveable(), "config": {}}, path)
    assert torch.equal(ckpt.load_checkpoint_file(path)["model"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["last.pth"]


def test_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"model": {}, "config": {}, "x": Payload()}, path)
    with pytest.raises(ConfigError, match="evil.pth"):
        ckpt.load_checkpoint_file(path)
    assert not (tmp_path / "pwned").exists()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        ckpt.load_checkpoint_file(tmp_path / "nothing.pth")
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match="truncated.pth"):
        ckpt.load_checkpoint_file(bad)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ConfigError, match="not an oanet checkpoint"):
        ckpt.load_checkpoint_file(other)
    for name, data in (("random.pth", os.urandom(1000)), ("empty.pth", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError, match=f"{name}: not a readable oanet checkpoint") as info:
            ckpt.load_checkpoint_file(tmp_path / name)
        assert "\n" not in str(info.value)  # torch's multi-line advice is cut to its first sentence


def test_bad_label_space_in_a_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "bad_labels.pth"
    torch.save({"model": {}, "config": to_dict(Config()), "label_space": {"categories": [{"id": 1}]}}, path)
    with pytest.raises(ConfigError, match=r"bad_labels\.pth: bad label space in the checkpoint .*without 'id' and 'name'"):
        ckpt.load_model_from_checkpoint(path)


def test_rng_state_roundtrips_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    state = ckpt.capture_rng_state()
    path = tmp_path / "rng.pth"
    ckpt.atomic_save({"model": {}, "config": {}, "rng": [state]}, path)
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.restore_rng_state(ckpt.load_checkpoint_file(path)["rng"][0])
    got = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_training_state_is_weights_only_loadable(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    cfg = Config()
    state = ckpt.training_state(
        model=model, optimizer=opt, scaler=torch.amp.GradScaler("cuda", enabled=False), iteration=5,
        cfg=cfg, label_space=None, schedule={"base_lr": 0.02}, rng_states=[ckpt.capture_rng_state()],
    )
    path = tmp_path / "last.pth"
    ckpt.atomic_save(state, path)
    data = ckpt.load_checkpoint_file(path)
    assert data["iteration"] == 5 and data["config"] == to_dict(cfg)
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(data["model"])
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(data["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])


def test_different_model_config_is_refused_with_the_differences():
    saved = to_dict(load_config(None, ["model.backbone.depth=50", "model.srm.kernel=gcn7"]))
    same = load_config(None, ["solver.max_iter=7"])  # solver changes are allowed on resume
    ckpt.check_model_config(saved, same, "last.pth")
    other = load_config(None, ["model.backbone.depth=101", "model.srm.kernel=3x3"])
    with pytest.raises(ConfigError) as info:
        ckpt.check_model_config(saved, other, "runs/x/last.pth")
    message = str(info.value)
    assert "runs/x/last.pth" in message
    assert "model.backbone.depth: 50 != 101" in message and "model.srm.kernel: 'gcn7' != '3x3'" in message
