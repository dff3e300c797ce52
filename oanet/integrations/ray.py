"""Batch inference on Ray Data: ``ds.map_batches(RayPredictor, ...)`` loads the model once per actor.

::

    import ray
    from oanet.integrations.ray import RayPredictor

    ds = ray.data.from_items([{"image": path, "image_id": i} for i, path in enumerate(paths)])
    out = ds.map_batches(RayPredictor, fn_constructor_kwargs={"checkpoint": "model_final.pth"},
                         batch_size=8, concurrency=2)          # num_gpus=1 for one GPU per actor
    out.write_parquet("s3://bucket/panoptic/")                 # image_id, panoptic_png, segments_info

A batch is ``{"image": [...], "image_id": [...]}``: images are paths, encoded files (bytes, as
``ray.data.read_binary_files`` gives them) or ``HxWx3`` arrays (``ray.data.read_images``); ``image_id``
is optional (default: the position in the batch). The output batch has, per image, ``image_id``,
``panoptic_png`` (the COCO panoptic PNG's bytes: id = R + 256 G + 256^2 B) and ``segments_info`` (a
JSON string: the COCO annotation's list, as in ``oanet predict``'s panoptic.json, each segment also with
its ``score`` and ``ranking_score``).

The model is a checkpoint of ``oanet train`` (``checkpoint=``, PyTorch) or a file of ``oanet export``
(``onnx=``, onnxruntime, no PyTorch). The device comes from Ray: an actor given GPUs
(``num_gpus=...``; ``ray.get_gpu_ids()``) runs on its GPU, others on the CPU. Importing this module
needs no Ray; making a :class:`RayPredictor` without it is a one-line ``ConfigError`` naming the
``ray`` extra. :class:`BatchPredictor` is the same batch function without Ray (any engine's worker).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from oanet.errors import ConfigError, DataError
from oanet.fusion_grid import FUSION_PIXELS

INSTALL = "Ray is not installed: pip install oanet[ray]"


def require_ray():
    """``import ray``, or the one-line ConfigError naming the extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL) from None
    return ray


def _rgb(image: Any, where: str) -> np.ndarray:
    """A batch element as ``HxWx3`` RGB: a path, an encoded file's bytes, or an array."""
    from PIL import Image

    from oanet.data.images import as_rgb, pil_to_rgb

    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(image))) as picture:
                return pil_to_rgb(picture)
        except Exception as exc:  # PIL raises several types for a file that is not an image
            raise DataError(f"{where}: not a readable image ({type(exc).__name__}: {exc})") from None
    if isinstance(image, np.str_):
        image = str(image)
    return as_rgb(image)


class BatchPredictor:
    """``batch -> batch`` for any engine's workers (see the module docstring), without Ray.

    ``BatchPredictor(checkpoint=None, onnx=None, *, order="srm", score_thresh=None, device="cpu",
    precision="fp32", fusion_pixels=409600, threads=None)``: exactly one of ``checkpoint`` and ``onnx``;
    ``order`` is ``"srm"`` or ``"score"``; the rest as for :class:`oanet.Predictor` /
    :class:`oanet.runtime.OnnxPredictor` (``threads``: onnxruntime's). Pickled, it keeps its arguments
    and loads the model again where it is unpickled.
    """

    def __init__(self, checkpoint: Optional[str | Path] = None, onnx: Optional[str | Path] = None, *,
                 order: str = "srm", score_thresh: Optional[float] = None, device: Optional[str] = None,
                 precision: str = "fp32", fusion_pixels: Optional[int] = FUSION_PIXELS,
                 threads: Optional[int] = None) -> None:
        if (checkpoint is None) == (onnx is None):
            raise ConfigError("give exactly one of checkpoint= (oanet train) and onnx= (oanet export)")
        if order not in ("srm", "score"):
            raise ConfigError(f"order must be 'srm' or 'score' (one result per image), got {order!r}")
        self._arguments = dict(checkpoint=checkpoint, onnx=onnx, order=order, score_thresh=score_thresh, device=device,
                               precision=precision, fusion_pixels=fusion_pixels, threads=threads)
        self.device = device or "cpu"
        if checkpoint is not None:
            from oanet.inference.torch_predictor import Predictor

            self.predictor = Predictor.from_checkpoint(checkpoint, device=self.device, order=order,
                                                       score_thresh=score_thresh, precision=precision,
                                                       fusion_pixels=fusion_pixels)
        else:
            from oanet.runtime import OnnxPredictor

            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device.startswith("cuda") else None
            self.predictor = OnnxPredictor(onnx, order=order, score_thresh=score_thresh, providers=providers,
                                           threads=threads, fusion_pixels=fusion_pixels)

    def __getstate__(self) -> dict:
        return dict(self._arguments)

    def __setstate__(self, arguments: dict) -> None:
        BatchPredictor.__init__(self, **arguments)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from oanet.data.png_io import encode_id_png

        if "image" not in batch:
            raise DataError(f"a batch needs an 'image' column; it has {sorted(batch)}")
        images = list(batch["image"])
        ids = list(batch["image_id"]) if "image_id" in batch else list(range(len(images)))
        names = [f"image_id {image_id}" for image_id in ids]
        rgbs = [_rgb(image, name) for image, name in zip(images, names)]
        order = self.predictor.order
        results = [r[order] for r in self.predictor.predict_arrays(rgbs, [(i, None) for i in ids], names)]
        infos = []
        for result in results:
            rows = result.to_coco(file_name="image.png")["segments_info"]
            for row, segment in zip(rows, result.segments):
                row.update(score=segment["score"], ranking_score=segment["ranking_score"])
            infos.append(json.dumps(rows))
        return {
            "image_id": np.asarray(ids),
            "panoptic_png": np.array([encode_id_png(r.panoptic) for r in results], dtype=object),
            "segments_info": np.array(infos, dtype=object),
        }


class RayPredictor(BatchPredictor):
    """:class:`BatchPredictor` for ``ray.data.Dataset.map_batches``: the device is the actor's GPU when
    Ray gave it one (``ray.get_gpu_ids()``), else the CPU. Same arguments; ``device`` overrides Ray."""

    def __init__(self, checkpoint: Optional[str | Path] = None, onnx: Optional[str | Path] = None,
                 **kwargs: Any) -> None:
        ray = require_ray()
        if kwargs.get("device") is None:
            gpus = ray.get_gpu_ids() if ray.is_initialized() else []
            kwargs["device"] = "cuda" if gpus else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPUs
        super().__init__(checkpoint, onnx, **kwargs)

    def __setstate__(self, arguments: dict) -> None:
        RayPredictor.__init__(self, **arguments)


__all__ = ["RayPredictor", "BatchPredictor", "require_ray", "INSTALL"]
