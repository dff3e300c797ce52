"""End to end through ``oanet train`` in subprocesses: outputs, exact resume after SIGKILL, resuming with a
longer schedule, refusals, 2-process DDP == 1 process with accumulation, divergence, real COCO images.

Each run is the tiny config (ResNet-18, FPN 16, 64-96 px) on a few synthetic images, one thread per
process (the CI machine has 2 cores; more threads than cores makes PyTorch's CPU kernels crawl).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_test.yaml"
TIMEOUT = 240


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _data_overrides(root: Path, split: str = "train", stem: str = "panoptic_train", images: str = "images/train",
                    instances: str | None = "instances_train") -> list[str]:
    out = [
        f"data.train.panoptic_json={root}/annotations/{stem}.json",
        f"data.train.panoptic_dir={root}/annotations/{stem}",
        f"data.train.image_dir={root}/{images}",
    ]
    if instances:
        out.append(f"data.train.instances_json={root}/annotations/{instances}.json")
    return out


def _train_cmd(output: Path, overrides: list[str], resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "oanet.cli", "train", "--config", str(TINY), "--output", str(output)]
    return cmd + (["--resume"] if resume else []) + overrides


def _run(cmd: list[str], expect_ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0 for k in a)


def _metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def one_thread():
    """In-process training with one thread (restored afterwards): see the module docstring."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_cfg(output: Path, overrides: list[str]):
    from oanet.config import load_config

    return load_config(TINY, overrides + [f"output_dir={output}"])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from oanet.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, train=6, val=1, size=96, seed=1, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def reference_run(synthetic, tmp_path_factory) -> Path:
    """6 uninterrupted iterations (batch 2, checkpoints every 2)."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    _run(_train_cmd(out, _data_overrides(synthetic) + ["solver.max_iter=6"]))
    return out


def test_outputs_of_a_training_run(reference_run):
    out = reference_run
    for name in ("last.pth", "model_final.pth", "config.yaml", "metrics.jsonl"):
        assert (out / name).is_file(), name
    last = _load(out / "last.pth")
    assert last["iteration"] == 6
    assert {"model", "optimizer", "scaler", "rng", "config", "label_space", "schedule"} <= set(last)
    assert last["config"]["model"]["num_thing_classes"] > 0  # filled from the data
    assert last["config"]["model"]["num_stuff_classes"] > 0
    final = _load(out / "model_final.pth")
    assert "optimizer" not in final and final["iteration"] == 6
    assert _max_abs_diff(final["model"], last["model"]) == 0.0

    rows = _metrics(out)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    expected = {"loss", "lr", "time_per_iter", "images_per_s"} | {
        f"loss_{k}" for k in ("rpn_cls", "rpn_bbox", "cls", "bbox", "mask", "seg", "srm")
    }
    assert expected <= set(rows[0])
    # tiny_test.yaml: base_lr 0.01, warm-up 2 iterations from 0.001, x0.1 from iteration 3.
    assert [r["lr"] for r in rows] == pytest.approx([0.001, 0.0055, 0.01, 0.001, 0.001, 0.001])
    for r in rows:
        parts = sum(v for k, v in r.items() if k.startswith("loss_"))
        assert r["loss"] == pytest.approx(parts, rel=1e-5)

    from oanet.config import load_config

    saved = load_config(out / "config.yaml")
    assert saved.model.num_thing_classes == last["config"]["model"]["num_thing_classes"]


def test_load_model_from_checkpoint_for_inference(reference_run, one_thread):
    from oanet.model.checkpoint import load_model_from_checkpoint

    model, cfg, label_space = load_model_from_checkpoint(reference_run / "model_final.pth")
    assert not model.training and label_space.num_things == cfg.model.num_thing_classes
    with torch.no_grad():
        (result,) = model([torch.rand(3, 80, 96)])
    assert result["sem_seg_labels"].shape == (80, 96)


def test_sigkill_then_resume_matches_uninterrupted_run(synthetic, reference_run, tmp_path):
    out = tmp_path / "killed"
    cmd = _train_cmd(out, _data_overrides(synthetic) + ["solver.max_iter=6"])
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (out / "last.pth").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _load(out / "last.pth")["iteration"]
    assert killed_at in (2, 4), "the run was not interrupted before its end"

    _run(_train_cmd(out, _data_overrides(synthetic) + ["solver.max_iter=6"], resume=True))
    resumed, reference = _load(out / "last.pth"), _load(reference_run / "last.pth")
    assert resumed["iteration"] == 6
    assert _max_abs_diff(resumed["model"], reference["model"]) == 0.0
    momentum = lambda ckpt: {str(k): v["momentum_buffer"] for k, v in ckpt["optimizer"]["state"].items()}
    assert _max_abs_diff(momentum(resumed), momentum(reference)) == 0.0
    # Log lines the killed run wrote after its checkpoint were dropped, then redone once.
    assert [r["iteration"] for r in _metrics(out)] == [1, 2, 3, 4, 5, 6]


def test_resume_with_longer_schedule_and_refusals(synthetic, reference_run, tmp_path, one_thread):
    from oanet.train.trainer import train
    from oanet.errors import ConfigError

    out = tmp_path / "extended"
    out.mkdir()
    shutil.copy(reference_run / "last.pth", out / "last.pth")
    base = _data_overrides(synthetic)

    # Training again into a folder with a checkpoint without --resume would overwrite it: refused.
    with pytest.raises(ConfigError, match=r"last\.pth exists: pass --resume"):
        train(_tiny_cfg(out, base + ["solver.max_iter=8"]))
    # Another model config cannot continue this checkpoint; the message lists what differs.
    with pytest.raises(ConfigError) as info:
        train(_tiny_cfg(out, base + ["model.backbone.fpn_channels=32", "model.srm.kernel=3x3"]), resume=True)
    assert "model.backbone.fpn_channels: 16 != 32" in str(info.value) and "model.srm.kernel" in str(info.value)

    # A changed batch or seed would not continue the run exactly: refused, listing what differs.
    with pytest.raises(ConfigError, match=r"different schedule: solver\.ims_per_batch: 2 != 4 .*; seed: 0 != 1"):
        train(_tiny_cfg(out, base + ["solver.max_iter=8", "solver.ims_per_batch=4", "seed=1"]), resume=True)

    # A longer schedule continues at iteration 6.
    summary = train(_tiny_cfg(out, base + ["solver.max_iter=7"]), resume=True)
    assert (summary["start_iteration"], summary["iteration"]) == (6, 7)
    assert [r["iteration"] for r in _metrics(out)] == [7]
    assert _load(out / "last.pth")["iteration"] == 7
    # Resuming a finished run does nothing and keeps the checkpoint.
    assert train(_tiny_cfg(out, base + ["solver.max_iter=7"]), resume=True)["iteration"] == 7


def test_two_processes_equal_one_process_with_accumulation(synthetic, reference_run, tmp_path):
    # tiny_test.yaml has ims_per_batch 2 and ims_per_device 1: the reference run (1 process) accumulates
    # two one-image chunks; here each of 2 DDP processes takes one image, and DDP averages gradients.
    double = tmp_path / "double"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "oanet.cli"]
    proc = _run(torchrun + _train_cmd(double, _data_overrides(synthetic) + ["solver.max_iter=6"])[3:])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["iteration"] == 6

    one, two = _load(reference_run / "model_final.pth")["model"], _load(double / "model_final.pth")["model"]
    assert _max_abs_diff(one, two) < 1e-5
    losses_1, losses_2 = [r["loss"] for r in _metrics(reference_run)], [r["loss"] for r in _metrics(double)]
    assert losses_1 == pytest.approx(losses_2, rel=1e-5)
    assert losses_1[0] != pytest.approx(losses_1[-1], rel=1e-3)  # the weights did move


def test_divergence_stops_with_the_iteration_and_loss_terms(synthetic, tmp_path, one_thread):
    from oanet.train.trainer import train
    from oanet.train.step import NonFiniteLossError

    cfg = _tiny_cfg(tmp_path / "diverge", _data_overrides(synthetic) + ["solver.base_lr=1e12", "solver.warmup_iters=0"])
    with pytest.raises(NonFiniteLossError, match=r"not finite at iteration \d+: .*(rpn_cls|cls|bbox|mask|seg|srm)="):
        train(cfg)


def test_train_on_real_coco_images_with_instances(coco16, tmp_path, one_thread):
    from oanet.train.trainer import train

    out = tmp_path / "coco"
    overrides = [
        f"data.train.panoptic_json={coco16}/annotations/panoptic_val2017.json",
        f"data.train.panoptic_dir={coco16}/annotations/panoptic_val2017",
        f"data.train.image_dir={coco16}/val2017",
        f"data.train.instances_json={coco16}/annotations/instances_val2017.json",
        "model.min_size=[128]", "model.max_size=160", "solver.max_iter=2",
    ]
    summary = train(_tiny_cfg(out, overrides))
    assert summary["iteration"] == 2
    last = _load(out / "last.pth")
    assert (last["config"]["model"]["num_thing_classes"], last["config"]["model"]["num_stuff_classes"]) == (80, 53)
    assert all(math.isfinite(r["loss"]) for r in _metrics(out))
    # A preset that names a different class count than the data is refused.
    from oanet.errors import ConfigError

    with pytest.raises(ConfigError, match="num_thing_classes=3 but .*panoptic_val2017.json has 80"):
        train(_tiny_cfg(tmp_path / "mismatch", overrides + ["model.num_thing_classes=3"]))
