"""Panoptic Quality (PQ = SQ x RQ, Kirillov et al. 2019) with the COCO panoptic API's semantics. No torch.

The numbers are those of ``panopticapi.evaluation.pq_compute``:

- segment id 0 is VOID; the ground-truth area of a segment is the ``area`` of the GT JSON, the area of a
  predicted segment is its pixel count in the predicted PNG;
- a prediction and a ground-truth segment match when they have the same category, the GT segment is not
  crowd, and IoU > 0.5, where the union leaves out the predicted pixels that fall on GT void;
- unmatched non-crowd GT segments are false negatives; an unmatched prediction is a false positive unless
  more than half of it lies on GT void plus the GT crowd region of its category (like the COCO API, one
  crowd segment per category and image: the last one the GT JSON lists);
- per class PQ = sum(IoU of matches) / (TP + FP/2 + FN/2); All/Things/Stuff average over the classes with
  TP + FP + FN > 0.

Unlike the COCO API, inconsistent inputs are errors that name the image instead of being skipped or
counted: an id in a PNG that no segment declares (GT or prediction), a declared segment missing from its
PNG, an unknown category, a duplicate segment id, PNG sizes that differ.

Per image, the pixels of each (GT segment, predicted segment) pair are counted into a small confusion
table, over which the segments are matched. The C extension (``oanet._ext``) counts the runs of the two
PNGs while it decodes them, line by line, and matches over the table in the same call, without the GIL;
without it (or for a kind of PNG it does not take, or to word an error) numpy maps the decoded id maps
to segment rows, counts with one ``bincount`` and matches in ``match_segments``: the same numbers, to the
bit. Images are spread over worker threads (C extension) or else processes.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from oanet import _ext
from oanet.data.labels import VOID
from oanet.data.png_io import Scanlines, decode_id_png, inflate_scanlines, scanlines_to_ids
from oanet.errors import DataError
from oanet.evaluation.pq_inputs import (  # noqa: F401  (re-exported)
    MAX_SEGMENT_ID,
    Categories,
    JsonSource,
    Segments,
    annotation_label,
    load_panoptic_json,
    pair_annotations,
    parse_segments,
)
from oanet.evaluation.pq_result import (  # noqa: F401  (re-exported)
    FN,
    FP,
    IOU,
    TP,
    PQResult,
    format_per_class_table,
    format_table,
)
from oanet.parallel import default_workers, ordered_thread_map
from oanet.progress import Progress, track

MATCH_IOU = 0.5  # matched iff IoU is strictly above
IGNORE_FRACTION = 0.5  # an unmatched prediction is ignored iff its void+crowd share is strictly above

# --------------------------------------------------------------------------------------------------
# One image


UNDECLARED = np.iinfo(np.uint16).max  # the row lookup's mark for ids no segment declares
_lookups = threading.local()  # one id -> row table per thread, reused from image to image


def _row_lookup() -> np.ndarray:
    table = getattr(_lookups, "table", None)
    if table is None:
        # 32 MiB, once per process: a gather through it is ~6x faster than a binary search per pixel.
        table = _lookups.table = np.full(MAX_SEGMENT_ID + 1, UNDECLARED, dtype=np.uint16)
        table[VOID] = 0
    return table


def segment_rows(ids: np.ndarray, segments: Segments, where: str) -> np.ndarray:
    """Row of each pixel's segment: 0 for VOID, 1 + position in ``segments.ids`` otherwise.

    DataError (naming ``where``) when a pixel has an id that no segment declares.
    """
    if len(segments.ids) < UNDECLARED and ids.dtype == np.uint32:
        table = _row_lookup()
        table[segments.ids] = np.arange(1, len(segments.ids) + 1, dtype=np.uint16)
        try:
            rows = table.take(ids)
        except IndexError:  # an id above 24 bits: not from a PNG, let the search below word it
            rows = None
        finally:
            table[segments.ids] = UNDECLARED
        if rows is not None and rows.max(initial=0) != UNDECLARED:
            return rows
    keys = np.concatenate([np.zeros(1, np.uint32), segments.ids])
    rows = np.searchsorted(keys, ids)
    found = keys.take(rows, mode="clip") == ids
    if not found.all():
        undeclared = np.unique(ids[~found])
        raise DataError(f"{where}: ids {undeclared[:10].tolist()} in the PNG are declared by no segment")
    return rows


def confusion(gt_rows: np.ndarray, pred_rows: np.ndarray, n_gt: int, n_pred: int) -> np.ndarray:
    """Pixel counts of every (GT row, predicted row) pair, shape (1 + n_gt, 1 + n_pred); row/col 0 = VOID."""
    width = n_pred + 1
    joint = gt_rows.astype(np.intp).ravel()  # bincount counts intp; widening first also avoids overflow
    joint *= width
    joint += pred_rows.ravel()
    return np.bincount(joint, minlength=(n_gt + 1) * width).reshape(n_gt + 1, width)


def match_segments(counts: np.ndarray, gt: Segments, pred: Segments, n_categories: int) -> np.ndarray:
    """Per-category (IoU sum, TP, FP, FN) of one image, shape (4, n_categories), from its confusion table."""
    intersection = counts[1:, 1:]
    pred_on_void = counts[0, 1:]
    pred_area = counts[:, 1:].sum(axis=0)

    candidate = (intersection > 0) & (gt.category[:, None] == pred.category[None, :]) & ~gt.iscrowd[:, None]
    union = pred_area[None, :] + gt.area[:, None] - intersection - pred_on_void[None, :]
    iou = np.zeros(intersection.shape, dtype=np.float64)
    np.divide(intersection, union, out=iou, where=candidate)
    matched = candidate & (iou > MATCH_IOU)
    gt_matched = matched.any(axis=1)
    pred_matched = matched.any(axis=0)

    gt_of_match, _ = np.nonzero(matched)
    match_category = gt.category[gt_of_match]

    false_negative = ~gt_matched & ~gt.iscrowd

    # The share of each prediction that lies on GT void or on its category's crowd region.
    crowd_row_of_category = np.full(n_categories, -1, dtype=np.intp)
    crowd_row_of_category[gt.crowd_category] = gt.crowd_row
    crowd_row = crowd_row_of_category[pred.category]
    has_crowd = crowd_row >= 0
    on_crowd = np.zeros(len(pred.ids), dtype=np.int64)
    on_crowd[has_crowd] = intersection[crowd_row[has_crowd], np.flatnonzero(has_crowd)]
    ignored = (pred_on_void + on_crowd) / pred_area > IGNORE_FRACTION
    false_positive = ~pred_matched & ~ignored

    stats = np.empty((4, n_categories), dtype=np.float64)
    stats[IOU] = np.bincount(match_category, weights=iou[matched], minlength=n_categories)
    stats[TP] = np.bincount(match_category, minlength=n_categories)
    stats[FP] = np.bincount(pred.category[false_positive], minlength=n_categories)
    stats[FN] = np.bincount(gt.category[false_negative], minlength=n_categories)
    return stats


def evaluate_image(
    gt_ann: Mapping, pred_ann: Mapping, gt_dir: Union[str, "os.PathLike[str]"],
    pred_dir: Union[str, "os.PathLike[str]"], categories: Categories,
) -> np.ndarray:
    """Per-category (IoU sum, TP, FP, FN) of one image, shape (4, C)."""
    gt = parse_segments(gt_ann, categories, "ground-truth", with_area=True)
    pred = parse_segments(pred_ann, categories, "prediction", with_area=False)
    for role, ann in (("ground-truth", gt_ann), ("prediction", pred_ann)):
        if not isinstance(ann.get("file_name"), str):
            raise DataError(f"{role} {annotation_label(ann)}: no 'file_name'")
    gt_path = os.path.join(gt_dir, gt_ann["file_name"])
    pred_path = os.path.join(pred_dir, pred_ann["file_name"])
    where_gt = f"{gt_path} (ground truth of image {gt_ann['image_id']})"
    where_pred = f"{pred_path} (prediction for image {gt_ann['image_id']})"
    pred_png = _read_png(pred_path, where_pred, "predicted")
    gt_png = _read_png(gt_path, where_gt, "ground-truth")
    gt_lines = pred_lines = None
    if _ext.speedups is not None and max(len(gt.ids), len(pred.ids)) < UNDECLARED:
        gt_lines = inflate_scanlines(gt_png, where_gt)
        pred_lines = inflate_scanlines(pred_png, where_pred) if gt_lines is not None else None
        if pred_lines is not None:
            stats = _stats_with_c(gt_lines, pred_lines, gt, pred, len(categories), where_gt, where_pred)
            if stats is not None:
                return stats
    # No C extension, another kind of PNG, or a problem to find and word. What was inflated is not again.
    gt_ids, pred_ids = _ids(gt_png, gt_lines, where_gt), _ids(pred_png, pred_lines, where_pred)
    if gt_ids.shape != pred_ids.shape:
        raise DataError(f"{where_pred}: size {_size(pred_ids)} differs from the ground truth's {_size(gt_ids)}")
    counts = confusion(
        segment_rows(gt_ids, gt, where_gt), segment_rows(pred_ids, pred, where_pred), len(gt.ids), len(pred.ids)
    )
    gt_pixels, pred_pixels = counts[1:, :].sum(axis=1), counts[:, 1:].sum(axis=0)
    for where, segments, pixels in ((where_gt, gt, gt_pixels), (where_pred, pred, pred_pixels)):
        absent = segments.ids[pixels == 0]
        if absent.size:
            raise DataError(f"{where}: declared segments {absent[:10].tolist()} have no pixel in the PNG")
    return match_segments(counts, gt, pred, len(categories))


def _stats_with_c(
    gt_lines: Scanlines, pred_lines: Scanlines, gt: Segments, pred: Segments, n_categories: int, where_gt: str,
    where_pred: str,
) -> Optional[np.ndarray]:
    """``match_segments`` of the two PNGs' scanlines by the C extension, which counts and matches in one call
    without the GIL; None where the sizes differ, an id is undeclared or a declared segment has no pixel
    (the general path words the error)."""
    if (gt_lines.width, gt_lines.height) != (pred_lines.width, pred_lines.height):
        return None
    stats = np.empty((4, n_categories), dtype=np.float64)
    try:
        complete = _ext.speedups.pair_stats(
            gt_lines.data, gt_lines.channels, gt.ids, pred_lines.data, pred_lines.channels, pred.ids,
            gt_lines.width, gt_lines.height, gt.category, gt.iscrowd, gt.area, pred.category,
            gt.crowd_category, gt.crowd_row, stats,
        )
    except ValueError as exc:  # truncated image data or a bad filter byte, in image 0 (GT) or 1
        which, problem = exc.args
        raise DataError(f"{(where_gt, where_pred)[which]}: corrupt PNG ({problem})") from None
    return stats if complete else None


def _ids(png: bytes, lines: Optional[Scanlines], where: str) -> np.ndarray:
    return scanlines_to_ids(lines, where) if lines is not None else decode_id_png(png, where)


def _read_png(path: str, where: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise FileNotFoundError(f"{where}: {what} PNG not found") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc.strerror or exc})") from None


def _size(ids: np.ndarray) -> str:
    return f"{ids.shape[1]}x{ids.shape[0]}"


# --------------------------------------------------------------------------------------------------
# The dataset


CHUNK_IMAGES = 4  # images per task given to a worker thread or process: they then finish together

_worker_args: Optional[tuple] = None  # (pairs, gt_dir, pred_dir, categories) in each worker process


def _init_worker(pairs: Sequence, gt_dir: Path, pred_dir: Path, categories: Categories) -> None:
    # Forked workers inherit these without pickling; tasks are then image indices, not annotations.
    global _worker_args
    _worker_args = (pairs, gt_dir, pred_dir, categories)


def _evaluate_pair(index: int) -> np.ndarray:
    pairs, gt_dir, pred_dir, categories = _worker_args
    gt_ann, pred_ann = pairs[index]
    return evaluate_image(gt_ann, pred_ann, gt_dir, pred_dir, categories)


def _image_stats(
    pairs: Sequence[tuple[Mapping, Mapping]], gt_dir: str, pred_dir: str, categories: Categories, workers: int
) -> Iterator[np.ndarray]:
    def evaluate(pair: tuple[Mapping, Mapping]) -> np.ndarray:
        return evaluate_image(pair[0], pair[1], gt_dir, pred_dir, categories)

    if workers <= 1:
        yield from map(evaluate, pairs)
    elif _ext.speedups is not None:
        # Threads: with the C extension most of the time per image (reading, inflating, decoding, counting
        # and matching) runs without the GIL, and threads start at once and share the inputs, where each
        # worker process took ~50 ms to start and warm up, as long as ~30 images take.
        yield from ordered_thread_map(evaluate, pairs, workers, CHUNK_IMAGES, name="oanet-pq")
    else:
        yield from _in_processes(pairs, gt_dir, pred_dir, categories, workers)


def _in_processes(
    pairs: Sequence[tuple[Mapping, Mapping]], gt_dir: str, pred_dir: str, categories: Categories, workers: int
) -> Iterator[np.ndarray]:
    # Processes for the pure path (numpy and the decoders hold the GIL for much of an image). fork on
    # Linux, as the COCO API and torch's DataLoader: workers start in milliseconds and a caller's script
    # needs no ``if __name__ == "__main__"`` guard (spawn re-runs it). The workers touch neither torch nor
    # CUDA, so forking a training process is safe. Elsewhere the platform's default.
    import multiprocessing

    method = "fork" if sys.platform.startswith("linux") else None
    chunksize = max(1, min(CHUNK_IMAGES, len(pairs) // (8 * workers)))
    with multiprocessing.get_context(method).Pool(
        workers, initializer=_init_worker, initargs=(pairs, gt_dir, pred_dir, categories)
    ) as pool:
        yield from pool.imap(_evaluate_pair, range(len(pairs)), chunksize=chunksize)


def pq_compute(
    gt_json: JsonSource,
    gt_dir: Union[str, "os.PathLike[str]"],
    pred_json: JsonSource,
    pred_dir: Union[str, "os.PathLike[str]"],
    workers: Optional[int] = None,
    progress: Union[bool, Progress] = True,
) -> PQResult:
    """Panoptic Quality of the predictions against the ground truth, with the COCO panoptic API's semantics.

    ``gt_json``/``pred_json`` are paths or already-loaded dicts in the COCO panoptic format; the PNGs are
    ``<dir>/<file_name>``. Predictions for images absent from the ground truth are ignored. ``workers``:
    threads, or processes without the C extension (default all cores; 0 or 1 evaluates in this thread).
    ``progress``: a bar (or log lines) of its own, none, or a :class:`~oanet.progress.Progress` to count
    the images on (one bar for several calls).
    Raises DataError or FileNotFoundError, naming the image, on inconsistent inputs.
    """
    gt, gt_name = load_panoptic_json(gt_json, "ground-truth")
    pred, pred_name = load_panoptic_json(pred_json, "prediction")
    categories = Categories.from_json(gt, gt_name)
    pairs = pair_annotations(gt, gt_name, pred, pred_name)
    gt_dir, pred_dir = str(Path(gt_dir)), str(Path(pred_dir))
    for folder, role in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: {role} PNG folder not found")

    workers = default_workers() if workers is None else int(workers)
    workers = max(1, min(workers, len(pairs)))
    stats = np.zeros((4, len(categories)), dtype=np.float64)
    images = _image_stats(pairs, gt_dir, pred_dir, categories, workers)
    counter = progress if isinstance(progress, Progress) else None
    if progress is True:
        images = track(images, total=len(pairs), desc="PQ", unit="img")
    for image_stats in images:
        stats += image_stats
        if counter is not None:
            counter.update(1)
    return PQResult(categories=categories, stats=stats, n_images=len(pairs))


def pq_per_image(
    gt_json: JsonSource,
    gt_dir: Union[str, "os.PathLike[str]"],
    pred_json: JsonSource,
    pred_dir: Union[str, "os.PathLike[str]"],
    workers: Optional[int] = None,
) -> tuple[list, np.ndarray, Categories]:
    """Each ground-truth image's statistics, as :func:`pq_compute` counts them: ``(image ids, stats
    (N, 4, C) of IoU sum, TP, FP, FN per category, categories)``. Summed over the images they are
    ``pq_compute``'s ``stats`` to the bit; :func:`image_pq` gives each image's PQ. For reports
    (:mod:`oanet.report`), which show the worst and best images."""
    gt, gt_name = load_panoptic_json(gt_json, "ground-truth")
    pred, pred_name = load_panoptic_json(pred_json, "prediction")
    categories = Categories.from_json(gt, gt_name)
    pairs = pair_annotations(gt, gt_name, pred, pred_name)
    gt_dir, pred_dir = str(Path(gt_dir)), str(Path(pred_dir))
    for folder, role in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: {role} PNG folder not found")
    workers = max(1, min(default_workers() if workers is None else int(workers), len(pairs)))
    stats = np.stack(list(_image_stats(pairs, gt_dir, pred_dir, categories, workers)))
    return [gt_ann["image_id"] for gt_ann, _ in pairs], stats, categories


def image_pq(stats: np.ndarray, isthing: Optional[np.ndarray] = None) -> np.ndarray:
    """PQ of each image from :func:`pq_per_image`'s ``(N, 4, C)`` stats: the mean over the image's categories
    with TP + FP + FN > 0 (only those where ``isthing``, a (C,) mask, is true when given), NaN where none is."""
    iou, tp, fp, fn = (stats[:, k] for k in (IOU, TP, FP, FN))
    counted = tp + fp + fn > 0
    if isthing is not None:
        counted &= np.asarray(isthing, dtype=bool)[None, :]
    per = np.where(counted, iou / np.where(counted, tp + 0.5 * fp + 0.5 * fn, 1.0), 0.0)
    n = counted.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, per.sum(axis=1) / n, np.nan)
