"""The half every converter shares: a :class:`Plan` (categories + one task per image + the function that
converts one image) -> ``DIR/panoptic_{split}.json``, ``DIR/panoptic_{split}/*.png`` and
``DIR/convert_report.json``. Parallel over images, atomic per file, resumable. No torch.

Resuming: after each PNG is in place its record (image entry, ``segments_info``, what was dropped,
the size and mtime of the input files, the PNG's size) is appended to
``DIR/panoptic_{split}.records.jsonl``, whose first line holds the source, settings and categories.
A rerun with the same header skips every image whose record, inputs and PNG still match; a
different header starts over. The JSON and the report are written from the records at the end,
so an interrupted run leaves the old JSON or none, never half of one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from oanet.data.png_io import encode_id_png
from oanet.errors import DataError, make_dir
from oanet.fileio import atomic_write_bytes, read_json, write_json_atomic, write_text_atomic
from oanet.parallel import default_workers, ordered_thread_map
from oanet.progress import track

RECORDS_FORMAT = "oanet convert records"
RECORDS_VERSION = 1
REPORT_NAME = "convert_report.json"


@dataclass(frozen=True)
class ImageTask:
    """One image to convert. ``image`` is its COCO entry (``id``, ``file_name``, ``width``,
    ``height``; a size of 0 is taken from the labels); ``inputs`` are the files it is made from
    (a rerun redoes the image when one of them changed); ``payload`` is the source's own data."""

    image: dict
    png_name: str
    inputs: tuple[Path, ...]
    payload: Any = None


@dataclass
class Converted:
    """One converted image: the segment id map, its ``segments_info``, and for the report what was
    dropped (``{reason: [segments, pixels]}``) and other per-image counts."""

    ids: np.ndarray
    segments: list[dict]
    dropped: dict[str, list[int]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    source: str  # the CLI's name of the source, e.g. "cityscapes"
    split: str
    categories: list[dict]  # COCO panoptic categories, as written to the JSON
    tasks: list[ImageTask]
    convert: Callable[[ImageTask], Converted]
    settings: dict  # everything else that changes the output: a rerun with other settings starts over
    image_dir: Optional[Path] = None  # where the images are, for the printed training overrides
    notes: tuple[str, ...] = ()  # warnings for the report and the console


# --------------------------------------------------------------------------------------------
# records


def _fingerprint(paths: tuple[Path, ...], cache: dict) -> list:
    out = []
    for path in paths:
        if path not in cache:
            try:
                st = os.stat(path)
                cache[path] = [str(path), st.st_size, st.st_mtime_ns]
            except OSError:
                cache[path] = [str(path), -1, -1]
        out.append(cache[path])
    return out


def _read_records(path: Path, header: dict) -> dict[str, dict]:
    """The records of an earlier run with the same header, by PNG name (the last one wins); a torn
    last line (a run killed while appending) is skipped."""
    if not path.is_file():
        return {}
    records: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        try:
            if json.loads(first) != header:
                return {}
        except json.JSONDecodeError:
            return {}
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "png" in record:
                records[record["png"]] = record
    return records


def _still_complete(record: Optional[dict], task: ImageTask, inputs: list, png_path: Path) -> bool:
    if record is None or record.get("inputs") != inputs:
        return False
    # The image entry may come from a file that is no input (an --images JSON): it must not have changed.
    wanted = {key: value for key, value in task.image.items() if value or key not in ("width", "height")}
    if any(record["image"].get(key) != value for key, value in wanted.items()):
        return False
    try:
        return os.stat(png_path).st_size == record.get("png_bytes")
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# running a plan


def _check_plan(plan: Plan) -> None:
    if not plan.tasks:
        raise DataError(f"{plan.source} {plan.split}: no images to convert (empty split)")
    names, ids = [t.png_name for t in plan.tasks], [t.image["id"] for t in plan.tasks]
    for what, values in (("the PNG name", names), ("the image id", ids)):
        duplicates = [value for value, count in Counter(values).items() if count > 1]
        if duplicates:
            raise DataError(f"{plan.source} {plan.split}: two images share {what} {duplicates[0]!r}")


def _convert_one(plan: Plan, png_dir: Path, task: ImageTask, inputs: list) -> dict:
    result = plan.convert(task)
    height, width = result.ids.shape
    image = dict(task.image)
    if image.get("width") and (image["width"], image["height"]) != (width, height):
        raise DataError(f"{task.inputs[0]}: labels are {width}x{height} but image {image['id']!r} is "
                        f"{image['width']}x{image['height']}")
    image["width"], image["height"] = int(width), int(height)
    data = encode_id_png(result.ids)  # write_id_png's bytes; their size goes in the record
    atomic_write_bytes(png_dir / task.png_name, data)
    return {"png": task.png_name, "png_bytes": len(data), "inputs": inputs, "image": image,
            "segments_info": result.segments, "dropped": result.dropped, "counters": result.counters}


def run_plan(plan: Plan, out: str | Path, workers: Optional[int] = None, progress: bool = True) -> dict:
    """Convert every image of ``plan`` into ``out`` (see the module docstring); returns the split's
    report (also merged into ``out/convert_report.json``) with ``paths`` added."""
    _check_plan(plan)
    out = make_dir(out)
    png_dir = make_dir(out / f"panoptic_{plan.split}", "panoptic PNG folder")
    json_path = out / f"panoptic_{plan.split}.json"
    records_path = out / f"panoptic_{plan.split}.records.jsonl"
    header = {"format": RECORDS_FORMAT, "version": RECORDS_VERSION, "source": plan.source, "split": plan.split,
              "settings": plan.settings, "categories": plan.categories}
    header = json.loads(json.dumps(header))  # as it reads back (tuples -> lists), to compare
    old = _read_records(records_path, header)
    stats_cache: dict = {}
    done: dict[str, dict] = {}
    todo: list[tuple[ImageTask, list]] = []
    for task in plan.tasks:
        inputs = _fingerprint(task.inputs, stats_cache)
        record = old.get(task.png_name)
        if _still_complete(record, task, inputs, png_dir / task.png_name):
            done[task.png_name] = record
        else:
            todo.append((task, inputs))
    skipped = len(done)
    # Rewritten whole (atomically) before appending: drops stale records and any torn last line.
    lines = [json.dumps(header)] + [json.dumps(done[t.png_name]) for t in plan.tasks if t.png_name in done]
    write_text_atomic(records_path, "\n".join(lines) + "\n")

    workers = default_workers() if workers is None else max(0, int(workers))

    def work(item: tuple[ImageTask, list]) -> dict:
        return _convert_one(plan, png_dir, item[0], item[1])

    results: Iterator[dict] = (ordered_thread_map(work, todo, workers, name="oanet-convert") if workers > 1
                               else map(work, todo))
    with open(records_path, "a", encoding="utf-8") as records_file:
        for record in track(results, total=len(todo), desc=f"convert {plan.split}", unit="img",
                            disable=not progress or not todo):
            records_file.write(json.dumps(record) + "\n")
            records_file.flush()  # what is on disk is what a rerun may skip
            done[record["png"]] = record

    ordered = [done[t.png_name] for t in plan.tasks]
    write_json_atomic(json_path, {
        "info": {"description": f"converted by oanet convert {plan.source}"},
        "images": [r["image"] for r in ordered],
        "annotations": [{"image_id": r["image"]["id"], "file_name": r["png"], "segments_info": r["segments_info"]}
                        for r in ordered],
        "categories": plan.categories,
    })
    report = split_report(plan, ordered, skipped)
    _merge_report(out / REPORT_NAME, plan.split, report)
    report["paths"] = {"panoptic_json": str(json_path), "panoptic_dir": str(png_dir),
                       "image_dir": str(plan.image_dir) if plan.image_dir else None,
                       "report": str(out / REPORT_NAME), "records": str(records_path)}
    return report


# --------------------------------------------------------------------------------------------
# the report


def split_report(plan: Plan, records: list[dict], skipped: int) -> dict:
    """Counts per category, what was dropped and why, and the per-image counters, summed."""
    per_category = {int(c["id"]): {"id": int(c["id"]), "name": c["name"], "isthing": int(c.get("isthing", 0)),
                                   "images": 0, "segments": 0, "crowd": 0, "area": 0} for c in plan.categories}
    dropped: dict[str, dict] = {}
    counters: dict[str, int] = {}
    segments = empty = 0
    for record in records:
        seen = set()
        segments += len(record["segments_info"])
        empty += not record["segments_info"]
        for seg in record["segments_info"]:
            entry = per_category[seg["category_id"]]
            entry["segments"] += 1
            entry["crowd"] += seg["iscrowd"]
            entry["area"] += seg["area"]
            seen.add(seg["category_id"])
        for category_id in seen:
            per_category[category_id]["images"] += 1
        for reason, (n_segments, n_pixels) in record["dropped"].items():
            entry = dropped.setdefault(reason, {"reason": reason, "images": 0, "segments": 0, "pixels": 0})
            entry["images"] += 1
            entry["segments"] += n_segments
            entry["pixels"] += n_pixels
        for name, value in record["counters"].items():
            counters[name] = counters.get(name, 0) + int(value)
    return {
        "source": plan.source, "split": plan.split, "settings": plan.settings,
        "images": len(records), "converted": len(records) - skipped, "skipped": skipped,
        "segments": segments, "empty_images": empty,
        "categories": list(per_category.values()),
        "dropped": sorted(dropped.values(), key=lambda d: -d["pixels"]),
        "counters": counters, "notes": list(plan.notes),
    }


def _merge_report(path: Path, split: str, report: dict) -> None:
    """``report`` as ``splits[split]`` of the report file, keeping the other splits' entries."""
    existing: dict = {}
    if path.is_file():
        try:
            existing = read_json(path, "convert report")
        except DataError:
            existing = {}
    splits = existing.get("splits") if isinstance(existing, dict) and isinstance(existing.get("splits"), dict) else {}
    splits[split] = report
    write_json_atomic(path, {"splits": splits}, indent=1)
