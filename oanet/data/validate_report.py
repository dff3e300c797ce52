"""What ``oanet check-data`` makes of a :class:`~oanet.data.validate.CheckResult`: the dataset summary,
the printed report, ``check_report.json``, overlays of a sample, and the ``--fix``ed JSON. No torch.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np

from oanet.data.validate import CheckResult
from oanet.data.validate_kinds import ERROR, INFO, KINDS, SEVERITIES, WARNING
from oanet.fileio import atomic_write_bytes, write_json_atomic

REPORT_NAME = "check_report.json"
FIXED_NAME = "panoptic_fixed.json"
FIXED_KINDS = ("unknown-image", "segment-not-in-png", "area-mismatch", "bbox-mismatch")  # what --fix repairs


# --------------------------------------------------------------------------------------------
# summary


def _distribution(values: np.ndarray) -> dict:
    if not values.size:
        return {"min": 0, "median": 0, "mean": 0.0, "p90": 0, "max": 0}
    return {
        "min": int(values.min()), "median": float(np.median(values)), "mean": round(float(values.mean()), 3),
        "p90": float(np.percentile(values, 90)), "max": int(values.max()),
    }


def summarise(result: CheckResult) -> dict:
    """Counts of the dataset, per category (images, instances, crowd, area) and instances per image.

    Areas are the PNGs' pixel counts where the PNG was read, else the JSON's. Segments of undeclared
    categories are counted in the totals only.
    """
    jobs, results = result.plan.jobs, result.results
    per_image = np.array([len(job.segment_ids) for job in jobs], dtype=np.int64)
    cats = np.concatenate([job.category_ids for job in jobs] or [np.zeros(0, np.int64)])
    crowd = np.concatenate([job.iscrowd for job in jobs] or [np.zeros(0, bool)])
    areas = np.concatenate([res.areas if res.decoded else np.nan_to_num(job.areas)
                            for job, res in zip(jobs, results)] or [np.zeros(0)])
    owner = np.repeat(np.arange(len(jobs)), per_image)
    known = np.array(sorted(result.plan.categories), dtype=np.int64)
    pos = np.minimum(np.searchsorted(known, cats), max(len(known) - 1, 0))
    ok = known[pos] == cats if len(known) else np.zeros(len(cats), dtype=bool)
    index, size = pos[ok], len(known)
    instances = np.bincount(index, weights=~crowd[ok], minlength=size)
    crowds = np.bincount(index, weights=crowd[ok], minlength=size)
    area = np.bincount(index, weights=areas[ok], minlength=size)
    images = np.bincount(np.unique(index * max(len(jobs), 1) + owner[ok]) // max(len(jobs), 1), minlength=size)
    categories = [
        {"id": int(cid), "name": str(cat["name"]), "isthing": int(bool(cat.get("isthing", 1))),
         "images": int(images[k]), "instances": int(instances[k]), "crowd": int(crowds[k]), "area": int(area[k])}
        for k, (cid, cat) in enumerate(sorted(result.plan.categories.items()))
    ]
    thing = {c["id"] for c in categories if c["isthing"]}
    is_thing = np.array([c in thing for c in cats.tolist()], dtype=bool)
    return {
        "images": len(result.data["images"]), "annotations": len(result.data["annotations"]),
        "checked_images": len(jobs), "segments": int(len(cats)),
        "thing_segments": int((is_thing & ~crowd).sum()), "stuff_segments": int((ok & ~is_thing).sum()),
        "crowd_segments": int(crowd.sum()),
        "categories": len(categories), "thing_categories": len(thing),
        "instances_per_image": _distribution(np.bincount(owner[is_thing & ~crowd], minlength=len(jobs))),
        "segments_per_image": _distribution(per_image),
        "per_category": categories,
    }


# --------------------------------------------------------------------------------------------
# printed report


def format_report(result: CheckResult, summary: dict) -> str:
    """The problems grouped by severity and kind, each with its count and first files, then a verdict."""
    p = result.problems
    lines = [
        f"checked {summary['checked_images']} of {summary['images']} images ({summary['segments']} segments, "
        f"{summary['categories']} categories) in {result.seconds:.2f} s with {result.workers} worker"
        f"{'s' if result.workers != 1 else ''}"
    ]
    for severity in SEVERITIES:
        for kind in p.kinds(severity):
            n, files = p.count(kind), len(p.files[kind])
            lines.append(f"{severity.upper():7s} {kind}: {n} in {files} place{'s' if files != 1 else ''}"
                         f" - {KINDS[kind][1]}")
            lines += [f"          {file}: {detail}" if detail else f"          {file}" for file, detail in p.examples[kind]]
            if files > len(p.examples[kind]):
                lines.append(f"          ... and {files - len(p.examples[kind])} more")
    errors, warnings = p.total(ERROR), p.total(WARNING)
    if errors:
        lines.append(f"{errors} error{'s' if errors != 1 else ''} in {len(p.kinds(ERROR))} kind(s), "
                     f"{warnings} warning(s): fix the errors before training or evaluating")
    elif warnings:
        lines.append(f"no error; {warnings} warning(s) in {len(p.kinds(WARNING))} kind(s)")
    else:
        lines.append("no problem found")
    return "\n".join(lines)


def report_dict(result: CheckResult, summary: dict, overlays: list, fix: Optional[dict]) -> dict:
    p = result.problems
    return {
        "panoptic_json": str(result.panoptic_json), "panoptic_dir": str(result.panoptic_dir),
        "image_dir": str(result.image_dir) if result.image_dir else None,
        "ok": not result.has_errors, "errors": p.total(ERROR), "warnings": p.total(WARNING), "info": p.total(INFO),
        "seconds": round(result.seconds, 3), "workers": result.workers,
        "problems": p.to_list(), "summary": summary, "overlays": [str(o) for o in overlays], "fix": fix,
    }


def write_report(result: CheckResult, summary: dict, out_dir: Path, overlays: list, fix: Optional[dict] = None) -> Path:
    return write_json_atomic(out_dir / REPORT_NAME, report_dict(result, summary, overlays, fix), indent=2)


# --------------------------------------------------------------------------------------------
# overlays


def sample_jobs(result: CheckResult, count: int) -> list[int]:
    """Positions in ``plan.jobs`` to draw: images with an error first (those want looking at), then
    images spread evenly over the split."""
    if count <= 0 or not result.plan.jobs:
        return []
    bad = [k for k, res in enumerate(result.results)
           if res.decoded and any(KINDS[kind][0] == ERROR for kind, *_ in res.problems)]
    chosen = bad[: (count + 1) // 2]
    readable = [k for k, res in enumerate(result.results) if res.decoded and k not in set(chosen)]
    if readable:
        step = max(1, len(readable) // max(1, count - len(chosen)))
        chosen += readable[::step][: count - len(chosen)]
    return chosen


def _picture(result: CheckResult, k: int):
    from PIL import Image

    from oanet.data.png_io import read_id_png
    from oanet.viz import draw_panoptic, with_title

    job, res = result.plan.jobs[k], result.results[k]
    ids = read_id_png(result.panoptic_dir / job.png_name)
    segments = [{"id": int(s), "category_id": int(c), "area": int(a)}
                for s, c, a in zip(job.segment_ids, job.category_ids, res.areas)]
    background = None
    if result.image_dir is not None:
        try:
            with Image.open(result.image_dir / job.image_file) as img:
                background = np.asarray(img.convert("RGB"))
        except Exception:  # noqa: BLE001 - already reported; draw the id map alone
            background = None
    if background is None or background.shape[:2] != ids.shape:
        background, alpha = np.zeros(ids.shape + (3,), dtype=np.uint8), 1.0  # the colourised id map
    else:
        alpha = 0.55
    # Names on segments of at least 1/300 of the picture: more would hide the segments they name.
    picture = draw_panoptic(background, ids, segments, result.plan.categories, alpha=alpha,
                            min_label_area=ids.size // 300)
    kinds = sorted({kind for kind, *_ in res.problems if KINDS[kind][0] != INFO})
    return with_title(picture, f"{job.png_name}: {', '.join(kinds) if kinds else 'no problem'}")


def write_overlays(result: CheckResult, out_dir: Path, count: int = 6) -> list[Path]:
    """Overlays of a sample of images in ``out_dir/overlays``: segments over the image (with
    ``--image-dir``) or the colourised id map, titled with the image's problems."""
    written = []
    for k in sample_jobs(result, count):
        try:
            picture = _picture(result, k)
        except Exception:  # noqa: BLE001 - a picture is a bonus; its PNG's problem is in the report
            continue
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        path = out_dir / "overlays" / f"{Path(result.plan.jobs[k].png_name).stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(atomic_write_bytes(path, buffer.getvalue()))
    return written


# --------------------------------------------------------------------------------------------
# --fix


def _fixed_segments(infos: list, job, res, changes: dict) -> Optional[list]:
    """The image's segments_info with areas and boxes from the PNG and absent segments dropped; None if
    nothing changes."""
    new, dropped = list(infos), set()
    for j, entry in enumerate(job.entries.tolist()):
        if res.areas[j] == 0:
            dropped.add(entry)
            continue
        seg, area, box = dict(infos[entry]), int(res.areas[j]), [int(v) for v in res.boxes[j]]
        if seg.get("area") != area:
            seg["area"], changes["areas"] = area, changes["areas"] + 1
        if seg.get("bbox") != box:  # [1, 2, 3, 4] == [1.0, 2.0, 3.0, 4.0]: integral floats are kept
            seg["bbox"], changes["bboxes"] = box, changes["bboxes"] + 1
        new[entry] = seg
    if dropped:
        changes["dropped_segments"] += len(dropped)
        new = [seg for i, seg in enumerate(new) if i not in dropped]
    return new if dropped or new != infos else None


def fix_json(result: CheckResult) -> tuple[dict, dict]:
    """``(fixed dataset, changes)``: areas and bboxes from the PNGs, segments absent from their PNG and
    annotations of unknown images dropped. Images whose PNG could not be read, or whose segment ids
    repeat (which segment is which?), are left as they are; ``result.data`` is not modified."""
    changes = {"areas": 0, "bboxes": 0, "dropped_segments": 0, "images": 0,
               "dropped_annotations": len(result.plan.unknown_image_annotations)}
    annotations = list(result.data["annotations"])
    for job, res in zip(result.plan.jobs, result.results):
        if not res.decoded or len(np.unique(job.segment_ids)) != len(job.segment_ids):
            continue
        ann = annotations[job.position]
        new = _fixed_segments(ann["segments_info"], job, res, changes)
        if new is not None:
            annotations[job.position] = {**ann, "segments_info": new}
            changes["images"] += 1
    drop = set(result.plan.unknown_image_annotations)
    fixed = {**result.data, "annotations": [a for k, a in enumerate(annotations) if k not in drop]}
    remaining = [k for k in result.problems.kinds(ERROR) if k not in FIXED_KINDS]
    changes["not_fixed"] = {k: result.problems.count(k) for k in remaining}
    return fixed, changes


def describe_fix(changes: dict, path: Path) -> str:
    done = [f"{changes['areas']} area(s) and {changes['bboxes']} bbox(es) rewritten from the PNGs",
            f"{changes['dropped_segments']} segment(s) absent from their PNG dropped",
            f"{changes['dropped_annotations']} annotation(s) of unknown images dropped"]
    text = f"fixed JSON written to {path} ({changes['images']} image(s) changed): " + "; ".join(done)
    if changes["not_fixed"]:
        text += "\nnot fixed (fix these by hand): " + ", ".join(f"{k} ({n})" for k, n in changes["not_fixed"].items())
    return text
