"""Merge any detector's instances with a semantic prediction into a panoptic segmentation, by
detection score (panopticapi's rules) or by the SRM's ranking (``oanet merge``, docs/srm.md)."""

from typing import Any

from oanet.merge.settings import MergeSettings

__all__ = ("merge_panoptic", "Instances", "MergeSettings")


def __getattr__(name: str) -> Any:
    # merge_panoptic runs OANet's fusion (PyTorch); the score-order command path never imports it.
    if name in ("merge_panoptic", "Instances"):
        from oanet.merge import merge

        return getattr(merge, name)
    raise AttributeError(f"module 'oanet.merge' has no attribute {name!r}")
