"""What the two predictors share: inputs, fusion orders, batching and results. No torch here.

:class:`oanet.Predictor` (PyTorch) and :class:`oanet.runtime.OnnxPredictor` (onnxruntime) differ only
in how they turn a batch of RGB arrays into fused id maps (:meth:`BasePredictor._fuse_batch`);
everything a user touches (the call, ``predict_many``, the orders, the threshold, the results) is
defined once, here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from oanet.config import FusionConfig, check_score_thresh
from oanet.data.images import as_rgb, describe
from oanet.errors import ConfigError, DataError
from oanet.fusion_grid import FUSION_PIXELS
from oanet.orders import check_order, orders_of
from oanet.result import PanopticResult, build_result, category_table

Output = Union[PanopticResult, dict]  # one result, or {"score": ..., "srm": ...} for order="both"
Fused = dict  # {order: (ids HxW int32 numpy, segments)}


def check_resizable(height: int, width: int, min_size: int, max_size: int, name: str) -> None:
    """DataError naming the input when the model's resize would shrink a side to 0 pixels (an image
    hundreds of times wider than high), instead of an interpolation error deep inside the network."""
    short, long = min(height, width), max(height, width)
    scale = min(float(min_size) / short, float(max_size) / long)
    if int(short * scale) < 1:
        raise DataError(
            f"{name}: image is {width}x{height}; resized to the model's input (max side {max_size}) "
            "its short side would be 0 pixels"
        )


def input_name(image: Any) -> Optional[str]:
    """The file name of a path input (what its results are named after); None for in-memory inputs."""
    return Path(image).name if isinstance(image, (str, Path)) else None


class BasePredictor:
    """Image in, :class:`~oanet.result.PanopticResult` out.

    ``order`` is ``"srm"`` (paste overlapping instances by the SRM's ranking score, the paper),
    ``"score"`` (by detection score, the heuristic) or ``"both"`` (a dict of the two results, from one
    forward pass). ``score_thresh`` (default: the model's ``fusion.score_thresh``) is the detection
    score from which an instance is ranked by the SRM and pasted; it lives in this one place.
    ``fusion_pixels`` is the budget of the grid a larger image is fused on (:mod:`oanet.fusion_grid`;
    None: fuse at every pixel, in memory that grows with the image).
    """

    def __init__(self, label_space: Any, fusion: FusionConfig, stuff_classes: str, min_size: int, max_size: int,
                 order: str = "srm", score_thresh: Optional[float] = None,
                 fusion_pixels: Optional[int] = FUSION_PIXELS) -> None:
        self.label_space = label_space
        self.categories = category_table(label_space)
        self.stuff_classes = stuff_classes
        self.order = check_order(order)
        score_thresh = check_score_thresh(score_thresh)
        self.fusion = fusion if score_thresh is None else dataclasses.replace(fusion, score_thresh=score_thresh)
        self.min_size, self.max_size = int(min_size), int(max_size)
        if fusion_pixels is not None and int(fusion_pixels) < 1:
            raise ConfigError(f"fusion_pixels must be >= 1 or None, got {fusion_pixels}")
        self.fusion_pixels = None if fusion_pixels is None else int(fusion_pixels)

    @property
    def score_thresh(self) -> float:
        return self.fusion.score_thresh

    @property
    def orders(self) -> tuple[str, ...]:
        return orders_of(self.order)

    # -- the one method a backend implements ---------------------------------------------------
    def _fuse_batch(self, rgbs: Sequence[np.ndarray], orders: Sequence[str],
                    image_ids: Sequence[Any]) -> list[Fused]:
        """``HxWx3`` uint8 or float32 (0..1) RGB arrays -> per image ``{order: (ids, segments)}``;
        ``ids`` an ``HxW`` int32 numpy array at the input's size, ``segments`` fusion's dicts.
        ``image_ids`` (``None`` for a bare image) matter only to predictors that look the image up."""
        raise NotImplementedError

    # -- public API ------------------------------------------------------------------------------
    def __call__(self, image: Any) -> Output:
        """Predict one image: a path, a PIL image, an ``HxWx3`` uint8 RGB array or a ``3xHxW`` float
        tensor in 0..1 (see :func:`oanet.data.images.as_rgb`)."""
        return self._pack(self.predict_arrays([as_rgb(image)], [(None, input_name(image))], [describe(image)])[0])

    def predict_many(self, images: Iterable[Any], batch_size: int = 4) -> Iterator[Output]:
        """Predict an iterable of inputs ``batch_size`` at a time; yields results in input order."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        batch: list = []
        for image in images:
            batch.append(image)
            if len(batch) == batch_size:
                yield from self._predict_inputs(batch)
                batch = []
        if batch:
            yield from self._predict_inputs(batch)

    def predict_arrays(
        self,
        rgbs: Sequence[np.ndarray],
        names: Optional[Sequence[tuple[Any, Optional[str]]]] = None,
        where: Optional[Sequence[str]] = None,
        orders: Optional[Sequence[str]] = None,
    ) -> list[dict[str, PanopticResult]]:
        """Already loaded ``HxWx3`` RGB arrays -> per image ``{order: PanopticResult}``.

        ``names`` gives each image's ``(image_id, file_name)``; ``where`` names them in errors;
        ``orders`` defaults to this predictor's. The inference loop calls this.
        """
        names = list(names) if names is not None else [(None, None)] * len(rgbs)
        where = list(where) if where is not None else [f"image {i}" for i in range(len(rgbs))]
        for rgb, name in zip(rgbs, where):
            check_resizable(rgb.shape[0], rgb.shape[1], self.min_size, self.max_size, name)
        if not rgbs:
            return []
        fused = self._fuse_batch(rgbs, tuple(orders or self.orders), [image_id for image_id, _ in names])
        return [
            {order: build_result(ids, segments, self.categories, order, image_id, file_name)
             for order, (ids, segments) in per_image.items()}
            for per_image, (image_id, file_name) in zip(fused, names)
        ]

    def _predict_inputs(self, inputs: Sequence[Any]) -> Iterator[Output]:
        rgbs = [as_rgb(image) for image in inputs]
        names = [(None, input_name(image)) for image in inputs]
        for result in self.predict_arrays(rgbs, names, [describe(image) for image in inputs]):
            yield self._pack(result)

    def _pack(self, results: dict[str, PanopticResult]) -> Output:
        return results if self.order == "both" else results[self.order]


__all__ = ["BasePredictor", "check_resizable"]
