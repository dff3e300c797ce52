"""What ``oanet merge`` reads, checked up front, each error one line naming the file.

- the images (``--images-json``: a COCO or COCO panoptic JSON; ids, file names, sizes);
- the categories (``--categories``, else the images JSON's when they say ``isthing``, else COCO's 133);
- the instances (``RESULTS.json``: COCO instance results, ``image_id``, ``category_id``, ``score``, RLE
  ``segmentation``), grouped per image in file order (the order panopticapi breaks score ties in);
- the semantic prediction: a folder of label PNGs (one per image, pixel = category id) or COCO-stuff
  results (a JSON list of ``image_id``, ``category_id``, RLE ``segmentation``; ``file_name`` instead of
  ``image_id`` as detectron2's SemSegEvaluator writes them).
No torch here.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from oanet.data.labels import LabelSpace, is_integer, parse_categories
from oanet.data.panoptic_json import ImageInfo, parse_images
from oanet.errors import DataError
from oanet.fileio import read_json

# Label PNG values that mean "no prediction" besides ids that are not categories: COCO-stuff's 0
# (unlabeled) and 255 (the usual ignore value).
SEMANTIC_VOID = (0, 255)


@dataclass
class MergeInputs:
    """Everything one merge needs, per image id."""

    images: list[ImageInfo]
    label_space: LabelSpace
    instances: dict[Any, list[dict]] = field(default_factory=dict)  # image id -> results, file order
    semantic_dir: Optional[Path] = None
    semantic_results: dict[Any, list[dict]] = field(default_factory=dict)  # image id -> stuff RLEs
    instances_path: str = ""
    semantic_path: str = ""
    _categories: Optional[dict] = field(default=None, repr=False, compare=False)

    def categories(self) -> dict:
        """The label space's category table (:func:`oanet.result.category_table`), built once."""
        if self._categories is None:
            from oanet.result import category_table

            self._categories = category_table(self.label_space)
        return self._categories


def read_label_space(images_raw: dict, images_json: str | Path, categories_json: Optional[str | Path]) -> LabelSpace:
    """``--categories`` (a list, or a JSON with 'categories'), else the images JSON's categories if
    they carry ``isthing`` (a panoptic JSON), else the 133 COCO panoptic categories."""
    from oanet.data.coco_categories import coco_label_space

    if categories_json:
        raw = read_json(categories_json, "categories")
        raw = raw.get("categories") if isinstance(raw, dict) else raw
        return LabelSpace(parse_categories(raw, str(categories_json)))
    raw = images_raw.get("categories")
    if isinstance(raw, list) and raw and all(isinstance(c, dict) and "isthing" in c for c in raw):
        return LabelSpace(parse_categories(raw, str(images_json)))
    return coco_label_space()


def group_instances(results: Any, path: str, images: dict[Any, ImageInfo], label_space: LabelSpace) -> dict:
    """COCO instance results per image id, in file order; each entry checked (keys, ids, score, size)."""
    if not isinstance(results, list):
        raise DataError(f"{path}: instance results must be a JSON list (COCO results format)")
    grouped: dict[Any, list[dict]] = defaultdict(list)
    for k, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "score", "segmentation"} <= set(r):
            raise DataError(f"{path}: result {k} needs image_id, category_id, score and segmentation")
        info = images.get(r["image_id"])
        if info is None:
            raise DataError(f"{path}: result {k} is for image id {r['image_id']!r}, which the images JSON does not list")
        score = r["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not np.isfinite(score):
            raise DataError(f"{path}: result {k} (image {info.id}) has score {score!r}; expected a number")
        if not is_integer(r["category_id"]):
            raise DataError(f"{path}: result {k} (image {info.id}) has category_id {r['category_id']!r}")
        grouped[r["image_id"]].append(r)
    for image_id, rows in grouped.items():
        ids = [int(r["category_id"]) for r in rows]
        thing = label_space.thing_index(ids, f"{path}: image {image_id}")
        if (thing < 0).any():
            bad = sorted({i for i, t in zip(ids, thing) if t < 0})
            raise DataError(f"{path}: image {image_id}: category id(s) {bad} are stuff classes, not instances")
    return dict(grouped)


def read_inputs(instances_json: str | Path, semantic: str | Path, images_json: str | Path,
                categories_json: Optional[str | Path] = None) -> MergeInputs:
    """Read and check every input of a merge (not the masks themselves: they are decoded per image)."""
    raw = read_json(images_json, "images")
    if not isinstance(raw, dict) or "images" not in raw:
        raise DataError(f"{images_json}: not a COCO JSON (needs 'images' with id, file_name, width, height)")
    images = parse_images(raw["images"], str(images_json))
    if not images:
        raise DataError(f"{images_json}: lists no image")
    by_id = {i.id: i for i in images}
    label_space = read_label_space(raw, images_json, categories_json)
    instances = group_instances(read_json(instances_json, "instance results"), str(instances_json), by_id, label_space)
    inputs = MergeInputs(images, label_space, instances, instances_path=str(instances_json), semantic_path=str(semantic))
    semantic = Path(semantic)
    if semantic.is_dir():
        inputs.semantic_dir = semantic
    elif semantic.is_file():
        inputs.semantic_results = group_semantic_results(read_json(semantic, "semantic results"), str(semantic), by_id,
                                                         label_space)
    else:
        raise FileNotFoundError(f"{semantic}: semantic prediction not found (a folder of label PNGs or a JSON of RLEs)")
    return inputs


def group_semantic_results(results: Any, path: str, images: dict, label_space: LabelSpace) -> dict:
    """COCO-stuff results per image; thing categories are skipped, as panopticapi's merge skips them."""
    if not isinstance(results, list):
        raise DataError(f"{path}: semantic results must be a JSON list of image_id, category_id, segmentation")
    grouped: dict[Any, list[dict]] = defaultdict(list)
    by_stem = {Path(info.file_name).stem: image_id for image_id, info in images.items()}
    for k, r in enumerate(results):
        if isinstance(r, dict) and "image_id" not in r and "file_name" in r:
            # detectron2's SemSegEvaluator names the image by its file; the images JSON gives its id.
            r = dict(r, image_id=by_stem.get(Path(str(r["file_name"])).stem, r["file_name"]))
        if not isinstance(r, dict) or not {"image_id", "category_id", "segmentation"} <= set(r):
            raise DataError(f"{path}: entry {k} needs image_id (or file_name), category_id and segmentation")
        if r["image_id"] not in images:
            raise DataError(f"{path}: entry {k} is for image id {r['image_id']!r}, which the images JSON does not list")
        if label_space.stuff_index([r["category_id"]], f"{path}: entry {k} (image {r['image_id']})")[0] >= 0:
            grouped[r["image_id"]].append(r)
    return dict(grouped)


# --------------------------------------------------------------------------------------------
# per image


def decode_rles(rows: Sequence[dict], info: ImageInfo, path: str) -> np.ndarray:
    """``N x H x W`` uint8 masks of the results' RLEs (one pycocotools call), sizes checked."""
    from pycocotools import mask as mask_utils

    from oanet.data.instances import segmentation_to_rle

    if not rows:
        return np.zeros((0, info.height, info.width), dtype=np.uint8)
    rles = []
    for r in rows:
        try:
            rles.append(segmentation_to_rle(r["segmentation"], info.height, info.width))
        except ValueError as exc:
            raise DataError(f"{path}: image {info.id} ({info.file_name}), category {r.get('category_id')}: {exc}") from None
    for rle in rles:
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    try:
        with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            masks = mask_utils.decode(rles)
    except Exception as exc:  # pycocotools raises bare Exceptions on a bad RLE
        raise DataError(f"{path}: image {info.id} ({info.file_name}): cannot decode a segmentation ({exc})") from None
    return masks.transpose(2, 0, 1)  # H x W x N Fortran order -> N x H x W C order, no copy


def semantic_labels(inputs: MergeInputs, info: ImageInfo) -> np.ndarray:
    """``H x W`` int64 stuff index of each pixel, -1 where no stuff class is predicted (void or a thing)."""
    space = inputs.label_space
    if inputs.semantic_dir is not None:
        path = inputs.semantic_dir / Path(info.file_name).with_suffix(".png").name
        return stuff_indices(space, read_label_png(path, info), str(path))
    rows = inputs.semantic_results.get(info.id, [])
    if not rows:
        return np.full((info.height, info.width), -1, dtype=np.int64)
    masks = decode_rles(rows, info, inputs.semantic_path)
    stuff = np.append(space.stuff_index([r["category_id"] for r in rows]), -1)
    # panopticapi pastes stuff in file order over what is left: of two overlapping masks the first
    # listed keeps the overlap, which is what argmax (first maximum) picks; K marks "no mask".
    masks = masks.transpose(0, 2, 1)  # K x W x H: the decoder's own (Fortran) memory order, contiguous
    first = np.where(masks.any(0), masks.argmax(0), len(rows)).T
    return stuff[first]


def stuff_indices(label_space: LabelSpace, category_ids: np.ndarray, where: str = "") -> np.ndarray:
    """An ``H x W`` map of category ids as stuff indices of ``label_space``: -1 for void (0, 255) and
    thing ids (the instances own things); an id the label space does not know is a DataError."""
    values, inverse = np.unique(np.asarray(category_ids, dtype=np.int64), return_inverse=True)
    declared = ~np.isin(values, SEMANTIC_VOID)
    lookup = np.full(len(values), -1, dtype=np.int64)
    if declared.any():
        lookup[declared] = label_space.stuff_index(values[declared], where)
    return lookup[inverse].reshape(np.shape(category_ids))


def read_label_png(path: Path, info: ImageInfo) -> np.ndarray:
    """A semantic label PNG (one channel: L, P, I or I;16) of the image's size, as int64 category ids."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"{path}: semantic label PNG of image {info.id} not found")
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: semantic PNG has mode {im.mode}; expected one channel of category ids (L, P, I)")
            ids = np.asarray(im, dtype=np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable PNG ({exc})") from None
    if ids.shape != (info.height, info.width):
        raise DataError(f"{path}: semantic PNG is {ids.shape[1]}x{ids.shape[0]}, image {info.id} is {info.width}x{info.height}")
    return ids
