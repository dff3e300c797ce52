"""OANet: an end-to-end network for panoptic segmentation (Liu et al., CVPR 2019).

::

    from oanet import Predictor
    result = Predictor.from_checkpoint("runs/r50/model_final.pth")("street.jpg")

Importing ``oanet`` is cheap: nothing here imports torch. ``Predictor`` (PyTorch) is imported on
first use; ``PanopticResult`` needs numpy only. The network lives in ``oanet.model``, training in
``oanet.train``, the predictors and the inference loop in ``oanet.inference``, the demo, the
ablations and the oracle order in ``oanet.experiments``, PQ in ``oanet.evaluation`` and datasets in
``oanet.data`` (both torch-free), and the PyTorch-free ONNX runtime in ``oanet.runtime``
(docs/design.md draws the tree).
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "PanopticResult", "__version__"]


def __getattr__(name: str):
    # Lazy: `import oanet` (and `oanet pq`, `oanet synth`, the ONNX runtime) must not pay for torch.
    if name == "Predictor":
        from oanet.inference.torch_predictor import Predictor

        return Predictor
    if name == "PanopticResult":
        from oanet.result import PanopticResult

        return PanopticResult
    raise AttributeError(f"module 'oanet' has no attribute {name!r}")
