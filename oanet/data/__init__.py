"""Datasets in COCO panoptic format: reading and writing the JSON and PNGs, the label space, the
indexed split that training reads, targets, and the synthetic occlusion benchmark (``oanet synth``).

Importing this package needs no torch (``oanet pq`` and the ONNX runtime read labels through it);
:class:`PanopticDataset` and :func:`collate`, which do, are imported on first use.
"""

from oanet.data.coco_panoptic import PanopticSplit, PanopticWriter
from oanet.data.labels import Category, LabelSpace, parse_categories
from oanet.data.png_io import id2rgb, read_id_png, rgb2id, write_id_png

__all__ = ["PanopticSplit", "PanopticWriter", "LabelSpace", "Category", "parse_categories", "read_id_png",
           "write_id_png", "rgb2id", "id2rgb", "PanopticDataset", "collate"]

_LAZY = {"PanopticDataset": "oanet.data.dataset", "collate": "oanet.data.dataset"}


def __getattr__(name: str):
    # Lazy, so that importing this package stays light (see the docstring).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
