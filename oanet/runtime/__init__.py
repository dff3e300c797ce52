"""Run an exported OANet without PyTorch: onnxruntime for the network, numpy for fusion.

::

    from oanet.runtime import OnnxPredictor
    predictor = OnnxPredictor("model.onnx", order="srm")   # a file of `oanet export`
    result = predictor("street.jpg")                       # oanet.PanopticResult

Nothing in this package imports torch (tests/test_onnx.py checks it in a fresh interpreter);
onnxruntime is imported when a predictor is made, and missing it is a one-line error naming the
``deploy`` extra (``pip install 'oanet[deploy]'``). docs/deploy.md describes the exported graph.
"""

from oanet.runtime.fusion import fuse, panoptic_fusion
from oanet.runtime.metadata import MissingExtraError
from oanet.runtime.onnx_predictor import OnnxPredictor

__all__ = ["OnnxPredictor", "fuse", "panoptic_fusion", "MissingExtraError"]
