"""The spatial ranking module as a plug-in for any detector: :class:`SpatialRanker` ranks overlapping
instance masks (paper §3.2, Eq. 3); ``oanet srm train`` trains one from annotations alone (docs/srm.md)."""

from oanet.srm.ranker import SpatialRanker

__all__ = ("SpatialRanker",)
