"""Merge any detector's instances with a semantic prediction into a panoptic segmentation, by
detection score (panopticapi's rules) or by the SRM's ranking (``oanet merge``, docs/srm.md)."""

from oanet.merge.merge import Instances, MergeSettings, merge_panoptic

__all__ = ("merge_panoptic", "Instances", "MergeSettings")
