"""``oanet check-data``: every problem of a COCO panoptic dataset, not only the first. No torch.

:class:`~oanet.data.coco_panoptic.PanopticSplit` and ``oanet pq`` stop at the first inconsistency, which
is right for training and evaluation but makes a broken conversion a loop of fix, rerun, next error.
Here nothing raises for the data's own problems: each is recorded under a kind (:data:`KINDS`, with its
severity) and the check goes on. Only a JSON that cannot be read, is not COCO panoptic at all, or a
missing folder is an exception (the CLI prints it as one line).

The JSON is checked in this thread (:mod:`oanet.data.validate_json`), the PNGs (and image headers) by
worker threads: decoding is in C without the GIL (``png_io``), and the per-image statistics work on the
id map's runs rather than its pixels (:func:`run_stats`), so a COCO-sized split takes seconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from oanet.data.png_io import PNG_SIGNATURE, decode_id_png, id2rgb
from oanet.data.validate_json import ImageJob, JsonPlan, check_json
from oanet.data.validate_kinds import ERROR, INFO, KINDS, WARNING, Problems  # noqa: F401  (re-exported)
from oanet.errors import DataError
from oanet.fileio import read_json
from oanet.parallel import default_workers, ordered_thread_map
from oanet.progress import track

_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale + alpha", 6: "RGBA"}


@dataclass
class ImageResult:
    """What the check of one image's PNG found, its segments in the order of ``job.segment_ids``."""

    problems: list  # (kind, file, detail, n)
    decoded: bool = False  # the PNG was read; ``areas`` and ``boxes`` are then the PNG's
    areas: Optional[np.ndarray] = None  # int64 (K,) pixels of each segment (0: absent from the PNG)
    boxes: Optional[np.ndarray] = None  # float64 (K, 4) COCO [x, y, w, h] from the PNG (0 when absent)


@dataclass
class CheckResult:
    """Everything ``check_dataset`` found: the JSON as read, the plan of its images, per-image results."""

    panoptic_json: Path
    panoptic_dir: Path
    image_dir: Optional[Path]
    data: dict
    plan: JsonPlan
    results: list  # ImageResult per plan.jobs entry
    problems: Problems
    seconds: float = 0.0
    workers: int = 1

    @property
    def has_errors(self) -> bool:
        return self.problems.total(ERROR) > 0


# --------------------------------------------------------------------------------------------
# one id map


def run_stats(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(unique ids, pixel count, XYXY box with exclusive max)`` of every id in an id map, void included.

    The statistics come from the map's horizontal runs (a few thousand in a real segmentation, against
    ~300 k pixels): one comparison pass over the pixels, then sorting and ``reduceat`` over the runs.
    """
    height, width = ids.shape
    if ids.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ids.reshape(-1)[:0], empty, np.zeros((0, 4))
    change = np.empty((height, width), dtype=bool)
    change[:, 0] = True  # every row starts a run, so no run crosses a row
    np.not_equal(ids[:, 1:], ids[:, :-1], out=change[:, 1:])
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=ids.size)
    values = ids.reshape(-1)[starts]
    rows, x0 = np.divmod(starts, width)
    order = np.argsort(values, kind="stable")
    values = values[order]
    first = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    areas = np.add.reduceat(lengths[order], first)
    boxes = np.stack([
        np.minimum.reduceat(x0[order], first),
        np.minimum.reduceat(rows[order], first),
        np.maximum.reduceat((x0 + lengths)[order], first),
        np.maximum.reduceat(rows[order], first) + 1,
    ], axis=1).astype(np.float64)
    return values[first], areas.astype(np.int64), boxes


def png_format_problem(data: bytes) -> Optional[str]:
    """Why a PNG is not the 8-bit RGB/RGBA that the COCO API and panopticapi read as ids (None if it is).

    oanet decodes the others too (Pillow converts them), but a palette or grey PNG is often a semantic
    map saved by mistake, and other tools read its pixels as something else.
    """
    if not data.startswith(PNG_SIGNATURE) or len(data) < 29 or data[12:16] != b"IHDR":
        return None  # not a PNG at all: the decoder words that
    depth, colour, interlace = data[24], data[25], data[28]
    if colour in (2, 6) and depth == 8:
        return "interlaced (Adam7): fine here, slow to decode elsewhere" if interlace else None
    return f"{depth}-bit {_COLOUR_TYPES.get(colour, f'colour type {colour}')}, not 8-bit RGB"


def _ids_text(ids: np.ndarray, limit: int = 6) -> str:
    items = [str(int(i)) for i in ids[:limit]]
    return ", ".join(items) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _undeclared(job: ImageJob, uniq: np.ndarray, colours: dict) -> list:
    """Problems of the ids in the PNG that the image's segments_info does not declare: colours that are
    categories' colours (a semantic visualisation saved instead of an id map) apart from the others."""
    extra = uniq[(uniq != 0) & ~np.isin(uniq, job.segment_ids)]
    if not extra.size:
        return []
    rgb = id2rgb(extra)
    named = [colours.get(tuple(int(c) for c in px)) for px in rgb]
    as_category = [k for k, name in enumerate(named) if name is not None]
    problems = []
    if as_category:
        shown = ", ".join(f"RGB {tuple(int(c) for c in rgb[k])} = {named[k]}" for k in as_category[:3])
        problems.append(("category-colours", job.png_name, f"{shown}{' ...' if len(as_category) > 3 else ''}",
                         len(as_category)))
    other = np.delete(extra, as_category)
    if other.size:
        shown = ", ".join(f"{int(i)} (RGB {tuple(int(c) for c in id2rgb(np.array([i]))[0])})" for i in other[:4])
        more = f" and {other.size - 4} more" if other.size > 4 else ""
        problems.append(("undeclared-id", job.png_name, f"id {shown}{more}", int(other.size)))
    return problems


def compare_segments(job: ImageJob, ids: np.ndarray, colours: dict) -> ImageResult:
    """The PNG's ids, areas and boxes against the image's segments_info."""
    uniq, areas, boxes = run_stats(ids)
    pos = np.minimum(np.searchsorted(uniq, job.segment_ids), max(len(uniq) - 1, 0))
    present = (uniq[pos] == job.segment_ids) if len(uniq) else np.zeros(len(job.segment_ids), dtype=bool)
    seg_areas = np.where(present, areas[pos] if len(uniq) else 0, 0).astype(np.int64)
    seg_boxes = np.zeros((len(job.segment_ids), 4))
    if len(uniq):
        xyxy = boxes[pos]
        seg_boxes[present] = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)[present]
    problems = _undeclared(job, uniq, colours)
    name = job.png_name
    if (~present).any():
        problems.append(("segment-not-in-png", name, f"segment {_ids_text(job.segment_ids[~present])}",
                         int((~present).sum())))
    bad_area = present & (job.areas != seg_areas)  # NaN (no area in the JSON) differs too
    if bad_area.any():
        k = np.flatnonzero(bad_area)
        shown = ", ".join(f"{job.segment_ids[i]}: {_number(job.areas[i])} vs {seg_areas[i]}" for i in k[:3])
        problems.append(("area-mismatch", name, f"segment {shown}{' ...' if k.size > 3 else ''} (JSON vs PNG)",
                         int(k.size)))
    bad_box = present & ~(job.bboxes == seg_boxes).all(axis=1)
    if bad_box.any():
        k = np.flatnonzero(bad_box)
        shown = ", ".join(f"{job.segment_ids[i]}: {_box(job.bboxes[i])} vs {_box(seg_boxes[i])}" for i in k[:2])
        problems.append(("bbox-mismatch", name, f"segment {shown}{' ...' if k.size > 2 else ''} (JSON vs PNG)",
                         int(k.size)))
    if len(job.segment_ids) == 0 or (len(uniq) == 1 and uniq[0] == 0):
        problems.append(("empty-image", name, "no segment" if len(job.segment_ids) == 0 else "every pixel is void", 1))
    return ImageResult(problems, decoded=True, areas=seg_areas, boxes=seg_boxes)


def _number(value: float) -> str:
    return "none" if np.isnan(value) else f"{value:g}"


def _box(box: np.ndarray) -> str:
    return "none" if np.isnan(box).any() else "[" + ", ".join(f"{v:g}" for v in box) + "]"


# --------------------------------------------------------------------------------------------
# one image


def image_header_problem(path: Path, width: int, height: int) -> Optional[tuple[str, str]]:
    """``(kind, detail)`` when the image file is missing, unreadable or of another size; reads the header only."""
    from PIL import Image  # here: a check without --image-dir never needs Pillow for this

    try:
        with Image.open(path) as img:
            size = img.size
    except FileNotFoundError:
        return "image-missing", f"not found in {path.parent}"
    except Exception as exc:  # noqa: BLE001 - any reason Pillow gives is the user's to read
        return "image-unreadable", f"{type(exc).__name__}: {exc}"
    if size != (width, height):
        return "image-size", f"the image is {size[0]}x{size[1]}, the JSON says {width}x{height}"
    return None


def check_image(job: ImageJob, panoptic_dir: Path, image_dir: Optional[Path], colours: dict) -> ImageResult:
    """Every check of one annotated image: its PNG (and its image file), never raising for the data."""
    early = []
    if image_dir is not None:
        found = image_header_problem(image_dir / job.image_file, job.width, job.height)
        if found:
            early.append((found[0], job.image_file, found[1], 1))
    path = panoptic_dir / job.png_name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ImageResult(early + [("png-missing", job.png_name, f"not found in {panoptic_dir}", 1)])
    except OSError as exc:
        return ImageResult(early + [("png-unreadable", job.png_name, exc.strerror or str(exc), 1)])
    fmt = png_format_problem(data)
    if fmt:
        early.append(("png-format", job.png_name, fmt, 1))
    try:
        ids = decode_id_png(data, job.png_name)
    except DataError as exc:
        return ImageResult(early + [("png-unreadable", job.png_name, str(exc).removeprefix(f"{job.png_name}: "), 1)])
    if ids.shape != (job.height, job.width):
        detail = f"the PNG is {ids.shape[1]}x{ids.shape[0]}, the JSON says {job.width}x{job.height}"
        early.append(("png-size", job.png_name, detail, 1))
    result = compare_segments(job, ids, colours)
    result.problems[:0] = early
    return result


# --------------------------------------------------------------------------------------------
# a dataset


def _unreferenced_pngs(panoptic_dir: Path, jobs: Sequence[ImageJob], plan: JsonPlan) -> list[str]:
    names = {job.png_name for job in jobs} | set(plan.other_png_names)
    with os.scandir(panoptic_dir) as entries:
        return sorted(e.name for e in entries if e.name.lower().endswith(".png") and e.name not in names)


def load_panoptic_json(panoptic_json: str | Path) -> dict:
    """The JSON, or an exception naming it: missing, not JSON, or not COCO panoptic at all."""
    data = read_json(panoptic_json, "panoptic")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise DataError(f"{panoptic_json}: not a COCO panoptic JSON (needs the lists 'images' and 'annotations')")
    return data


def check_dataset(
    panoptic_json: str | Path,
    panoptic_dir: str | Path,
    image_dir: Optional[str | Path] = None,
    workers: Optional[int] = None,
    progress: bool = True,
) -> CheckResult:
    """Check a COCO panoptic dataset; every problem of the data is in the result's ``problems``.

    Raises (FileNotFoundError / DataError, naming the path) only when the JSON cannot be read or is not
    COCO panoptic, or a folder is missing. ``workers``: threads (default: all cores; 0 or 1: this thread).
    """
    start = time.perf_counter()
    panoptic_json, panoptic_dir = Path(panoptic_json), Path(panoptic_dir)
    image_dir = Path(image_dir) if image_dir is not None else None
    for folder, what in ((panoptic_dir, "panoptic PNG folder"), (image_dir, "image folder")):
        if folder is not None and not folder.is_dir():
            raise DataError(f"{folder}: {what} not found")
    data = load_panoptic_json(panoptic_json)
    problems = Problems()
    plan = check_json(data, panoptic_json.name, problems)
    workers = default_workers() if workers is None else max(1, workers)

    def one(job: ImageJob) -> ImageResult:
        return check_image(job, panoptic_dir, image_dir, plan.colours)

    jobs = plan.jobs
    mapped = map(one, jobs) if workers == 1 else ordered_thread_map(one, jobs, workers, chunk=8, name="check-data")
    results = []
    for result in track(mapped, total=len(jobs), desc="check-data", unit="images", disable=not progress):
        for kind, file, detail, n in result.problems:
            problems.add(kind, file, detail, n)
        results.append(result)
    for name in _unreferenced_pngs(panoptic_dir, jobs, plan):
        problems.add("unreferenced-png", name, "no annotation names this PNG")
    return CheckResult(panoptic_json, panoptic_dir, image_dir, data, plan, results, problems,
                       seconds=time.perf_counter() - start, workers=workers)
