"""The thresholds of a merge: panopticapi's, with its defaults (no PyTorch here: ``oanet merge --order
score`` runs without it)."""

from __future__ import annotations

from dataclasses import dataclass

from oanet.errors import ConfigError


@dataclass
class MergeSettings:
    """panopticapi's thresholds (``confidence_thr``, ``overlap_thr``, ``stuff_area_limit``), same defaults."""

    score_thresh: float = 0.5
    overlap_thresh: float = 0.5
    stuff_area: float = 64 * 64

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_thresh <= 1.0:
            raise ConfigError(f"--score-thresh must be in [0, 1], got {self.score_thresh}")
        if not 0.0 <= self.overlap_thresh < 1.0:
            raise ConfigError(f"--overlap-thresh must be in [0, 1), got {self.overlap_thresh}")
        if self.stuff_area < 0:
            raise ConfigError(f"--stuff-area must be >= 0, got {self.stuff_area}")
