"""``oanet predict``: panoptic PNG + COCO JSON and overlay pictures for image files, folders and videos.

Layout of ``out_dir`` for one order (``--order srm`` or ``score``)::

    panoptic.json                COCO panoptic: images, annotations (segments_info), categories
    panoptic/<name>.png          segment ids as RGB (id = R + 256 G + 256^2 B)
    overlays/<name>.jpg          segments coloured over the image, outlined and named
    skipped.json                 the images that could not be read, with the reason (only when some were)
    records/*.jsonl              one line per image done, so that a rerun skips it (:mod:`oanet.inference.resume`)

With ``--order both`` the PNGs and JSON of each order go to ``score_order/`` and ``srm_order/`` and
each overlay shows the heuristic and the SRM result side by side. Videos: see
:mod:`oanet.inference.video`. A composition of the inference loop (:mod:`oanet.inference.loop`) and
its sinks; the predictor may be :class:`oanet.Predictor` or :class:`oanet.runtime.OnnxPredictor`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from oanet.data.images import VIDEO_EXTENSIONS, is_video, list_image_files
from oanet.inference.loop import ImageFiles, current_ranks, run_inference
from oanet.inference.sinks import OverlayWriter, PanopticJsonWriter
from oanet.errors import ConfigError, DataError, make_dir
from oanet.fileio import write_json_atomic
from oanet.orders import order_dir


def split_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(image files, video files)`` named directly or found (non-recursively, sorted) in folders.

    Missing paths and folders without images raise before any model is loaded.
    """
    if not inputs:
        raise DataError("no input images given")
    videos = [Path(p) for p in inputs if Path(p).is_file() and is_video(p)]
    others = [p for p in inputs if not (Path(p).is_file() and is_video(p))]
    images = list_image_files(others) if others else []
    if not images and not videos:
        raise DataError(f"no images or videos ({', '.join(VIDEO_EXTENSIONS)}) among the inputs")
    return images, videos


def write_skipped(out_dir: Path, skipped: list[dict], ranks) -> list[dict]:
    """``out_dir/skipped.json`` on rank 0 when images were skipped; a stale one from an earlier run in the
    folder is removed, so the file always describes the latest run."""
    if not ranks.is_main:
        return []
    path = out_dir / "skipped.json"
    if skipped:
        write_json_atomic(path, skipped, indent=2)
    else:
        path.unlink(missing_ok=True)
    return skipped


def predict(
    predictor: Any,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    batch_size: int = 1,
    overlays: bool = True,
    loader_threads: int = 2,
    progress: bool = True,
    strict: bool = False,
    resume: bool = True,
) -> dict:
    """Predict every image (and video) in ``inputs`` and write PNGs, JSON and overlays under ``out_dir``.

    An image that cannot be read is left out and listed in ``out_dir/skipped.json`` (the JSON lists the
    images predicted); with ``strict`` it is an error instead, as in evaluation. A rerun into the same
    ``out_dir`` skips the images an earlier run completed (``resume``; :mod:`oanet.inference.resume`)
    and writes the files an uninterrupted run writes. Returns ``{"images": n predicted (resumed ones
    included), "resumed": n skipped as done, "skipped": [{"file", "reason"}], "panoptic_json": {order:
    path}, "overlay_dir": path or None, "videos": {video: summary}}`` (paths, counts and the list on rank 0
    only under torchrun).
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    images, videos = split_inputs(inputs)
    out_dir = make_dir(out_dir)
    ranks = current_ranks()
    orders = predictor.orders
    summary: dict = {"images": len(images), "resumed": 0, "skipped": [], "panoptic_json": {}, "overlay_dir": None,
                     "videos": {}}
    if images:
        skipped: list[dict] = []

        def skip(path: Path, error: Exception) -> None:
            message = str(error)
            reason = message[len(f"{path}: "):] if message.startswith(f"{path}: ") else message
            skipped.append({"file": str(path), "reason": reason})

        files = ImageFiles.from_paths(images)
        writers = [PanopticJsonWriter(order_dir(out_dir, o, orders), o, predictor.label_space) for o in orders]
        sinks: list = list(writers)
        if overlays:
            sinks.append(OverlayWriter(out_dir / "overlays", orders))
        from oanet.inference.resume import plan

        indices, sinks, summary["resumed"] = plan(out_dir, predictor, sinks, files.file_names, ranks, "predict",
                                                  enabled=resume, orders=list(orders), batch_size=batch_size,
                                                  overlays=overlays)
        mine = files.items(indices, loader_threads, on_error=None if strict else skip)
        outcome = run_inference(predictor, mine, sinks, total=len(indices), batch_size=batch_size, progress=progress,
                                desc="predict", ranks=ranks)
        summary["panoptic_json"] = {w.order: outcome[w.name] for w in writers}
        summary["overlay_dir"] = str(out_dir / "overlays") if overlays else None
        summary["skipped"] = write_skipped(out_dir, [s for part in ranks.gather(skipped) or [] for s in part], ranks)
        summary["images"] = len(images) - len(summary["skipped"])
    if videos:
        from oanet.inference.video import predict_video

        if ranks.world_size > 1:
            raise ConfigError("videos are predicted by one process: run `oanet predict` on a video without torchrun")
        for video in videos:
            summary["videos"][str(video)] = predict_video(predictor, video, out_dir, overlays=overlays,
                                                          batch_size=batch_size, progress=progress)
    ranks.barrier()
    return summary
