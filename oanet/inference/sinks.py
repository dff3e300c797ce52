"""Sinks: what the inference loop (:mod:`oanet.inference.loop`) does with each image's results.

A sink has a ``name``, ``process(item, results)`` (called on every rank for each of its images;
``results`` is ``{order: PanopticResult}``) and ``finalize(ranks)`` (called once on every rank after
the last image; per-image records are gathered to rank 0, which writes and returns the outcome).
Per-image files (PNGs, overlays) are written by the rank that predicted the image. No torch here.
"""

from __future__ import annotations

import heapq
import io
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from oanet.inference.loop import ImageItem, Ranks
from oanet.errors import make_dir
from oanet.fileio import atomic_write_bytes, write_json_atomic
from oanet.orders import ORDER_TITLES, order_key
from oanet.result import PanopticResult


def _merge(gathered: Optional[list]) -> list:
    """Records of all ranks in source order (each record starts with the item's index)."""
    if gathered is None:
        return []
    return sorted((record for part in gathered for record in part), key=lambda record: record[0])


class PanopticJsonWriter:
    """One order's predictions in COCO panoptic format: ``folder/panoptic/<name>.png`` per image and
    ``folder/panoptic.json`` (written atomically by rank 0 at the end, images in source order)."""

    def __init__(self, folder: str | Path, order: str, label_space: Any) -> None:
        self.name = f"{order}_order_json"
        self.order = order
        self.label_space = label_space
        self.json_path = Path(folder) / "panoptic.json"
        self.png_dir = make_dir(Path(folder) / "panoptic")
        self.records: list = []
        self.count = 0  # images in the JSON, once finalised

    def process(self, item: ImageItem, results: Mapping[str, PanopticResult]) -> None:
        result = results[self.order]
        annotation = result.to_coco(item.file_name, item.image_id)
        result.save(self.png_dir / annotation["file_name"])
        self.records.append((item.index, item.record(), annotation))

    def outputs(self, item: ImageItem) -> list[Path]:
        """The files written for ``item`` (a resumed run checks them: :mod:`oanet.inference.resume`)."""
        return [self.png_dir / Path(item.file_name).with_suffix(".png").name]

    def finalize(self, ranks: Ranks) -> Optional[Path]:
        from oanet.data.coco_panoptic import PanopticWriter

        records = _merge(ranks.gather(self.records))
        if not ranks.is_main:
            return None
        self.count = len(records)
        writer = PanopticWriter(self.json_path, self.png_dir, self.label_space)
        for _, image, annotation in records:
            writer.add_annotation(image, annotation)
        return writer.close()


def overlay_picture(rgb, results: Mapping[str, PanopticResult], orders: Sequence[str]):
    """The segments drawn over the image (a PIL image); several orders side by side, titled."""
    from oanet import viz

    if len(orders) == 1:
        return results[orders[0]].overlay(rgb)
    return viz.side_by_side([(ORDER_TITLES[o], results[o].overlay(rgb)) for o in orders])


class OverlayWriter:
    """``folder/<name>.jpg`` per image: the segments over the image, the orders side by side."""

    resumable = True  # nothing kept per image but the file

    def __init__(self, folder: str | Path, orders: Sequence[str], quality: int = 92) -> None:
        self.name = "overlays"
        self.folder = make_dir(folder)
        self.orders = tuple(orders)
        self.quality = quality

    def process(self, item: ImageItem, results: Mapping[str, PanopticResult]) -> None:
        buffer = io.BytesIO()
        overlay_picture(item.rgb, results, self.orders).save(buffer, format="JPEG", quality=self.quality)
        atomic_write_bytes(self.folder / (Path(item.file_name).stem + ".jpg"), buffer.getvalue())

    def outputs(self, item: ImageItem) -> list[Path]:
        return [self.folder / (Path(item.file_name).stem + ".jpg")]

    def finalize(self, ranks: Ranks) -> Path:
        return self.folder


class OrderDifferences:
    """Per image, the share of pixels whose segment differs between the score and the SRM order
    (:func:`oanet.evaluation.differences.panoptic_map_difference`), written to ``json_path``; keeps
    the ``keep`` most different images (their pixels and results) for reports."""

    def __init__(self, json_path: Optional[str | Path] = None, keep: int = 0) -> None:
        self.name = "order_differences"
        self.json_path = Path(json_path) if json_path is not None else None
        self.keep = keep
        self.records: list = []
        self._top: list = []  # min-heap of (difference, -index, item, results): the `keep` largest

    @property
    def resumable(self) -> bool:
        # The most different images are kept with their pixels, which a resumed image does not have.
        return self.keep == 0

    def process(self, item: ImageItem, results: Mapping[str, PanopticResult]) -> None:
        from oanet.evaluation.differences import panoptic_map_difference

        difference = panoptic_map_difference(results["score"].panoptic, results["srm"].panoptic)
        self.records.append((item.index, item.file_name, difference))
        if self.keep and difference > 0:
            entry = (difference, -item.index, item, dict(results))
            if len(self._top) < self.keep:
                heapq.heappush(self._top, entry)
            elif entry[:2] > self._top[0][:2]:
                heapq.heapreplace(self._top, entry)

    def finalize(self, ranks: Ranks) -> Optional[dict]:
        gathered = ranks.gather((self.records, [entry for entry in self._top]))
        if not ranks.is_main:
            return None
        records = _merge([part for part, _ in gathered])
        differences = {name: difference for _, name, difference in records}
        top = sorted((entry for _, part in gathered for entry in part), key=lambda e: (-e[0], -e[1]))
        if self.json_path is not None:
            write_json_atomic(self.json_path, differences, indent=2)
        # (item, results, difference), most different first; ties by source order
        return {"differences": differences,
                "most_different": [(item, results, difference) for difference, _, item, results in top[: self.keep]]}


SEGMENT_SCORES = "segment_scores.json"


def score_rows(segments: Sequence[Mapping]) -> list:
    """``[[id, detection score, ranking score]]`` of the thing segments of a result (4 decimals; None where a
    score is absent): what the PNGs and the COCO JSON do not keep."""
    rnd = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
    return [[int(s["id"]), rnd(s.get("score")), rnd(s.get("ranking_score"))] for s in segments if s.get("isthing")]


class SegmentScores:
    """Per order and PNG, the detection and ranking score of each thing segment (:func:`score_rows`), written
    by rank 0 to ``json_path`` as ``{"<order>_order": {"<name>.png": rows}}``: the HTML report shows them
    on hover (:mod:`oanet.report`)."""

    def __init__(self, json_path: str | Path, orders: Sequence[str]) -> None:
        self.name = "segment_scores"
        self.json_path = Path(json_path)
        self.orders = tuple(orders)
        self.records: list = []

    def process(self, item: ImageItem, results: Mapping[str, PanopticResult]) -> None:
        png = Path(item.file_name).with_suffix(".png").name
        self.records.append((item.index, png, {o: score_rows(results[o].segments) for o in self.orders}))

    def finalize(self, ranks: Ranks) -> Optional[Path]:
        records = _merge(ranks.gather(self.records))
        if not ranks.is_main:
            return None
        data = {order_key(o): {png: rows[o] for _, png, rows in records} for o in self.orders}
        return write_json_atomic(self.json_path, data)


class PanopticQuality:
    """PQ/SQ/RQ of each writer's predictions against a COCO panoptic ground truth (rank 0, after the
    writers have finalised: put this sink after them)."""

    resumable = True  # scores the PNGs and JSON of the writers at the end

    def __init__(self, writers: Sequence[PanopticJsonWriter], gt_json: str | Path, gt_dir: str | Path,
                 workers: Optional[int] = None, progress: bool = True) -> None:
        self.name = "pq"
        self.writers = list(writers)
        self.gt_json, self.gt_dir = Path(gt_json), Path(gt_dir)
        self.workers = workers
        self.progress = progress

    def process(self, item: ImageItem, results: Mapping[str, PanopticResult]) -> None:
        pass

    def finalize(self, ranks: Ranks) -> Optional[dict]:
        from oanet.evaluation.pq import pq_compute
        from oanet.progress import Progress

        if not ranks.is_main:
            return None
        # One bar for all orders: a line per order read as the same evaluation repeated.
        orders = ", ".join(writer.order for writer in self.writers)
        with Progress(total=sum(writer.count for writer in self.writers), desc=f"PQ ({orders})", unit="img",
                      disable=not self.progress) as bar:
            return {
                order_key(writer.order): pq_compute(self.gt_json, self.gt_dir, writer.json_path, writer.png_dir,
                                                    workers=self.workers, progress=bar).to_dict()
                for writer in self.writers
            }


class Collector:
    """Keeps every result in memory, in source order (rank 0): for callers that want them all."""

    resumable = False  # the results themselves, in memory

    def __init__(self) -> None:
        self.name = "results"
        self.records: list = []

    def process(self, item: ImageItem, results: Mapping[str, PanopticResult]) -> None:
        self.records.append((item.index, dict(results)))

    def finalize(self, ranks: Ranks) -> Optional[list]:
        records = _merge(ranks.gather(self.records))
        return [results for _, results in records] if ranks.is_main else None
