"""``oanet merge`` over a dataset: read, merge each image in every order (threads), write COCO panoptic.

Each order's output is a COCO panoptic JSON + PNG folder (``DIR/panoptic.json`` and ``DIR/panoptic/``
for one order, ``DIR/<order>_order/...`` for both, as ``oanet predict`` lays them out), and
``DIR/merge.json`` says what was merged with what, ``DIR/segment_scores.json`` the detection and
ranking score of each pasted instance. With a ground truth, each order's PQ and the
SRM plug-in's measures (:mod:`oanet.evaluation.occlusion`) go there too.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from oanet.data.coco_panoptic import PanopticWriter
from oanet.errors import make_dir
from oanet.fileio import write_json_atomic
from oanet.merge.inputs import MergeInputs, decode_rles, semantic_labels
from oanet.merge.settings import MergeSettings
from oanet.orders import order_dir, order_key
from oanet.parallel import ordered_thread_map
from oanet.progress import track
from oanet.result import build_result

SEGMENT_SCORES = "segment_scores.json"  # per order and PNG: [id, detection score, ranking score] of each thing


@dataclass
class MergedImage:
    """One image's merge: per order ``(ids numpy, segments)``, and what the order measures need."""

    info: Any
    fused: dict  # order -> (ids, segments) of the PanopticResult written
    masks: Any  # the pasted detections' masks (bool tensor N x H x W); None when no measure asked for them
    labels: Any  # their category ids (numpy)
    ranks: dict  # order -> position of each detection in that order's pasting (numpy, 0 = on top)


def merge_image(inputs: MergeInputs, info: Any, orders: Sequence[str], ranker: Any, settings: MergeSettings,
                out_dir: Path, keep_masks: bool = True) -> tuple[MergedImage, dict]:
    """Merge one image in each of ``orders`` and write its PNGs (in a worker). Returns the merge and each
    order's COCO annotation. See :func:`_on_runs` for when the RLE runs are merged instead of masks."""
    if _on_runs(orders, keep_masks):
        from oanet.merge.runs import merge_score_runs

        fused = {"score": merge_score_runs(inputs, info, settings)}
        return _write(info, fused, inputs, orders, out_dir, None, np.zeros(0, dtype=np.int64), {})
    return _merge_dense(inputs, info, orders, ranker, settings, out_dir)


def _on_runs(orders: Sequence[str], keep_masks: bool) -> bool:
    """The score order alone, with no one asking for the masks (``keep_masks``: the order measures), is
    merged on the RLE runs (:mod:`oanet.merge.runs`): the same output without decoding a mask or
    importing PyTorch. The SRM reads masks, so its order goes through OANet's fusion."""
    return tuple(orders) == ("score",) and not keep_masks


def _merge_dense(inputs: MergeInputs, info: Any, orders: Sequence[str], ranker: Any, settings: MergeSettings,
                 out_dir: Path) -> tuple[MergedImage, dict]:
    """Every order through OANet's fusion on the decoded masks (PyTorch), with what the measures need."""
    from oanet.merge.merge import Instances, fuse_selected, pasting_order, selected_detections

    where = f"{inputs.instances_path}: image {info.id} ({info.file_name})"
    # Only what the threshold keeps is decoded: detectors write up to 100 results per image, most below it.
    rows = [r for r in inputs.instances.get(info.id, []) if r["score"] >= settings.score_thresh]
    instances = Instances(decode_rles(rows, info, inputs.instances_path),
                          np.array([r["category_id"] for r in rows], dtype=np.int64),
                          np.array([r["score"] for r in rows], dtype=np.float64))
    semantic = semantic_labels(inputs, info)
    device = ranker.device if ranker is not None else "cpu"
    det = selected_detections(instances, inputs.label_space, settings.score_thresh, device, where)
    ranking = ranker.rank_channels(det["masks"], det["labels"]) if "srm" in orders else None
    fused = fuse_selected(det, semantic, orders, ranking, inputs.label_space, settings, where)
    ranks = {}
    for o in orders:
        position = np.empty(len(det["scores"]), dtype=np.int64)
        position[pasting_order(det, o, ranking).cpu().numpy()] = np.arange(len(position))
        ranks[o] = position
    labels = inputs.label_space.thing_ids[det["labels"].cpu().numpy()]
    fused = {o: (ids.cpu().numpy(), segments) for o, (ids, segments) in fused.items()}
    return _write(info, fused, inputs, orders, out_dir, det["masks"].cpu(), labels, ranks)


def _write(info: Any, fused: dict, inputs: MergeInputs, orders: Sequence[str], out_dir: Path, masks: Any,
           labels: np.ndarray, ranks: dict) -> tuple[MergedImage, dict]:
    """Each order's PNG written; the merge and each order's COCO annotation."""
    categories = inputs.categories()
    annotations, results = {}, {}
    for o, (ids, segments) in fused.items():
        result = build_result(ids, segments, categories, o, info.id, info.file_name)
        annotations[o] = result.to_coco()
        result.save(order_dir(out_dir, o, orders) / "panoptic" / annotations[o]["file_name"])
        results[o] = (result.panoptic, result.segments)
    return MergedImage(info, results, masks, labels, ranks), annotations


def run_merge(inputs: MergeInputs, out_dir: str | Path, orders: Sequence[str], ranker: Any, settings: MergeSettings,
              workers: int = 1, progress: bool = True, measure: Optional[Callable[[MergedImage], None]] = None,
              log: Callable[[str], None] = print) -> dict:
    """Merge every image of ``inputs`` into ``out_dir``; returns the summary written to ``merge.json``.

    ``measure`` (e.g. :class:`oanet.evaluation.occlusion.OrderMeasures`.add) sees each merged image.
    """
    out_dir = make_dir(out_dir)
    writers = {o: PanopticWriter(order_dir(out_dir, o, orders) / "panoptic.json",
                                 order_dir(out_dir, o, orders) / "panoptic", inputs.label_space) for o in orders}
    start = time.perf_counter()
    counts = {o: {"things": 0, "stuff": 0} for o in orders}
    scores: dict = {order_key(o): {} for o in orders}  # segment_scores.json, for the HTML report's hover

    def work(info):
        return merge_image(inputs, info, orders, ranker, settings, out_dir, keep_masks=measure is not None)

    if _on_runs(orders, measure is not None) and workers > 1 and sys.platform.startswith("linux"):
        merged_images = _in_processes(inputs, settings, out_dir, workers)
    elif workers <= 1:
        merged_images = (work(info) for info in inputs.images)  # in this thread: no hand-over per image
    else:
        merged_images = ordered_thread_map(work, inputs.images, workers, name="oanet-merge")
    try:
        for merged, annotations in track(merged_images, total=len(inputs.images), desc="merge", unit="img",
                                         disable=not progress):
            for o in orders:
                writers[o].add_annotation(merged.info, annotations[o])
                segments = merged.fused[o][1]
                counts[o]["things"] += sum(1 for s in segments if s["isthing"])
                counts[o]["stuff"] += sum(1 for s in segments if not s["isthing"])
                scores[order_key(o)][annotations[o]["file_name"]] = [
                    [s["id"], _round(s["score"]), _round(s["ranking_score"])] for s in segments if s["isthing"]]
            if measure is not None:
                measure(merged)
    finally:
        merged_images.close()  # an error here: let the threads finish before the interpreter exits
    seconds = time.perf_counter() - start
    outputs = {o: str(writers[o].close()) for o in orders}
    write_json_atomic(out_dir / SEGMENT_SCORES, scores)
    summary = {
        "instances": inputs.instances_path, "semantic": inputs.semantic_path, "images": len(inputs.images),
        "orders": list(orders), "outputs": outputs, "segments": counts, "seconds": round(seconds, 3),
        "settings": {"score_thresh": settings.score_thresh, "overlap_thresh": settings.overlap_thresh,
                     "stuff_area": settings.stuff_area},
        "srm": repr(ranker) if ranker is not None else None,
    }
    log(f"merged {len(inputs.images)} images in {seconds:.2f} s ({', '.join(orders)} order) -> {out_dir}")
    return summary


_WORKER: dict = {}


def _in_processes(inputs: MergeInputs, settings: MergeSettings, out_dir: Path, workers: int):
    """The score order on the RLE runs in forked processes: that path is many small numpy calls, which
    hold the GIL, so threads would take turns (2 threads ran slower than 1). fork, as panopticapi and
    :mod:`oanet.evaluation.pq`: the workers inherit the inputs and start in milliseconds."""
    import multiprocessing

    chunk = max(1, min(16, len(inputs.images) // (8 * workers)))
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker,
                                                  initargs=(inputs, settings, out_dir)) as pool:
        for info, segments, annotation in pool.imap(_merge_in_worker, range(len(inputs.images)), chunksize=chunk):
            yield MergedImage(info, {"score": (None, segments)}, None, np.zeros(0, dtype=np.int64), {}), annotation


def _init_worker(inputs: MergeInputs, settings: MergeSettings, out_dir: Path) -> None:
    _WORKER.update(inputs=inputs, settings=settings, out_dir=out_dir)


def _merge_in_worker(index: int) -> tuple:
    inputs = _WORKER["inputs"]
    merged, annotations = merge_image(inputs, inputs.images[index], ("score",), None, _WORKER["settings"],
                                      _WORKER["out_dir"], keep_masks=False)
    return merged.info, merged.fused["score"][1], annotations  # the id map stays in the worker: it is written


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 4)


def write_summary(out_dir: str | Path, summary: dict) -> Path:
    return write_json_atomic(Path(out_dir) / "merge.json", summary, indent=2)
