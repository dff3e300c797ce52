"""Read and write COCO panoptic data (JSON + PNG). No torch here: ``oanet pq`` must start fast.

- ``PanopticSplit``: one split (panoptic JSON + PNG folder + image folder, optionally the COCO
  instances JSON of the same images), validated when loaded; per-image id maps are checked against
  their ``segments_info`` when read.
- ``PanopticWriter``: predictions -> PNGs + one JSON in COCO panoptic format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from oanet.data.instances import decode_instances, read_record
from oanet.data.labels import VOID, Category, LabelSpace, parse_categories
from oanet.data.panoptic_json import (  # noqa: F401  (re-exported: the records and readers of a split)
    ImageInfo,
    PanopticAnnotation,
    check_image_id,
    read_images,
    with_colors_from,
)
from oanet.data.png_io import OFFSET, read_id_png, write_id_png
from oanet.data.split_index import load_split_index
from oanet.errors import DataError
from oanet.fileio import write_json_atomic  # noqa: F401  (re-exported: PanopticWriter and callers use it)

# --------------------------------------------------------------------------------------------
# id maps


def segment_index_map(id_map: np.ndarray, segment_ids: np.ndarray, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Map each pixel's segment id to its position in ``segment_ids`` (-1 for void).

    Returns ``(index HxW int64, area per segment int64)``. An id in the map that ``segment_ids``
    does not declare raises DataError naming ``where``. One searchsorted over the image: no loop
    over segments.
    """
    id_map = np.asarray(id_map)
    segment_ids = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
    k = len(segment_ids)
    order = np.argsort(segment_ids, kind="stable")
    sorted_ids = segment_ids[order]
    if k:
        position = np.minimum(np.searchsorted(sorted_ids, id_map), k - 1)
        found = sorted_ids[position] == id_map
        index = np.where(found, order[position], -1)
    else:
        found = np.zeros(id_map.shape, dtype=bool)
        index = np.full(id_map.shape, -1, dtype=np.int64)
    undeclared = ~found & (id_map != VOID)
    if undeclared.any():
        ids = np.unique(id_map[undeclared])
        prefix = f"{where}: " if where else ""
        raise DataError(
            f"{prefix}segment id(s) {ids[:10].tolist()}{' ...' if ids.size > 10 else ''} in the PNG "
            "are not declared in segments_info"
        )
    areas = np.bincount(index.ravel() + 1, minlength=k + 1)[1:]
    return index, areas


def segment_boxes(index: np.ndarray, num_segments: int) -> np.ndarray:
    """Pixel extent of each segment of an index map as XYXY (x2, y2 exclusive), float64 (K, 4).

    A segment without pixels gets zeros. Computed from the horizontal runs of the map (a panoptic map
    is long runs of one segment): one comparison pass over the pixels, then work per run, not per pixel.
    """
    height, width = index.shape
    boxes = np.zeros((num_segments, 4), dtype=np.float64)
    if not index.size or not num_segments:
        return boxes
    start = np.ones((height, width), dtype=bool)
    start[:, 1:] = index[:, 1:] != index[:, :-1]
    ys, xs = np.nonzero(start)
    labels = index[ys, xs]
    same_row = np.append(ys[1:] == ys[:-1], False)
    ends = np.where(same_row, np.append(xs[1:], width), width)  # a run ends where the next one starts
    keep = labels >= 0
    ys, xs, ends, labels = ys[keep], xs[keep], ends[keep], labels[keep]
    if not len(labels):
        return boxes
    x1 = np.full(num_segments, width)
    y1 = np.full(num_segments, height)
    x2 = np.zeros(num_segments, dtype=np.int64)
    y2 = np.zeros(num_segments, dtype=np.int64)
    np.minimum.at(x1, labels, xs)
    np.minimum.at(y1, labels, ys)
    np.maximum.at(x2, labels, ends)
    np.maximum.at(y2, labels, ys + 1)
    present = np.zeros(num_segments, dtype=bool)
    present[labels] = True
    boxes[present] = np.stack([x1, y1, x2, y2], axis=1)[present]
    return boxes


def boxes_from_extents(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """XYXY boxes (exclusive max) from per-object row/column occupancy (N x H, N x W)."""
    present = rows.any(axis=1)
    y1 = rows.argmax(axis=1)
    y2 = rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float64)
    boxes[~present] = 0
    return boxes


def xyxy_to_coco(boxes: np.ndarray) -> np.ndarray:
    """XYXY (exclusive max) -> COCO [x, y, w, h]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


# --------------------------------------------------------------------------------------------
# a split


class PanopticSplit:
    """One COCO panoptic split: categories, images and per-image segments, validated at load time.

    ``images`` keeps the JSON's order. Every image must have exactly one panoptic annotation.
    The optional ``instances_json`` (COCO instances, overlapping masks) is paired by image id.
    ``categories_json`` (e.g. panopticapi's ``panoptic_coco_categories.json``) only supplies
    colours for categories the panoptic JSON gives none.

    The annotations are held as flat columns (:class:`oanet.data.split_index.SplitIndex`), which
    DataLoader workers forked from this process share instead of copying. With ``cache_dir`` the
    columns are written there once and memory-mapped: another process opening the same JSONs (the
    other ranks, a resumed run) maps that file instead of parsing them.
    """

    def __init__(
        self,
        panoptic_json: str | Path,
        panoptic_dir: str | Path,
        image_dir: str | Path,
        instances_json: Optional[str | Path] = None,
        categories_json: Optional[str | Path] = None,
        cache_dir: Optional[str | Path] = None,
    ):
        self.panoptic_json = Path(panoptic_json)
        self.panoptic_dir = Path(panoptic_dir)
        self.image_dir = Path(image_dir)
        self.instances_json = Path(instances_json) if instances_json else None
        where = str(self.panoptic_json)

        self._index = load_split_index(self.panoptic_json, self.instances_json, Path(cache_dir) if cache_dir else None)
        raw_categories = self._index.raw_categories
        if categories_json is not None:
            raw_categories = with_colors_from(raw_categories, categories_json)
        self.categories: list[Category] = parse_categories(raw_categories, where)
        self.images = self._index.images  # a Sequence[ImageInfo], made on access
        if not self.panoptic_dir.is_dir():
            raise FileNotFoundError(f"{self.panoptic_dir}: panoptic PNG folder not found")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.image_dir}: image folder not found")

    @classmethod
    def from_config(cls, cfg: Any, where: str = "split config", cache_dir: Optional[str | Path] = None) -> "PanopticSplit":
        """From a ``SplitConfig`` (anything with its attributes); ``where`` names it in errors."""
        for name in ("panoptic_json", "panoptic_dir", "image_dir"):
            if not getattr(cfg, name):
                raise DataError(f"{where}.{name} is not set (COCO panoptic layout: JSON, PNG folder, images)")
        return cls(
            cfg.panoptic_json,
            cfg.panoptic_dir,
            cfg.image_dir,
            instances_json=getattr(cfg, "instances_json", None),
            categories_json=getattr(cfg, "categories_json", None),
            cache_dir=cache_dir,
        )

    def __len__(self) -> int:
        return len(self._index)

    @property
    def has_instances(self) -> bool:
        return self._index.has_instances

    @property
    def cache_file(self) -> Optional[Path]:
        """The memory-mapped annotation cache, or None when the annotations are in this process's memory."""
        return self._index.path

    def label_space(self) -> LabelSpace:
        return LabelSpace(self.categories)

    def _position(self, image_id: Any) -> int:
        i = self._index.position(image_id)
        if i < 0:
            raise DataError(f"{self.panoptic_json}: no image with id {image_id!r}")
        return i

    def image_info(self, image_id: Any) -> ImageInfo:
        return self._index.image(self._position(image_id))

    def annotation(self, image_id: Any) -> PanopticAnnotation:
        return self._index.annotation(self._position(image_id))

    def image_path(self, image_id: Any) -> Path:
        return self.image_dir / self.image_info(image_id).file_name

    def png_path(self, image_id: Any) -> Path:
        i = self._position(image_id)
        name = self._index.png_name(i) or Path(self._index.image(i).file_name).with_suffix(".png").name
        return self.panoptic_dir / name

    def aspect_ratios(self) -> list[float]:
        """width / height of every image, in ``images`` order, from the JSON alone."""
        return self._index.aspect_ratios()

    def used_category_ids(self) -> np.ndarray:
        """The distinct category ids of the split's segments (int64, sorted)."""
        return np.unique(self._index.category_ids()).astype(np.int64)

    # per image --------------------------------------------------------------------------------
    def read_id_map(self, image_id: Any) -> np.ndarray:
        """The image's segment ids (uint32 HxW), checked for size only."""
        path = self.png_path(image_id)
        ids = read_id_png(path)
        info = self.image_info(image_id)
        if ids.shape != (info.height, info.width):
            raise DataError(
                f"{path}: PNG is {ids.shape[1]}x{ids.shape[0]} but the JSON says "
                f"{info.width}x{info.height} for image {image_id}"
            )
        return ids

    def load_index_map(self, image_id: Any) -> np.ndarray:
        """Per-pixel position in the image's segments (-1 void), with the consistency checks.

        Raises DataError naming the PNG for an undeclared id, a declared segment with no pixel
        or a size mismatch.
        """
        path = self.png_path(image_id)
        ann = self.annotation(image_id)
        index, areas = segment_index_map(self.read_id_map(image_id), ann.segment_ids, str(path))
        absent = ann.segment_ids[areas == 0]
        if absent.size:
            raise DataError(f"{path}: segment id(s) {absent[:10].tolist()} declared in segments_info are absent from the PNG")
        return index

    # instances --------------------------------------------------------------------------------
    def _instance_rows(self, image_id: Any) -> list:
        if not self.has_instances:
            raise DataError(f"{self.panoptic_json}: this split has no instances_json")
        record = self._index.instance_record(self._position(image_id))
        try:
            return read_record(record) if record else []
        except Exception as exc:  # the records were written by index_instances: only a damaged cache gets here
            raise DataError(f"{self.cache_file}: damaged instance record of image {image_id} ({exc}); delete the file") from None

    def instance_annotations(self, image_id: Any) -> list[dict]:
        """The image's COCO instance annotations as the instances JSON has them, reduced to ``id``,
        ``category_id``, ``iscrowd`` (0/1) and ``segmentation`` (not decoded); [] when it has none."""
        return [{"id": a[3], "category_id": a[0], "iscrowd": a[1], "segmentation": a[2]} for a in self._instance_rows(image_id)]

    def load_instance_masks(self, image_id: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The image's COCO instance annotations: ``(masks uint8 NxHxW, category_ids int64, iscrowd bool)``.

        Polygons, RLE and uncompressed RLE are checked and decoded by
        :func:`oanet.data.instances.decode_instances`.
        """
        rows = self._instance_rows(image_id)
        info = self.image_info(image_id)
        return decode_instances(rows, info.height, info.width, f"{self.instances_json}: image {image_id}")

# --------------------------------------------------------------------------------------------
# writing predictions


class PanopticWriter:
    """Write predictions in COCO panoptic format: one PNG per image, one JSON at the end.

    ``add`` computes each segment's area and bbox from the id map, drops declared segments with
    no pixel (the PQ evaluator rejects them) and refuses ids in the map that no segment declares.
    ``close`` writes the JSON atomically (temporary file + ``os.replace``), so a crashed run never
    leaves a truncated JSON. Use as a context manager, or call ``close()``.
    """

    def __init__(self, json_path: str | Path, png_dir: str | Path, categories: Sequence[Category] | LabelSpace):
        self.json_path = Path(json_path)
        self.png_dir = Path(png_dir)
        if isinstance(categories, LabelSpace):
            categories = categories.categories
        self.categories = list(categories)
        self._known = np.array(sorted(c.id for c in self.categories), dtype=np.int64)
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self._png_names: set[str] = set()
        self.png_dir.mkdir(parents=True, exist_ok=True)

    def add(self, image: ImageInfo | dict, id_map: np.ndarray, segments: Sequence[dict]) -> dict:
        """Write the PNG of one image and return its annotation (``segments_info`` recomputed)."""
        info = image.to_dict() if isinstance(image, ImageInfo) else dict(image)
        image_id = info["id"]
        png_name = Path(info["file_name"]).with_suffix(".png").name
        where = f"prediction for image {image_id} ({png_name})"
        id_map = np.asarray(id_map)
        if id_map.ndim != 2:
            raise ValueError(f"{where}: id map must be 2-D, got shape {id_map.shape}")
        if "height" in info and id_map.shape != (info["height"], info["width"]):
            raise ValueError(f"{where}: id map is {id_map.shape[1]}x{id_map.shape[0]}, image is {info['width']}x{info['height']}")
        if id_map.size and (id_map.min() < 0 or id_map.max() >= OFFSET):
            raise ValueError(f"{where}: segment ids must be in 0..{OFFSET - 1}")
        if png_name in self._png_names:
            raise ValueError(f"{where}: {png_name} was already written")

        segment_ids = np.array([s["id"] for s in segments], dtype=np.int64)
        category_ids = np.array([s["category_id"] for s in segments], dtype=np.int64)
        unique, counts = np.unique(segment_ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"{where}: duplicate segment id(s) {unique[counts > 1].tolist()}")
        if (segment_ids == VOID).any():
            raise ValueError(f"{where}: segment id 0 is reserved for void")
        unknown = np.setdiff1d(category_ids, self._known)
        if unknown.size:
            raise ValueError(f"{where}: unknown category id(s) {unknown.tolist()}")

        index, areas = segment_index_map(id_map, segment_ids, where)
        boxes = xyxy_to_coco(segment_boxes(index, len(segment_ids)))
        segments_info = [
            {
                "id": int(segment_ids[k]),
                "category_id": int(category_ids[k]),
                "area": int(areas[k]),
                "bbox": [int(v) for v in boxes[k]],
                "iscrowd": 0,
            }
            for k in np.flatnonzero(areas > 0)
        ]
        write_id_png(self.png_dir / png_name, id_map.astype(np.uint32))
        self._png_names.add(png_name)
        annotation = {"image_id": image_id, "file_name": png_name, "segments_info": segments_info}
        self.images.append(info)
        self.annotations.append(annotation)
        return annotation

    def add_annotation(self, image: ImageInfo | dict, annotation: dict) -> None:
        """Record an image whose PNG is already in ``png_dir`` (written by a PanopticResult, maybe in
        another process) with its annotation as is; ``close`` writes it with the others."""
        info = image.to_dict() if isinstance(image, ImageInfo) else dict(image)
        png_name = annotation["file_name"]
        if png_name in self._png_names:
            raise DataError(f"{self.json_path}: two images would share the PNG {png_name} (same file name stem)")
        self._png_names.add(png_name)
        self.images.append(info)
        self.annotations.append(annotation)

    def close(self) -> Path:
        """Write the JSON (categories, images, annotations) atomically; returns its path."""
        data = {
            "info": {"description": "oanet panoptic predictions"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [c.to_dict() for c in self.categories],
        }
        write_json_atomic(self.json_path, data)
        return self.json_path

    def __enter__(self) -> "PanopticWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

