"""A split's annotations as flat columns that forked DataLoader workers share, and their cache file. No torch.

:func:`load_split_index` checks and indexes the JSONs once (:mod:`oanet.data.split_build`). Given a
``cache_dir`` it writes the columns there (:mod:`oanet.data.store`) and memory-maps them: the next
process that opens the same JSONs (another rank, a resumed run) maps the file instead of parsing
them, and every process on the node reads the same pages. A cache is used only when the
JSONs' path, size, modification time and a hash of their first and last MiB match the ones it was built
from (and oanet's column schema is the same); otherwise, or when the file is damaged, it is rebuilt.
"""

from __future__ import annotations

import gc
import hashlib
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, overload

import numpy as np

from oanet.data.panoptic_json import ImageInfo, PanopticAnnotation
from oanet.data.split_build import SCHEMA, build_columns
from oanet.data.store import CorruptFileError, read_columns, write_columns

SAMPLE_BYTES = 1 << 20
INT64 = np.iinfo(np.int64)


class SplitIndex:
    """The columns of one split, with per-image accessors by position ``0..len-1`` (``images`` order).

    Built in memory (:func:`build_columns`) or memory-mapped from a cache file (``path``). Pickling a
    file-backed index pickles its path (a spawned worker maps the file again), not its contents.
    """

    def __init__(self, columns: dict, meta: dict, path: Optional[Path] = None):
        self.columns = {name: np.asarray(values) if isinstance(values, np.ndarray) else _joined(values)
                        for name, values in columns.items()}
        self.meta = meta
        self.path = path
        ids = meta.get("image_ids")
        # Integer ids (COCO) are looked up in the sorted id column; other ids in a dict built here (whose
        # pages a worker copies as it reads them: fine for the small datasets that use string ids).
        self._id_position = None if ids is None else {image_id: i for i, image_id in enumerate(ids)}
        self.images = ImageTable(self)

    @classmethod
    def open(cls, path: Path) -> "SplitIndex":
        """The index in a cache file; CorruptFileError naming it when it is damaged or from another schema."""
        columns, meta = read_columns(path)
        schema = meta.get("schema") if isinstance(meta, dict) else None
        if schema != SCHEMA:
            raise CorruptFileError(f"{path}: annotation cache of schema {schema!r}, this oanet writes {SCHEMA}")
        problem = _column_problem(columns, meta)
        if problem:
            raise CorruptFileError(f"{path}: damaged annotation cache ({problem})")
        return cls(columns, meta, path)

    def __reduce__(self):
        if self.path is not None:
            return SplitIndex.open, (self.path,)
        return SplitIndex, (self.columns, self.meta)

    def __len__(self) -> int:
        return len(self.columns["widths"])

    @property
    def has_instances(self) -> bool:
        return bool(self.meta["has_instances"])

    @property
    def raw_categories(self) -> list:
        return self.meta["categories"]

    # lookups -----------------------------------------------------------------------------------
    def position(self, image_id: Any) -> int:
        """The image's position in ``images``, -1 when no image has that id (same matching as a dict:
        ``1.0`` finds image ``1``)."""
        if self._id_position is not None:
            try:
                return self._id_position.get(image_id, -1)
            except TypeError:  # unhashable
                return -1
        key = _as_int(image_id)
        if key is None:
            return -1
        sorted_ids = self.columns["sorted_ids"]
        k = int(np.searchsorted(sorted_ids, key))
        if k < len(sorted_ids) and sorted_ids[k] == key:
            return int(self.columns["id_order"][k])
        return -1

    def image_id(self, i: int) -> Any:
        if self._id_position is not None:
            return self.meta["image_ids"][i]
        return int(self.columns["image_ids"][i])

    def image(self, i: int) -> ImageInfo:
        return ImageInfo(self.image_id(i), self._text("file_names", i), int(self.columns["widths"][i]),
                         int(self.columns["heights"][i]))

    def annotation(self, i: int) -> PanopticAnnotation:
        """The image's segments (fresh, writable arrays: nothing refers to the shared columns)."""
        c = self.columns
        a, b = int(c["segment_offsets"][i]), int(c["segment_offsets"][i + 1])
        return PanopticAnnotation(
            image_id=self.image_id(i),
            file_name=self._text("png_names", i),
            segment_ids=c["segment_ids"][a:b].copy(),
            category_ids=c["category_ids"][a:b].astype(np.int64),
            iscrowd=c["iscrowd"][a:b].copy(),
            areas=c["areas"][a:b].copy(),
            bboxes=c["bboxes"][a:b].copy(),
        )

    def png_name(self, i: int) -> str:
        """The ``file_name`` of the image's panoptic annotation ("" when the JSON gives none)."""
        return self._text("png_names", i)

    def instance_record(self, i: int) -> bytes:
        """The image's instance annotations as :func:`oanet.data.instances.index_instances` wrote them
        (empty: none)."""
        a, b = self.columns["instances_offsets"][i : i + 2]
        return self.columns["instances"][a:b].tobytes()

    def category_ids(self) -> np.ndarray:
        """The category id of every segment of every image (int32, shared: do not write)."""
        return self.columns["category_ids"]

    def aspect_ratios(self) -> list[float]:
        return (self.columns["widths"] / self.columns["heights"]).tolist()

    def _text(self, name: str, i: int) -> str:
        a, b = self.columns[f"{name}_offsets"][i : i + 2]
        return self.columns[name][a:b].tobytes().decode()


class ImageTable(Sequence[ImageInfo]):
    """``split.images``: the images in the JSON's order, each ``ImageInfo`` made when asked for (a list of
    118 k Python objects would be copied page by page into every worker that reads it)."""

    def __init__(self, index: SplitIndex):
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, i: int) -> ImageInfo: ...
    @overload
    def __getitem__(self, i: slice) -> list[ImageInfo]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._index.image(k) for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image {i} out of range for {n} images")
        return self._index.image(i % n)

    def __iter__(self) -> Iterator[ImageInfo]:
        return (self._index.image(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (ImageTable, list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{len(self)} images>"


def _as_int(image_id: Any) -> Optional[int]:
    if isinstance(image_id, (float, np.floating)) and float(image_id).is_integer():
        image_id = int(image_id)
    if isinstance(image_id, (int, np.integer)) and INT64.min <= image_id <= INT64.max:
        return int(image_id)
    return None


def _column_problem(columns: dict, meta: dict) -> str:
    """What makes the columns inconsistent (a cache is checked when opened), or ""."""
    ragged = {"segment_offsets": ["segment_ids", "category_ids", "iscrowd", "areas", "bboxes"],
              "file_names_offsets": ["file_names"], "png_names_offsets": ["png_names"]}
    if meta.get("has_instances"):
        ragged["instances_offsets"] = ["instances"]
    names = ["widths", "heights", *ragged, *(n for group in ragged.values() for n in group)]
    if meta.get("image_ids") is None:
        names += ["image_ids", "id_order", "sorted_ids"]
    missing = [n for n in names if n not in columns]
    if missing:
        return f"no column {missing[0]}"
    n = len(columns["widths"])
    if meta.get("image_ids") is not None and len(meta["image_ids"]) != n:
        return "image ids"
    for offsets_name, values in ragged.items():
        offsets = columns[offsets_name]
        if offsets.shape != (n + 1,) or offsets[0] != 0 or (np.diff(offsets) < 0).any():
            return f"bad {offsets_name}"
        if any(len(columns[v]) != offsets[-1] for v in values):
            return f"columns of {offsets_name} do not match it"
    return ""


def _joined(chunks: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# the cache


def source_key(path: Path) -> dict:
    """What identifies a JSON's content cheaply: resolved path, size, mtime and a hash of its first and
    last MiB. FileNotFoundError (as when reading it) when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: JSON file not found")
    stat = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLE_BYTES))
        if stat.st_size > SAMPLE_BYTES:
            f.seek(max(SAMPLE_BYTES, stat.st_size - SAMPLE_BYTES))
            digest.update(f.read())
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample": digest.hexdigest()}


def cache_path(cache_dir: Path, panoptic_json: Path, instances_json: Optional[Path]) -> Path:
    """One file per pair of JSONs: the panoptic JSON's stem and a hash of both resolved paths."""
    paths = [str(Path(panoptic_json).resolve()), str(Path(instances_json).resolve()) if instances_json else ""]
    name = hashlib.blake2b("\n".join(paths).encode(), digest_size=8).hexdigest()
    return Path(cache_dir) / f"{Path(panoptic_json).stem}-{name}.oanet-index"


def load_split_index(panoptic_json: Path, instances_json: Optional[Path] = None,
                     cache_dir: Optional[Path] = None) -> SplitIndex:
    """The split's index: from the cache in ``cache_dir`` when it matches the JSONs, else built from
    them (and, with a ``cache_dir``, written there and mapped). DataError naming the JSON for bad data."""
    if cache_dir is None:
        index = SplitIndex(*build_columns(panoptic_json, instances_json))
        _release_freed_memory()
        return index
    sources = [source_key(panoptic_json)] + ([source_key(instances_json)] if instances_json else [])
    path = cache_path(cache_dir, panoptic_json, instances_json)
    if path.is_file():
        try:
            index = SplitIndex.open(path)
            if index.meta.get("sources") == sources:
                return index
            del index
        except (CorruptFileError, OSError) as exc:
            warnings.warn(f"{exc}: rebuilding the annotation cache", stacklevel=3)
    tic = time.perf_counter()
    columns, meta = build_columns(panoptic_json, instances_json)
    meta["sources"] = sources
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        write_columns(path, columns, meta)
    except OSError as exc:
        warnings.warn(f"{path}: cannot write the annotation cache ({exc.strerror or exc}); keeping it in memory", stacklevel=3)
        return SplitIndex(columns, meta)
    del columns
    _release_freed_memory()
    print(f"oanet: indexed {panoptic_json}{' and ' + str(instances_json) if instances_json else ''} in "
          f"{time.perf_counter() - tic:.0f} s; cached in {path}", file=sys.stderr)
    return SplitIndex.open(path)


def _release_freed_memory() -> None:
    """Hand the parsed JSON's freed memory back to the OS. glibc keeps freed small blocks in its heap,
    and a process that DataLoader workers are forked from should not carry gigabytes it no longer uses."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to do
            pass

