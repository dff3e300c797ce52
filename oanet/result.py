"""``PanopticResult``: one image's panoptic segmentation as plain numpy and dicts. No torch here.

Both predictors (:class:`oanet.Predictor` on PyTorch, :class:`oanet.runtime.OnnxPredictor` on
onnxruntime) return it, so code that consumes results does not care which one made them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from oanet.data.coco_panoptic import segment_boxes, segment_index_map, xyxy_to_coco

def category_table(label_space: Any) -> dict[int, dict]:
    """``{category id: {"id", "name", "isthing", "color", "supercategory"}}`` of a LabelSpace."""
    return {c.id: c.to_dict() for c in label_space.categories}


@dataclass(eq=False)
class PanopticResult:
    """One image's panoptic segmentation, at the input image's size.

    ``panoptic``: ``HxW`` int32 segment ids, 0 = void. ``segments``: one dict per segment with ``id``,
    ``category_id``, ``category_name``, ``isthing``, ``area``, ``bbox`` (COCO ``[x, y, w, h]``),
    ``score`` (detection score; None for stuff) and ``ranking_score`` (the SRM's Eq. 3 score; None for
    stuff). ``order`` is ``"srm"`` or ``"score"``: how overlapping instances were pasted.
    """

    panoptic: np.ndarray
    segments: list[dict]
    order: str
    categories: Mapping[int, dict] = field(repr=False, default_factory=dict)
    image_id: Any = None
    file_name: Optional[str] = None

    @property
    def height(self) -> int:
        return int(self.panoptic.shape[0])

    @property
    def width(self) -> int:
        return int(self.panoptic.shape[1])

    def segment(self, segment_id: int) -> dict:
        for seg in self.segments:
            if seg["id"] == segment_id:
                return seg
        raise KeyError(f"no segment with id {segment_id}")

    def to_coco(self, file_name: Optional[str] = None, image_id: Any = None) -> dict:
        """The image's COCO panoptic annotation: ``{"image_id", "file_name", "segments_info"}``.

        ``file_name`` (default: the result's) is the image's or the PNG's name; the annotation names
        the PNG (same stem, ``.png``), as COCO's panoptic JSONs do.
        """
        name = file_name if file_name is not None else self.file_name
        if name is None:
            raise ValueError("to_coco needs a file_name (the result was made from an image without one)")
        return {
            "image_id": image_id if image_id is not None else self.image_id,
            "file_name": Path(name).with_suffix(".png").name,
            "segments_info": [
                {"id": s["id"], "category_id": s["category_id"], "area": s["area"], "bbox": list(s["bbox"]),
                 "iscrowd": 0}
                for s in self.segments
            ],
        }

    def save(self, png_path: str | Path) -> Path:
        """Write the id map as a COCO panoptic PNG (id = R + 256 G + 256^2 B), atomically."""
        from oanet.data.png_io import write_id_png

        write_id_png(png_path, self.panoptic)
        return Path(png_path)

    def overlay(self, image: Any, show_scores: bool = True, alpha: float = 0.55):
        """The image with every segment coloured, outlined and named (a ``PIL.Image``).

        ``image`` is the input the result was predicted from, in any form the predictor takes.
        """
        from oanet import viz
        from oanet.data.images import as_rgb, to_uint8

        rgb = to_uint8(as_rgb(image))
        return viz.draw_panoptic(rgb, self.panoptic, self.segments, self.categories, alpha=alpha,
                                 show_scores=show_scores)

    def __repr__(self) -> str:
        things = sum(1 for s in self.segments if s["isthing"])
        return (f"PanopticResult({self.width}x{self.height}, order={self.order!r}, {things} things, "
                f"{len(self.segments) - things} stuff, image_id={self.image_id!r})")


def thing_rows(kept_order: Any, labels: Any, det_scores: Any, ranking_scores: Any, areas: Any) -> list[tuple]:
    """``[(label, detection score, ranking score or None, area)]`` of the kept instances in pasting
    order, from torch tensors or numpy arrays alike (the two fusions), one transfer per column
    instead of a host sync per instance."""
    ranks = ranking_scores[kept_order].tolist() if ranking_scores is not None else [None] * len(kept_order)
    return list(zip(labels[kept_order].tolist(), det_scores[kept_order].tolist(), ranks, areas.tolist()))


def fused_segments(things: Sequence[tuple], stuff: Sequence[tuple], thing_ids: Sequence[int],
                   stuff_ids: Sequence[int]) -> list[dict]:
    """The segments a fusion (PyTorch or numpy) returns, from plain Python rows: ``things`` as
    ``(thing index, detection score, ranking score or None, area)`` in pasting order get ids 1..K,
    then ``stuff`` as ``(stuff index, area)`` get K+1...; one definition for both fusions."""
    segments = [
        {"id": k + 1, "category_id": int(thing_ids[label]), "isthing": True, "score": score, "ranking_score": rank,
         "area": int(area)}
        for k, (label, score, rank, area) in enumerate(things)
    ]
    first = len(segments) + 1
    segments += [
        {"id": first + j, "category_id": int(stuff_ids[index]), "isthing": False, "score": None,
         "ranking_score": None, "area": int(area)}
        for j, (index, area) in enumerate(stuff)
    ]
    return segments


def build_result(
    ids: np.ndarray,
    segments: Sequence[Mapping],
    categories: Mapping[int, Mapping],
    order: str,
    image_id: Any = None,
    file_name: Optional[str] = None,
) -> PanopticResult:
    """A PanopticResult from a fusion's id map and segments (``id``, ``category_id``, ``isthing``,
    ``score``, ``ranking_score``). Areas and boxes are measured on the map, so they are exact whoever
    fused, unless every segment brings its ``bbox`` (and ``area``): the grid fusion
    (:mod:`oanet.fusion_grid`) sums them from its cells, the same numbers without a pass over a
    photo's 12 million pixels. A segment without pixels is dropped."""
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    segment_ids = np.array([int(s["id"]) for s in segments], dtype=np.int64)
    k = len(segment_ids)
    if k and all("bbox" in s for s in segments):
        areas = np.array([int(s["area"]) for s in segments], dtype=np.int64)
        boxes = np.array([s["bbox"] for s in segments], dtype=np.int64).reshape(k, 4)
    else:
        if k and np.array_equal(segment_ids, np.arange(1, k + 1)) and (ids.size == 0 or int(ids.max()) <= k):
            index = ids.astype(np.int64) - 1  # fusion numbers segments 1..K: no lookup needed
            areas = np.bincount(index.ravel() + 1, minlength=k + 1)[1:]
        else:
            index, areas = segment_index_map(ids, segment_ids, "panoptic result")
        boxes = xyxy_to_coco(segment_boxes(index, k))
    out = []
    for j, seg in enumerate(segments):
        if areas[j] == 0:
            continue
        category_id = int(seg["category_id"])
        thing = bool(seg["isthing"])
        out.append({
            "id": int(seg["id"]),
            "category_id": category_id,
            "category_name": str(categories.get(category_id, {}).get("name", category_id)),
            "isthing": thing,
            "area": int(areas[j]),
            "bbox": [int(v) for v in boxes[j]],
            "score": float(seg["score"]) if thing and seg.get("score") is not None else None,
            "ranking_score": float(seg["ranking_score"]) if thing and seg.get("ranking_score") is not None else None,
        })
    return PanopticResult(ids, out, order, categories, image_id, file_name)
