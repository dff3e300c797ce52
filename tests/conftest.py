"""Shared test fixtures. Everything here runs on CPU with random init and fetches nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Test-only helpers shared with the benchmarks (perturbed predictions, the GT-order experiment) live there.
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
# The 16 real COCO val2017 images live beside the checkout, never inside it (a user's clone has none);
# OANET_COCO16_DIR points elsewhere (a second worktree, a CI cache).
COCO16_DIR = Path(os.environ.get("OANET_COCO16_DIR", REPO_ROOT.parent / "shared" / "data" / "coco_panoptic_val16"))


@pytest.fixture(scope="session")
def coco16() -> Path:
    """Root of the 16-image real COCO panoptic sample; skips where ../shared is absent."""
    if not (COCO16_DIR / "annotations" / "panoptic_val2017.json").is_file():
        pytest.skip(f"real COCO sample not found at {COCO16_DIR} (only present beside the dev checkout)")
    return COCO16_DIR


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped where no CUDA device is available (torch is imported only
    when such a test was collected)."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (run by benchmarks/gpu_check.sh)")
        for item in cuda_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests run tiny models: on a 2-core CI machine, intra-op threads only add contention (measured up
    to 40x slower when another process competes). torch is only touched when a test module imported
    it, so tests asserting that `oanet pq` / `oanet synth` never import torch stay meaningful."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TINY_CATEGORIES = [
    {"id": 1, "name": "disc", "isthing": 1},
    {"id": 2, "name": "square", "isthing": 1},
    {"id": 5, "name": "star", "isthing": 1},
    {"id": 20, "name": "grass", "isthing": 0},
    {"id": 21, "name": "sky", "isthing": 0},
]


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-init tiny OANet (3 things, 2 stuff) saved as ``oanet train`` saves model_final.pth.

    Its detection threshold is 0 so that random weights still detect, overlap and exercise the SRM."""
    import dataclasses

    import torch

    from oanet.config import BackboneConfig, Config, FusionConfig, ModelConfig, RoIHeadsConfig, RPNConfig, StuffHeadConfig
    from oanet.data.labels import LabelSpace, parse_categories
    from oanet.model import checkpoint as ckpt
    from oanet.model.oanet import build_model

    model_cfg = ModelConfig(
        num_thing_classes=3, num_stuff_classes=2, min_size=(64,), max_size=96,
        backbone=BackboneConfig(depth=18, fpn_channels=16, frozen_bn=False, trainable_layers=5),
        rpn=RPNConfig(pre_nms_top_n_test=50, post_nms_top_n_test=20),
        roi_heads=RoIHeadsConfig(box_representation_size=32, mask_head_channels=8, score_thresh=0.0,
                                 detections_per_img=10),
        stuff_head=StuffHeadConfig(channels=16),
        fusion=FusionConfig(score_thresh=0.0, stuff_area_limit=0),
    )
    cfg = dataclasses.replace(Config(model=model_cfg), device="cpu")
    torch.manual_seed(seed)
    model = build_model(model_cfg)
    label_space = LabelSpace(parse_categories(TINY_CATEGORIES, "tiny"))
    ckpt.atomic_save(ckpt.final_model_state(model, cfg, label_space, iteration=0), path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random-init checkpoint (see write_tiny_checkpoint), shared by the tests of one session."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model_final.pth")


@pytest.fixture(scope="session")
def test_images(tmp_path_factory) -> list[Path]:
    """Three small RGB images of different sizes with coloured shapes (deterministic)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(64, 80), (50, 70), (72, 48)]):
        rgb = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        rgb[h // 4: 3 * h // 4, w // 5: w // 2] = (200, 40, 40)
        rgb[h // 3: h - 5, w // 3: w - 6] = (30, 180, 60)
        path = folder / f"img{i}.png"
        Image.fromarray(rgb).save(path)
        paths.append(path)
    return paths
