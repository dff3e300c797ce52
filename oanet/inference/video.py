"""Panoptic segmentation of videos, frame by frame, with PyAV (the optional extra ``oanet[video]``).

``oanet predict clip.mp4 --out DIR`` writes, for one order (``DIR/clip/<order>_order/`` with
``--order both``)::

    DIR/clip/panoptic/000000.png      panoptic PNG per frame (id = R + 256 G + 256^2 B)
    DIR/clip/segments/000000.json     {"frame", "time", "width", "height", "order", "segments"} per frame
    DIR/clip/panoptic.json            COCO panoptic JSON of all frames (image id = frame number + 1)
    DIR/clip_overlay.mp4              the overlays as a video, at the source's frame rate

Frames are decoded and predicted one batch at a time, so memory does not grow with the video.
No torch here (the ONNX runtime predicts videos too).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from oanet.inference.loop import ImageItem, Ranks, run_inference
from oanet.inference.sinks import PanopticJsonWriter, overlay_picture
from oanet.errors import ConfigError, DataError, make_dir
from oanet.fileio import atomic_write_bytes
from oanet.orders import RESERVED_FOLDERS, order_dir
from oanet.result import PanopticResult



def import_av():
    try:
        import av
    except ImportError:
        raise ConfigError("reading and writing videos needs PyAV: pip install 'oanet[video]'") from None
    return av


class VideoFrames:
    """The frames of a video file as :class:`ImageItem` (RGB uint8), decoded lazily in order."""

    def __init__(self, path: str | Path) -> None:
        av = import_av()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: video not found")
        try:
            self.container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise DataError(f"{self.path}: not a readable video ({exc})") from None
        if not self.container.streams.video:
            self.container.close()
            raise DataError(f"{self.path}: holds no video stream")
        self.stream = self.container.streams.video[0]
        self.fps = Fraction(self.stream.average_rate or self.stream.guessed_rate or 25)
        self.frames = int(self.stream.frames or 0) or None  # None: the container does not say
        self.decoded = 0

    def items(self) -> Iterator[ImageItem]:
        av = import_av()
        index = -1
        try:
            for index, frame in enumerate(self.container.decode(self.stream)):
                rgb = frame.to_ndarray(format="rgb24")
                time = float(frame.time) if frame.time is not None else index / float(self.fps)
                self.decoded = index + 1
                yield ImageItem(index, index + 1, f"{index:06d}.png", rgb, f"{self.path} frame {index}",
                                {"time": time})
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: cannot decode frame {index + 1} ({exc})") from None
        finally:
            self.container.close()


class SegmentsJsonWriter:
    """``folder/<frame>.json`` per frame: the frame's time and its segments (names, scores, boxes)."""

    def __init__(self, folder: str | Path, order: str) -> None:
        self.name = f"{order}_segments"
        self.folder = make_dir(folder)
        self.order = order

    def process(self, item: ImageItem, results: Mapping[str, PanopticResult]) -> None:
        import json

        result = results[self.order]
        data = {"frame": item.index, "time": item.extra.get("time"), "width": result.width,
                "height": result.height, "order": self.order, "segments": result.segments}
        atomic_write_bytes(self.folder / (Path(item.file_name).stem + ".json"), json.dumps(data).encode())

    def finalize(self, ranks: Ranks) -> Path:
        return self.folder


class VideoOverlayWriter:
    """The overlay pictures encoded as a video (H.264 where FFmpeg has it, else MPEG-4 Part 2),
    written to a temporary file and renamed at the end, so a killed run leaves no half video."""

    def __init__(self, path: str | Path, fps: Fraction, orders: Sequence[str]) -> None:
        self.av = import_av()
        self.name = "overlay_video"
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.fps = fps
        self.orders = tuple(orders)
        self.container = None
        self.stream = None
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
        self.container = self.av.open(str(self.tmp), mode="w", format="mp4")
        self.stream = self.container.add_stream(codec, rate=self.fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"

    def process(self, item: ImageItem, results: Mapping[str, PanopticResult]) -> None:
        picture = np.asarray(overlay_picture(item.rgb, results, self.orders))
        # yuv420p needs even sides: pad the last row/column with black.
        h, w = picture.shape[:2]
        picture = np.pad(picture, ((0, h % 2), (0, w % 2), (0, 0)))
        if self.container is None:
            self._open(picture.shape[1], picture.shape[0])
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def finalize(self, ranks: Ranks) -> Optional[Path]:
        if self.container is None:
            return None
        for packet in self.stream.encode():  # flush the encoder
            self.container.mux(packet)
        self.container.close()
        os.replace(self.tmp, self.path)
        return self.path


def video_out_dir(out_dir: Path, video: Path) -> Path:
    stem = video.stem if video.stem not in RESERVED_FOLDERS else f"{video.stem}_video"
    return out_dir / stem


def predict_video(predictor: Any, video: str | Path, out_dir: str | Path, *, overlays: bool = True,
                  batch_size: int = 1, progress: bool = True) -> dict:
    """Predict every frame of ``video``; see the module docstring for what is written.

    Returns ``{"frames": n, "fps": float, "folder": path, "overlay_video": path or None}``.
    """

    frames = VideoFrames(video)
    folder = make_dir(video_out_dir(Path(out_dir), Path(video)))
    orders = predictor.orders
    sinks: list[Any] = []
    for order in orders:
        target = order_dir(folder, order, orders)
        sinks += [PanopticJsonWriter(target, order, predictor.label_space),
                  SegmentsJsonWriter(target / "segments", order)]
    overlay_path = folder.parent / f"{folder.name}_overlay.mp4"
    if overlays:
        sinks.append(VideoOverlayWriter(overlay_path, frames.fps, orders))
    outcome = run_inference(predictor, frames.items(), sinks, total=frames.frames, batch_size=batch_size,
                            progress=progress, desc=f"predict {Path(video).name}", ranks=Ranks())
    return {"frames": frames.decoded, "fps": float(frames.fps), "folder": str(folder),
            "overlay_video": str(outcome["overlay_video"]) if overlays and outcome["overlay_video"] else None}
