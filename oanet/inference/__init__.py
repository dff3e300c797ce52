"""Inference: the predictors and the one loop that ``oanet predict``, ``oanet evaluate`` and
``oanet demo`` run.

* :class:`Predictor` (PyTorch; ``oanet.Predictor``) and :class:`~oanet.runtime.OnnxPredictor` share
  :class:`BasePredictor` (inputs, orders, batching, results);
* :func:`run_inference` feeds every result to *sinks* (:mod:`oanet.inference.sinks`): COCO panoptic
  writers per order, overlays, order differences, PQ;
* :func:`evaluate` and :func:`predict` are that loop on a COCO panoptic split and on files.

Nothing here imports torch except :class:`Predictor`, which is imported on first use: the ONNX
runtime runs the same loop on a machine without torch.
"""

from oanet.inference.base import BasePredictor
from oanet.inference.evaluate import Evaluation, evaluate
from oanet.inference.loop import ImageFiles, ImageItem, Ranks, run_inference
from oanet.inference.predict import predict

__all__ = ["Predictor", "BasePredictor", "run_inference", "ImageFiles", "ImageItem", "Ranks", "evaluate",
           "Evaluation", "predict"]

_LAZY = {"Predictor": "oanet.inference.torch_predictor"}


def __getattr__(name: str):
    # Lazy, so that importing this package stays light (see the docstring).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
