"""One inference loop for ``oanet predict``, ``oanet evaluate`` and ``oanet demo``.

A predictor (:class:`oanet.Predictor` or :class:`oanet.runtime.OnnxPredictor`) runs over a *source*
of images and every result is handed to *sinks* (:mod:`oanet.inference.sinks`): a COCO panoptic writer
per order, overlays, the order-difference statistics, PQ. This is detectron2's
``inference_on_dataset`` + ``DatasetEvaluator`` split, without its registries.

Under ``torchrun`` the images are sharded over the ranks in contiguous blocks (no padding with
duplicates, unlike ``DistributedSampler``); each rank writes its own per-image files, and the sinks
gather their per-image records to rank 0, which writes the JSON files and computes PQ, in the
source's order. So N processes write the same files as one. Multi-node runs need an output folder
that every node sees (a shared filesystem).

Nothing here imports torch: the ONNX runtime path runs the same loop on a machine without it. Images
are decoded by a small thread pool ahead of the predictor (Pillow and numpy release the GIL).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from oanet.data.images import load_rgb_image
from oanet.errors import DataError
from oanet.progress import Progress


@dataclass
class ImageItem:
    """One loaded image of a source. ``index`` is its position in the whole source (all ranks)."""

    index: int
    image_id: Any
    file_name: str
    rgb: np.ndarray  # HxWx3 uint8 (or float32 in 0..1)
    where: str  # how errors name it: the path, or "clip.mp4 frame 12"
    extra: dict = field(default_factory=dict)  # e.g. a video frame's time

    def record(self) -> dict:
        """The COCO ``images`` entry."""
        return {"id": self.image_id, "file_name": self.file_name, "height": int(self.rgb.shape[0]),
                "width": int(self.rgb.shape[1])}


class ImageFiles:
    """Image files with their COCO ``image_id`` and ``file_name`` (outputs are named after it).

    ``sizes`` (``(width, height)`` per image, from an annotation) are checked when an image is read:
    an image of another size would be scored against the wrong pixels.
    """

    def __init__(self, paths: Sequence[str | Path], image_ids: Sequence[Any], file_names: Sequence[str],
                 sizes: Optional[Sequence[tuple[int, int]]] = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.image_ids = list(image_ids)
        self.file_names = list(file_names)
        self.sizes = list(sizes) if sizes is not None else None

    @classmethod
    def from_paths(cls, paths: Sequence[Path]) -> "ImageFiles":
        """Ids 1..N; repeated file stems get ``_2``, ``_3``... so outputs never collide."""
        names = unique_output_names(paths)
        return cls(paths, range(1, len(paths) + 1), [n + Path(p).suffix for n, p in zip(names, paths)])

    @classmethod
    def from_panoptic_json(cls, panoptic_json: Path, image_dir: Path, max_images: Optional[int] = None) -> "ImageFiles":
        """The images a COCO panoptic JSON annotates (sorted by id), with the PNG names it uses."""
        from oanet.data.coco_panoptic import read_images

        images = sorted(read_images(panoptic_json), key=lambda img: (isinstance(img.id, str), img.id))
        if max_images is not None:
            images = images[: max(0, max_images)]
        if not images:
            raise DataError(f"{panoptic_json}: no images to evaluate")
        return cls([Path(image_dir) / img.file_name for img in images], [img.id for img in images],
                   [img.file_name for img in images], sizes=[(img.width, img.height) for img in images])

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> ImageItem:
        size = self.sizes[index] if self.sizes is not None else None
        rgb = load_rgb_image(self.paths[index], size)
        return ImageItem(index, self.image_ids[index], self.file_names[index], rgb, str(self.paths[index]))

    def items(self, indices: Sequence[int], threads: int = 2,
              on_error: Optional[Callable[[Path, Exception], None]] = None) -> Iterator[ImageItem]:
        """The images at ``indices``, in order, decoded up to ``2 * threads`` ahead.

        An image that cannot be read raises its DataError (or FileNotFoundError) here, in order; with
        ``on_error`` it is passed to ``on_error(path, error)`` instead and left out.
        """
        def load(index: int) -> tuple[Optional[ImageItem], Optional[Exception]]:
            try:
                return self.load(index), None
            except (DataError, FileNotFoundError) as exc:
                if on_error is None:
                    raise
                return None, exc

        def loaded(outcome: tuple[Optional[ImageItem], Optional[Exception]], index: int) -> Optional[ImageItem]:
            item, error = outcome
            if error is not None:
                on_error(self.paths[index], error)
            return item

        if threads <= 0:
            for i in indices:
                item = loaded(load(i), i)
                if item is not None:
                    yield item
            return
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="oanet-load") as pool:
            window = 2 * threads
            pending = [pool.submit(load, i) for i in indices[:window]]
            for k in range(len(indices)):
                item = loaded(pending[k].result(), indices[k])
                if k + window < len(indices):
                    pending.append(pool.submit(load, indices[k + window]))
                pending[k] = None  # let the decoded image go once it is consumed
                if item is not None:
                    yield item


def unique_output_names(paths: Sequence[Path]) -> list[str]:
    """File stems to name each image's outputs by; repeated stems get a ``_2``, ``_3``... suffix."""
    names, used = [], set()
    for path in paths:
        stem = Path(path).stem
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        names.append(name)
    return names


# --------------------------------------------------------------------------------------------
# ranks


@dataclass(frozen=True)
class Ranks:
    """This process's place among the inference processes, and how to gather objects to rank 0."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> list[int]:
        """This rank's contiguous block of ``range(n)``; blocks differ in size by at most one."""
        return list(range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size))

    def gather(self, obj: Any) -> Optional[list]:
        """Every rank's ``obj`` on rank 0 (a list indexed by rank); None on the other ranks."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def current_ranks() -> Ranks:
    """The ranks of an initialised torch.distributed process group, else one process (no torch import)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("WORLD_SIZE > 1 but no process group: call oanet.distributed.init_distributed first")
    return Ranks()


# --------------------------------------------------------------------------------------------
# the loop


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_inference(
    predictor: Any,
    items: Iterable[ImageItem],
    sinks: Sequence[Any],
    *,
    total: Optional[int] = None,
    batch_size: int = 1,
    orders: Optional[Sequence[str]] = None,
    progress: bool = True,
    desc: str = "inference",
    ranks: Optional[Ranks] = None,
) -> dict[str, Any]:
    """Predict every item, feed each result to every sink, then finalise the sinks in order.

    ``items`` are this rank's images (see :meth:`ImageFiles.items` and :meth:`Ranks.shard`);
    ``orders`` default to the predictor's. Returns ``{sink.name: sink.finalize(ranks)}``: what each
    sink produced (on rank 0; None on the others for sinks that only rank 0 completes).
    """
    ranks = ranks or current_ranks()
    orders = tuple(orders or predictor.orders)
    with Progress(total=total, desc=desc, unit="img", disable=not (progress and ranks.is_main)) as bar:
        for batch in batched(items, batch_size):
            results = predictor.predict_arrays(
                [item.rgb for item in batch], [(item.image_id, item.file_name) for item in batch],
                [item.where for item in batch], orders,
            )
            for item, result in zip(batch, results):
                for sink in sinks:
                    sink.process(item, result)
            bar.update(len(batch))
    return {sink.name: sink.finalize(ranks) for sink in sinks}
