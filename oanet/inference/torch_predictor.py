"""``oanet.Predictor``: a trained OANet as a function from an image to a panoptic segmentation.

::

    from oanet import Predictor
    predictor = Predictor.from_checkpoint("runs/r50/model_final.pth")
    result = predictor("street.jpg")          # PanopticResult: .panoptic, .segments, .save(), .overlay()

Inputs are RGB (a path, a PIL image, an ``HxWx3`` uint8 array or a ``3xHxW`` float tensor in 0..1),
unlike detectron2's DefaultPredictor, which takes BGR arrays. The model stays on its device; only the
``HxW`` id maps come back to the CPU. Memory does not grow with the input's size beyond the id map
itself: uint8 pixels are resized before they become floats, and fusion runs on a grid of the image's
pixels (:mod:`oanet.model.grid_fusion`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from oanet.inference.base import BasePredictor, Fused
from oanet.config import Config
from oanet.data.images import to_float_chw
from oanet.fusion_grid import FUSION_PIXELS, grid_budget
from oanet.model.precision import autocast, check_precision


class Predictor(BasePredictor):
    """Run an OANet on images and fuse its output into panoptic results (see :class:`BasePredictor`).

    ``Predictor(model, cfg, label_space)`` wraps a model in memory (put in eval mode; moved to
    ``device`` when given, else left where it is); :meth:`from_checkpoint` builds one from a file
    written by ``oanet train``. ``model``, ``cfg`` and ``label_space`` are public attributes.
    ``precision`` (``fp32``, ``amp_fp16``, ``bf16``; :mod:`oanet.model.precision`) is the autocast of
    the forward pass; fusion always runs on its float32 outputs. ``fusion_pixels``: the grid fusion's
    budget (:mod:`oanet.fusion_grid`; None: every pixel, the full-size fusion).
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, label_space: Any, *, device: Optional[str] = None,
                 order: str = "srm", score_thresh: Optional[float] = None, precision: str = "fp32",
                 fusion_pixels: Optional[int] = FUSION_PIXELS) -> None:
        super().__init__(label_space, cfg.model.fusion, cfg.model.stuff_head.classes,
                         min_size=cfg.model.min_size[-1], max_size=cfg.model.max_size,
                         order=order, score_thresh=score_thresh, fusion_pixels=fusion_pixels)
        if device is not None:
            from oanet.distributed import resolve_device

            model = model.to(resolve_device(device))
        self.model = model.eval()
        self.cfg = cfg
        # Called as observer(image_id, network output, {order: (ids, segments)}) for every image, e.g.
        # by oanet.inference.measured to measure the orders on the detections themselves.
        self.observer = None
        self.precision = check_precision(precision, self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: Optional[str] = None, order: str = "srm",
                        score_thresh: Optional[float] = None, precision: str = "fp32",
                        fusion_pixels: Optional[int] = FUSION_PIXELS) -> "Predictor":
        """A predictor for a checkpoint of ``oanet train`` (``model_final.pth`` or ``last.pth``).

        ``device``: ``cpu``, ``cuda``, ``cuda:1``... (default: the checkpoint config's ``device``,
        ``auto`` = CUDA when available).
        """
        from oanet.model.checkpoint import load_model_from_checkpoint

        model, cfg, label_space = load_model_from_checkpoint(path, device="cpu", needs_labels_to="name segments")
        return cls(model, cfg, label_space, device=device or cfg.device, order=order, score_thresh=score_thresh,
                   precision=precision, fusion_pixels=fusion_pixels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward_arrays(self, rgbs: Sequence[np.ndarray], full_size: bool = True) -> list[dict]:
        """The network's raw outputs (docs/design.md) for ``HxWx3`` RGB arrays, with this predictor's
        threshold, precision and device (call under ``torch.inference_mode()``); ``full_size``: see
        :meth:`oanet.model.oanet.OANet.forward`."""
        device = self.device
        images = [network_input(rgb).to(device, non_blocking=True) for rgb in rgbs]
        with autocast(self.precision, device.type):
            return self.model(images, score_thresh=self.score_thresh, full_size=full_size)

    def _fuse_batch(self, rgbs: Sequence[np.ndarray], orders: Sequence[str],
                    image_ids: Sequence[Any]) -> list[Fused]:
        from oanet.model.fusion import fuse
        from oanet.model.grid_fusion import fuse_grid

        if self.observer is None:
            with torch.inference_mode():
                fused = [fuse_grid(output, self.label_space, self.stuff_classes, self.fusion, orders,
                                   grid_budget(self.fusion_pixels, output["image_size"]))
                         for output in self.forward_arrays(rgbs, full_size=False)]
            return [{order: (ids.cpu().numpy(), segments) for order, (ids, segments) in per_image.items()}
                    for per_image in fused]
        # An observer reads the documented full-size output (masks at the image's size).
        with torch.inference_mode():
            outputs = self.forward_arrays(rgbs)
            fused = [fuse(output, self.label_space, self.stuff_classes, self.fusion, orders) for output in outputs]
            if self.observer is not None:
                for image_id, output, per_image in zip(image_ids, outputs, fused):
                    self.observer(image_id, output, per_image)
        return [{order: (ids.cpu().numpy(), segments) for order, (ids, segments) in per_image.items()}
                for per_image in fused]


def network_input(rgb: np.ndarray) -> torch.Tensor:
    """``HxWx3`` RGB as the model's ``3xHxW`` input: uint8 pixels as they are (a view; the model resizes
    them before they become floats), float pixels in 0..1 as float32."""
    if rgb.dtype == np.uint8:
        with warnings.catch_warnings():
            # A read-only array (a decoded PIL image) is fine: the model only reads its input.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(rgb).permute(2, 0, 1)
    return torch.from_numpy(to_float_chw(rgb))
