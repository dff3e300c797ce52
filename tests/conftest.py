"""Shared test fixtures. Everything here runs on CPU with random init and fetches nothing."""

from __future__ import annotations

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
