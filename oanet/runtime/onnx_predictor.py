"""``OnnxPredictor``: an exported OANet on onnxruntime, with the numpy fusion. No torch here.

::

    from oanet.runtime import OnnxPredictor
    result = OnnxPredictor("model.onnx")("street.jpg")  # a PanopticResult, as oanet.Predictor gives

The ``.onnx`` file written by ``oanet export`` is all it needs: the label space, the fusion settings
and the preprocessing come from its metadata (:mod:`oanet.runtime.metadata`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from oanet.config import check_score_thresh
from oanet.inference.base import BasePredictor, Fused
from oanet.orders import check_order
from oanet.data.images import to_float_chw
from oanet.errors import ConfigError
from oanet.fusion_grid import FUSION_PIXELS, grid_budget, network_size
from oanet.runtime.grid_fusion import fuse_grid
from oanet.runtime.metadata import INPUTS, OUTPUTS, DeployInfo, read_metadata, require


def load_session(path: Path, providers: Optional[Sequence[Any]], threads: Optional[int]):
    """An onnxruntime InferenceSession; one-line errors for a missing runtime, file or bad model."""
    ort = require("onnxruntime", "the ONNX runtime (OnnxPredictor, --onnx)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"{path}: onnxruntime cannot load this model ({type(exc).__name__}: {first})") from None


class OnnxPredictor(BasePredictor):
    """Image in, :class:`~oanet.result.PanopticResult` out, on onnxruntime (see :class:`BasePredictor`).

    ``OnnxPredictor(path, order="srm", score_thresh=None, providers=None)``: ``path`` is a file of
    ``oanet export``; ``order`` and ``score_thresh`` mean what they mean for :class:`oanet.Predictor`
    (the threshold is a graph input, so any value works without a new export); ``providers`` are
    onnxruntime execution providers (default ``["CPUExecutionProvider"]``); ``threads`` caps
    onnxruntime's intra-op threads (default: its own choice, one per physical core); ``fusion_pixels``
    is the grid fusion's budget, as for :class:`oanet.Predictor` (:mod:`oanet.fusion_grid`).
    """

    def __init__(self, path: str | Path, order: str = "srm", score_thresh: Optional[float] = None,
                 providers: Optional[Sequence[Any]] = None, *, threads: Optional[int] = None,
                 fusion_pixels: Optional[int] = FUSION_PIXELS) -> None:
        check_order(order), check_score_thresh(score_thresh)  # before the (slow) session load
        self.path = Path(path)
        self.session = load_session(self.path, providers, threads)
        info = read_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != (list(INPUTS), list(OUTPUTS)):
            raise ConfigError(f"{self.path}: graph inputs/outputs {names} are not those of this oanet version")
        self.info: DeployInfo = info
        self.cfg = info.config  # as oanet.Predictor.cfg: the config of the exported checkpoint
        super().__init__(info.label_space, info.fusion, info.stuff_classes, min_size=info.min_size,
                         max_size=info.max_size, order=order, score_thresh=score_thresh, fusion_pixels=fusion_pixels)

    def run(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs (docs/deploy.md) for one ``HxWx3`` RGB array, by output name."""
        feed = {"image": to_float_chw(rgb), "score_thresh": np.array(self.score_thresh, dtype=np.float32)}
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), feed)))

    def fuse_outputs(self, outputs: dict[str, np.ndarray], orders: Sequence[str]) -> Fused:
        """Fuse the selected detections in each order, on the grid of :mod:`oanet.fusion_grid` (the
        masks are pasted inside their boxes at the grid's pixels), as :class:`oanet.Predictor` does."""
        self._check_class_indices(outputs)
        keep = np.flatnonzero(outputs["selected"])
        network = network_size(*outputs["sem_seg_labels"].shape, self.min_size, self.max_size)
        return fuse_grid(outputs["boxes"][keep], outputs["mask_probs"][keep], outputs["labels"][keep],
                         outputs["scores"][keep], outputs["ranking_scores"][keep], outputs["sem_seg_labels"],
                         self.label_space, self.stuff_classes, self.fusion, orders,
                         grid_budget(self.fusion_pixels, network))

    def _check_class_indices(self, outputs: dict[str, np.ndarray]) -> None:
        """A graph that predicts classes its metadata does not name (a hand-edited file): one line."""
        labels, sem = outputs["labels"], outputs["sem_seg_labels"]
        channels = self.label_space.num_channels(self.stuff_classes)
        if (labels.size and int(labels.max()) >= self.label_space.num_things) or (sem.size and int(sem.max()) >= channels):
            raise ConfigError(f"{self.path}: the graph predicts class indices beyond the {self.label_space.num_things} "
                              f"thing / {channels} stuff-branch classes its metadata declares; export it again")

    def _fuse_batch(self, rgbs: Sequence[np.ndarray], orders: Sequence[str],
                    image_ids: Sequence[Any]) -> list[Fused]:
        # One image per run: the graph takes one image of any size (no padding to a common size).
        return [self.fuse_outputs(self.run(rgb), orders) for rgb in rgbs]

    def __repr__(self) -> str:
        return (f"OnnxPredictor({str(self.path)!r}, order={self.order!r}, score_thresh={self.score_thresh}, "
                f"providers={self.session.get_providers()})")
