"""Resumable inference: a rerun of ``oanet predict`` / ``oanet evaluate`` into the same output folder
skips the images an earlier run (killed, or finished) completed, and ends with the same files.

Mechanism: after every sink has handled an image (its PNGs and overlay written, atomically), the
process appends one JSON line to its own file ``OUT/records/<time>-<random>-r<rank>-<pid>.jsonl``: the image's
output name, the size of each file written for it, and each sink's per-image state (what the sink
keeps in memory to write its JSON at the end: the COCO annotation, the order difference, ...). A line
is flushed to the operating system at once, so a killed process (SIGKILL included) loses at most the
image it was on; a line cut short is ignored.

A rerun reads every records file first. An image counts as done when its record comes from a run with
the same *settings* (the first line of each file: the model's weights hash, the label space, fusion
settings, orders, threshold, grid budget, batch size, overlays; a file from other settings is
ignored, and said so) and every file it lists exists with the size it had. Done images are handed
back to the sinks (on rank 0) instead of being predicted, the others are predicted, sharded over the
ranks under torchrun, so any number of processes can resume any number's work; the JSON files are
written from all records in the source's order, as by an uninterrupted run.

A sink is resumable when it keeps one record per image in ``self.records`` (a tuple starting with the
image's index; the rest JSON-able), has ``resume_state(item)`` / ``resume_restore(index, state)``, or
says ``resumable = True`` (it keeps nothing per image); ``outputs(item)`` lists the files it wrote for
the image (checked on resume). A sink that says ``resumable = False`` (results kept in memory), or an
unknown one, turns resume off for that run. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from oanet.inference.loop import ImageItem, Ranks

RECORDS = "records"
FORMAT = 1


def predictor_identity(predictor: Any) -> Optional[str]:
    """A hash of what the predictor computes with: a PyTorch model's weights, or an ONNX file's bytes;
    None when neither is known (resume is then off)."""
    digest = hashlib.blake2b(digest_size=16)
    model = getattr(predictor, "model", None)
    path = getattr(predictor, "path", None)
    if model is not None and hasattr(model, "state_dict"):
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    elif path is not None and Path(path).is_file():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    else:
        return None
    return digest.hexdigest()


def run_settings(predictor: Any, **job: Any) -> Optional[dict]:
    """What must be equal for an earlier run's outputs to be this run's: the predictor (weights, label
    space, fusion settings, threshold, grid budget) and ``job`` (the command's options). None: unknown."""
    import dataclasses

    identity = predictor_identity(predictor)
    if identity is None:
        return None
    fusion = getattr(predictor, "fusion", None)
    return {
        "format": FORMAT,
        "predictor": type(predictor).__name__,
        "weights": identity,
        "label_space": predictor.label_space.to_dict(),
        "stuff_classes": getattr(predictor, "stuff_classes", None),
        "fusion": dataclasses.asdict(fusion) if dataclasses.is_dataclass(fusion) else None,
        "fusion_pixels": getattr(predictor, "fusion_pixels", None),
        "precision": getattr(predictor, "precision", None),
        **job,
    }


def _canonical(settings: Mapping) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _state(sink: Any, item: ImageItem) -> Any:
    if hasattr(sink, "resume_state"):
        return sink.resume_state(item)
    records = getattr(sink, "records", None)
    if records and records[-1][0] == item.index:
        return list(records[-1][1:])
    return None


def _restore(sink: Any, index: int, state: Any) -> None:
    if hasattr(sink, "resume_restore"):
        sink.resume_restore(index, state)
    elif state is not None:
        sink.records.append((index, *state))


def _resumable(sink: Any) -> bool:
    """A sink says so (``resumable``), or keeps per-image records: an unknown sink might keep state
    that a skipped image would never reach, so it turns resume off."""
    flag = getattr(sink, "resumable", None)
    if flag is not None:
        return bool(flag)
    return hasattr(sink, "resume_state") or hasattr(sink, "records")


class Resume:
    """The records of ``out_dir`` for one run: which images are done, and the sink that writes new ones.

    ``settings`` None (an unknown predictor) or a sink that cannot be resumed: nothing is skipped and no
    record is written.
    """

    def __init__(self, out_dir: str | Path, settings: Optional[dict], sinks: Sequence[Any], ranks: Ranks) -> None:
        self.folder = Path(out_dir) / RECORDS
        self.settings = settings
        self.ranks = ranks
        blocked = [getattr(s, "name", type(s).__name__) for s in sinks if not _resumable(s)]
        self.enabled = settings is not None and not blocked
        self.reason = ("the predictor's weights are unknown" if settings is None
                       else f"{', '.join(blocked)} cannot be resumed" if blocked else "")
        self.records: dict[str, dict] = {}
        self.ignored_files = 0
        if self.enabled:
            self._load()
        # Every rank has read the folder before any rank writes to it: all agree on what is done.
        ranks.barrier()

    def _load(self) -> None:
        if not self.folder.is_dir():
            return
        wanted = _canonical(self.settings)
        for path in sorted(self.folder.glob("*.jsonl")):
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            try:
                header = json.loads(lines[0]) if lines else None
            except json.JSONDecodeError:
                header = None
            if not header or _canonical(header.get("settings", {})) != wanted:
                self.ignored_files += 1
                continue
            for line in lines[1:]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # cut short by a kill
                if isinstance(record, dict) and "name" in record:
                    self.records[record["name"]] = record

    def valid(self, record: dict) -> bool:
        """Every file the record lists exists with the size it had."""
        for relative, size in record["files"].items():
            path = self.folder.parent / relative
            try:
                if path.stat().st_size != size:
                    return False
            except OSError:
                return False
        return True

    def done(self, file_names: Sequence[str]) -> list[int]:
        """Indices of the source's images (by output file name) with a valid record."""
        if not self.enabled:
            return []
        return [i for i, name in enumerate(file_names) if name in self.records and self.valid(self.records[name])]

    def restore(self, indices: Iterable[int], file_names: Sequence[str], sinks: Sequence[Any]) -> None:
        """Hand the done images' records to the sinks (rank 0 only: records are gathered there)."""
        if not self.ranks.is_main:
            return
        for index in indices:
            states = self.records[file_names[index]]["sinks"]
            for sink in sinks:
                _restore(sink, index, states.get(getattr(sink, "name", "")))

    def writer(self, sinks: Sequence[Any]) -> "RecordWriter":
        """The sink (put it last) that appends this process's records."""
        return RecordWriter(self, sinks)

    def notice(self, command: str, done: int, total: int) -> None:
        """One line on stderr (rank 0): how many images an earlier run had done, and what was ignored."""
        if not self.ranks.is_main:
            return
        if self.ignored_files:
            print(f"oanet {command}: {self.ignored_files} records file(s) in {self.folder} come from a run with other "
                  "settings (model, orders, threshold, ...): not reused", file=sys.stderr)
        if done:
            print(f"oanet {command}: {done} of {total} images already done in {self.folder.parent} (records in "
                  f"{self.folder}): skipped; predicting the other {total - done}", file=sys.stderr)


class RecordWriter:
    """The last sink: after the others have handled an image, appends its record to this process's file."""

    name = "records"

    def __init__(self, resume: Resume, sinks: Sequence[Any]) -> None:
        self.resume = resume
        self.sinks = [s for s in sinks if s is not self]
        self.file = None

    def _open(self):
        folder = self.resume.folder
        folder.mkdir(parents=True, exist_ok=True)
        # A new file per process and run ("x": never another run's, even one in the same second).
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        path = folder / f"{stamp}-r{self.resume.ranks.rank}-{os.getpid()}.jsonl"
        self.file = open(path, "x", encoding="utf-8")
        self._append({"settings": self.resume.settings})

    def _append(self, data: dict) -> None:
        self.file.write(json.dumps(data, default=_plain) + "\n")
        self.file.flush()  # at the OS: a killed process loses nothing written so far

    def process(self, item: ImageItem, results: Mapping) -> None:
        if not self.resume.enabled:
            return
        if self.file is None:
            self._open()
        out_dir = self.resume.folder.parent
        files = {}
        for sink in self.sinks:
            for path in getattr(sink, "outputs", lambda _: [])(item):
                files[str(Path(path).relative_to(out_dir))] = Path(path).stat().st_size
        states = {sink.name: _state(sink, item) for sink in self.sinks}
        self._append({"name": item.file_name, "image_id": item.image_id, "files": files, "sinks": states})

    def finalize(self, ranks: Ranks) -> Optional[Path]:
        if self.file is None:
            return None
        self.file.close()
        return Path(self.file.name)


def plan(out_dir: str | Path, predictor: Any, sinks: Sequence[Any], file_names: Sequence[str], ranks: Ranks,
         command: str, enabled: bool = True, **job: Any) -> tuple[list[int], list, int]:
    """Resume a run into ``out_dir``: ``(this rank's indices to predict, the sinks with the record writer
    last, how many images were done)``. The done images' records go to the sinks (rank 0) and the rest
    of the images are sharded over the ranks. ``enabled`` False: every image is predicted again (and
    recorded)."""
    resume = Resume(out_dir, run_settings(predictor, command=command, **job), sinks, ranks)
    done = resume.done(file_names) if enabled else []
    resume.restore(done, file_names, sinks)
    resume.notice(command, len(done), len(file_names))
    skip = set(done)
    todo = [i for i in range(len(file_names)) if i not in skip]
    return [todo[i] for i in ranks.shard(len(todo))], [*sinks, resume.writer(sinks)], len(done)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in a record (JSON has no int64)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


__all__ = ["Resume", "RecordWriter", "plan", "run_settings", "predictor_identity", "RECORDS"]
