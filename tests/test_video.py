"""Videos: `oanet predict clip.mp4` writes a PNG + segments JSON per frame and an overlay video."""

from __future__ import annotations

import json
import sys
from fractions import Fraction

import numpy as np
import pytest

from oanet.data.png_io import read_id_png

av = pytest.importorskip("av", reason="PyAV (the [video] extra) is not installed")

FPS = 12
FRAMES = 5


def write_clip(path, frames=FRAMES, size=(80, 64), fps=FPS):
    """A tiny MPEG-4 clip: a red square moving over a green background."""
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 1] = 120
            rgb[10:40, 5 + 8 * i: 35 + 8 * i] = (220, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_frames(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_video_round_trip(tiny_checkpoint, tmp_path):
    from oanet import Predictor
    from oanet.cli import main

    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert main(["predict", str(clip), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--no-progress"]) == 0
    folder = out / "clip"
    pngs = sorted((folder / "panoptic").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(FRAMES)]
    coco = json.loads((folder / "panoptic.json").read_text())
    assert [img["id"] for img in coco["images"]] == list(range(1, FRAMES + 1))
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    for i, frame in enumerate(decoded_frames(clip)):
        result = predictor(frame)
        np.testing.assert_array_equal(read_id_png(pngs[i]), result.panoptic)
        segments = json.loads((folder / "segments" / f"{i:06d}.json").read_text())
        assert segments["frame"] == i and segments["time"] == pytest.approx(i / FPS)
        assert segments["segments"] == result.segments
    overlay = out / "clip_overlay.mp4"
    with av.open(str(overlay)) as container:
        stream = container.streams.video[0]
        assert Fraction(stream.average_rate) == FPS
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == FRAMES and frames[0].shape == (64, 80, 3)


def test_video_with_both_orders_and_odd_size(tiny_checkpoint, tmp_path):
    from oanet import Predictor
    from oanet.inference.predict import predict

    clip = write_clip(tmp_path / "odd.mp4", frames=2, size=(66, 50))
    summary = predict(Predictor.from_checkpoint(tiny_checkpoint, order="both"), [clip], tmp_path / "o", progress=False)
    info = summary["videos"][str(clip)]
    assert info["frames"] == 2 and info["fps"] == FPS
    for order in ("score", "srm"):
        assert len(list((tmp_path / "o" / "odd" / f"{order}_order" / "panoptic").iterdir())) == 2
    with av.open(info["overlay_video"]) as container:
        stream = container.streams.video[0]
        assert stream.width % 2 == 0 and stream.width > 2 * 66  # both orders side by side, padded to even


def test_unreadable_video_and_missing_extra_are_one_line_errors(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from oanet.cli import main

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    assert main(["predict", str(broken), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"oanet predict: error: {broken}: not a readable video") and "\n" not in err
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    assert main(["predict", str(clip), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'oanet[video]'" in capsys.readouterr().err
