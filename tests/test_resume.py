"""Resumable predict and evaluate (issue 19, part 2): a rerun into the same folder skips the images an
earlier run completed and ends with the files of an uninterrupted run; after a real SIGKILL, under
torchrun (records written by one process, resumed by two), and with settings that changed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """24 small images (enough for a kill to land in the middle of a run)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("resume_images")
    rng = np.random.default_rng(0)
    for i in range(24):
        small = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((320, 240), Image.BILINEAR).save(folder / f"im{i:02d}.png")
    return folder


def _predict(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "oanet.cli", "predict", str(inputs), "--checkpoint", str(checkpoint), "--out",
            str(out), "--no-progress", "--order", "both", *extra]


def _outputs(out: Path) -> dict:
    """Every file of a run but its records, as bytes (the JSONs parsed)."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and "records" not in path.relative_to(out).parts:
            rel = str(path.relative_to(out))
            files[rel] = json.loads(path.read_text()) if path.suffix == ".json" else path.read_bytes()
    return files


def _records(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) - 1 for p in (out / "records").glob("*.jsonl"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_checkpoint, images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = subprocess.run(_predict(tiny_checkpoint, images, out), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sigkill_then_rerun_skips_the_done_images_and_equals_an_uninterrupted_run(tiny_checkpoint, images,
                                                                                    uninterrupted, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_predict(tiny_checkpoint, images, out), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not ((out / "records").is_dir() and _records(out) >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no record appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = _records(out)
    assert 3 <= done < 24, "the run was not interrupted before its end"
    assert not (out / "srm_order" / "panoptic.json").exists()

    rerun = subprocess.run(_predict(tiny_checkpoint, images, out), cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    skipped = int(rerun.stderr.split(" of 24 images already done")[0].split()[-1])
    assert done <= skipped <= done + 1  # + the image whose record the kill cut short, if its line was whole
    assert _outputs(out) == _outputs(uninterrupted)
    assert _records(out) == 24

    # A third run has nothing to do.
    again = subprocess.run(_predict(tiny_checkpoint, images, out), cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=TIMEOUT)
    assert "24 of 24 images already done" in again.stderr and _outputs(out) == _outputs(uninterrupted)


def test_a_damaged_output_or_other_settings_are_predicted_again(tiny_checkpoint, images, tmp_path):
    from oanet import Predictor
    from oanet.inference.predict import predict

    out = tmp_path / "out"
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", order="srm")
    first = predict(predictor, [images], out, progress=False)
    assert first["resumed"] == 0
    reference = _outputs(out)
    png = out / "panoptic" / "im03.png"
    png.write_bytes(png.read_bytes()[:-10])  # cut short: its record no longer matches
    (out / "overlays" / "im07.jpg").unlink()
    assert predict(predictor, [images], out, progress=False)["resumed"] == 22
    assert _outputs(out) == reference
    assert predict(predictor, [images], out, progress=False, resume=False)["resumed"] == 0  # --no-resume
    assert _outputs(out) == reference
    # Another threshold is another run: nothing is reused, and the files are that run's.
    other = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", order="srm", score_thresh=0.3)
    assert predict(other, [images], out, progress=False)["resumed"] == 0
    assert predict(other, [images], out, progress=False)["resumed"] == 24


def test_records_of_one_process_are_resumed_by_two(tiny_checkpoint, images, uninterrupted, tmp_path):
    from oanet import Predictor
    from oanet.inference.predict import predict

    out = tmp_path / "sharded"
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", order="both")
    calls = {"n": 0}
    original = predictor.predict_arrays

    def failing(*args, **kwargs):  # a process that dies after 9 images
        calls["n"] += 1
        if calls["n"] > 9:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    predictor.predict_arrays = failing
    with pytest.raises(KeyboardInterrupt):
        predict(predictor, [images], out, progress=False)
    assert _records(out) == 9
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(torchrun + _predict(tiny_checkpoint, images, out)[1:], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "9 of 24 images already done" in proc.stderr
    assert _outputs(out) == _outputs(uninterrupted)
    # Both ranks wrote their share: 9 + 15 records in three files.
    assert _records(out) == 24 and len(list((out / "records").glob("*.jsonl"))) == 3


def _synthetic_checkpoint(path: Path) -> Path:
    """A random-init tiny OANet with the synthetic benchmark's label space, as oanet train saves it."""
    import dataclasses

    import torch
    from conftest import write_tiny_checkpoint

    from oanet.data.labels import LabelSpace, parse_categories
    from oanet.data.synthetic.classes import categories
    from oanet.model.checkpoint import atomic_save, final_model_state, load_model_from_checkpoint
    from oanet.model.oanet import build_model

    _, cfg, _ = load_model_from_checkpoint(write_tiny_checkpoint(path), device="cpu")
    model_cfg = dataclasses.replace(cfg.model, num_thing_classes=8, num_stuff_classes=5)
    torch.manual_seed(0)
    space = LabelSpace(parse_categories(categories(), "synthetic"))
    atomic_save(final_model_state(build_model(model_cfg), dataclasses.replace(cfg, model=model_cfg), space, 0), path)
    return path


def test_evaluate_resumes_to_the_files_of_an_uninterrupted_run(tmp_path):
    from oanet import Predictor
    from oanet.data.synthetic import generate_dataset
    from oanet.experiments.benchmark import benchmark_split
    from oanet.inference.evaluate import evaluate

    generate_dataset(tmp_path / "bench", train=1, val=6, size=64, seed=3, workers=1, progress=False)
    split = benchmark_split(tmp_path / "bench", "val")
    checkpoint = _synthetic_checkpoint(tmp_path / "model_final.pth")
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", order="both", score_thresh=0.0)
    full = evaluate(predictor, split, tmp_path / "full", workers=0, progress=False)

    calls = {"n": 0}
    original = predictor.predict_arrays

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    predictor.predict_arrays = failing
    with pytest.raises(KeyboardInterrupt):
        evaluate(predictor, split, tmp_path / "resumed", workers=0, progress=False)
    predictor.predict_arrays = original
    resumed = evaluate(predictor, split, tmp_path / "resumed", workers=0, progress=False)
    assert _records(tmp_path / "resumed") == 6
    assert resumed.results == full.results and resumed.differences == full.differences
    assert resumed.order_measures == full.order_measures
    assert _outputs(tmp_path / "resumed") == _outputs(tmp_path / "full")
