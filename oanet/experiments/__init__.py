"""Experiments on the synthetic occlusion benchmark: ``oanet demo`` (:func:`run_demo`), ``oanet ablate``
(:func:`run_ablation`, the paper's tables 1-5) and the oracle order (:class:`OraclePredictor`, the
detections pasted in the true depth order). They train and evaluate, so they need torch.
"""

from oanet.experiments.ablate import run_ablation
from oanet.experiments.demo import run_demo
from oanet.experiments.oracle import DepthTruth, OraclePredictor
from oanet.experiments.tables import oracle_share

__all__ = ["run_demo", "run_ablation", "OraclePredictor", "DepthTruth", "oracle_share"]
