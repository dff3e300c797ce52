"""Shared test fixtures. Everything here runs on CPU with random init and fetches nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The 16 real COCO val2017 images live beside the checkout, never inside it (a user's clone has none).
COCO16_DIR = REPO_ROOT.parent / "shared" / "data" / "coco_panoptic_val16"


@pytest.fixture(scope="session")
def coco16() -> Path:
    """Root of the 16-image real COCO panoptic sample; skips where ../shared is absent."""
    if not (COCO16_DIR / "annotations" / "panoptic_val2017.json").is_file():
        pytest.skip(f"real COCO sample not found at {COCO16_DIR} (only present beside the dev checkout)")
    return COCO16_DIR


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
