"""Prediction inputs, the image-file source and the CLI's argument errors (no model needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oanet.inference.base import check_resizable
from oanet.data.images import as_rgb, list_image_files, load_rgb_image, to_float_chw
from oanet.inference.loop import ImageFiles, Ranks, unique_output_names
from oanet.inference.predict import split_inputs
from oanet.errors import ConfigError, DataError


def _write_image(path: Path, size=(12, 8), value=128) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def test_inputs_expand_folders_sorted_keep_files_and_separate_videos(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.jpg", "a.png", "notes.txt"):
        (folder / name).write_bytes(b"x")
    single = _write_image(tmp_path / "single.jpg")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    assert list_image_files([folder, single]) == [folder / "a.png", folder / "b.jpg", single]
    assert split_inputs([folder, clip, single]) == ([folder / "a.png", folder / "b.jpg", single], [clip])
    assert split_inputs([clip]) == ([], [clip])


def test_inputs_errors_name_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty.*no images"):
        split_inputs([empty])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        split_inputs([tmp_path / "missing.jpg"])
    with pytest.raises(DataError, match="no input images"):
        split_inputs([])


def test_unreadable_image_is_a_one_line_data_error_naming_it(tmp_path):
    good = _write_image(tmp_path / "good.png", size=(12, 8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    files = ImageFiles.from_paths([good, bad])
    item = files.load(0)
    assert item.rgb.shape == (8, 12, 3) and item.rgb.dtype == np.uint8
    assert item.record() == {"id": 1, "file_name": "good.png", "height": 8, "width": 12}
    items = files.items([0, 1], threads=2)
    assert next(items).file_name == "good.png"
    with pytest.raises(DataError, match=r"bad\.jpg: not a readable image"):
        next(items)


def test_repeated_stems_get_distinct_output_names():
    paths = [Path("x/a.jpg"), Path("y/a.jpg"), Path("a.png"), Path("b.jpg")]
    assert unique_output_names(paths) == ["a", "a_2", "a_3", "b"]
    files = ImageFiles.from_paths(paths)
    assert files.file_names == ["a.jpg", "a_2.jpg", "a_3.png", "b.jpg"]
    assert files.image_ids == [1, 2, 3, 4]


def test_shards_cover_every_image_once_without_padding():
    for n in (0, 1, 5, 16):
        for world in (1, 2, 3):
            shards = [Ranks(r, world).shard(n) for r in range(world)]
            assert sum(shards, []) == list(range(n))  # contiguous blocks, in order, no duplicates
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_input_kinds_convert_alike(tmp_path):
    rgb = (np.arange(6 * 5 * 3) % 256).astype(np.uint8).reshape(6, 5, 3)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    torch = pytest.importorskip("torch")
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    for kind in (path, str(path), Image.fromarray(rgb), rgb):
        np.testing.assert_array_equal(as_rgb(kind), rgb)
    np.testing.assert_array_equal(to_float_chw(as_rgb(tensor)), tensor.numpy())
    np.testing.assert_array_equal(to_float_chw(as_rgb(rgb)), tensor.numpy())  # uint8 / 255 as torch does it


def test_grey_rgba_cmyk_and_16_bit_inputs_become_rgb(tmp_path):
    grey = np.array([[0, 128], [255, 64]], np.uint8)
    for mode_image in (Image.fromarray(grey), Image.fromarray(grey).convert("RGBA"), Image.fromarray(grey).convert("P")):
        out = as_rgb(mode_image)
        assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(as_rgb(Image.fromarray(grey))[..., 0], grey)
    cmyk = Image.fromarray(np.stack([grey] * 3, -1)).convert("CMYK")
    assert as_rgb(cmyk).shape == (2, 2, 3)
    # 16-bit greyscale PNG: Pillow's convert("RGB") would clip it to white; it is scaled instead.
    wide = np.array([[0, 65535], [32896, 257 * 10]], np.uint16)
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    np.testing.assert_array_equal(load_rgb_image(path)[..., 1], [[0, 255], [128, 10]])
    np.testing.assert_array_equal(as_rgb(wide)[..., 2], (wide / 65535.0).astype(np.float32))  # float, unquantised
    np.testing.assert_array_equal(as_rgb(grey)[..., 1], grey)  # HxW greyscale array
    assert as_rgb(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)  # alpha dropped


@pytest.mark.parametrize("bad, words", [
    (np.zeros((4, 4, 2), np.uint8), r"expected an image of layout HxWx3"),
    (np.full((4, 4, 3), 2.0, np.float32), r"float pixels must be in 0\.\.1"),
    (np.zeros((4, 4, 3), np.int32), "integer pixels must be uint8 or uint16"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    ("missing.png", "missing.png: image not found"),
    (42, "not an image"),
])
def test_bad_inputs_are_one_line_errors(bad, words):
    with pytest.raises((DataError, FileNotFoundError), match=words):
        as_rgb(bad)


def test_evaluation_images_are_checked_against_the_json(tmp_path):
    # an image of another size than its annotation would be scored against the wrong pixels
    _write_image(tmp_path / "a.png", size=(12, 8))
    panoptic_json = tmp_path / "panoptic.json"
    entry = {"id": 1, "file_name": "a.png", "width": 12, "height": 9}
    panoptic_json.write_text(json.dumps({"images": [entry], "annotations": []}))
    files = ImageFiles.from_panoptic_json(panoptic_json, tmp_path)
    with pytest.raises(DataError, match=r"a\.png: image is 12x8 but the annotation says 12x9"):
        files.load(0)
    for bad, words in (({"id": 1, "width": 12, "height": 8}, "image entry needs id, file_name"),
                       ({**entry, "id": [1]}, r"image id \[1\] is not a number")):
        panoptic_json.write_text(json.dumps({"images": [bad], "annotations": []}))
        with pytest.raises(DataError, match=f"panoptic.json: {words}"):
            ImageFiles.from_panoptic_json(panoptic_json, tmp_path)


def test_too_thin_image_is_named():
    check_resizable(1, 1, 800, 1333, "one.png")  # tiny but resizable: fine
    with pytest.raises(DataError, match=r"thin\.png: image is 4000x2; .* short side would be 0 pixels"):
        check_resizable(2, 4000, 800, 1333, "thin.png")


@pytest.mark.parametrize("command, args, words", [
    ("predict", ["--batch-size", "0", "x.png", "--out", "o"], "--batch-size must be >= 1"),
    ("evaluate", ["--batch-size", "0"], "--batch-size must be >= 1"),
    ("evaluate", ["--workers", "-1"], "--workers must be >= 0"),
    ("evaluate", ["--loader-threads", "-1"], "--loader-threads must be >= 0"),
    ("predict", ["--score-thresh", "1.5", "x.png", "--out", "o"], r"--score-thresh must be a number in \[0, 1\]"),
])
def test_cli_bad_counts_are_one_line_errors(command, args, words, capsys):
    from oanet.cli import main

    assert main([command, "--checkpoint", "missing.pth", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"oanet {command}: error: ") and "\n" not in err
    assert re.search(words, err)


def test_cli_needs_exactly_one_model(capsys):
    from oanet.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "x.png", "--out", "o"])
    assert "one of the arguments --checkpoint --onnx is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "a.pth", "--onnx", "b.onnx"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_unusable_output_folder_is_named(tmp_path):
    from oanet.inference.predict import predict

    image = _write_image(tmp_path / "a.png")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out in (blocker, blocker / "out"):  # the folder is made before the model is touched
        with pytest.raises(ConfigError, match="cannot create the output folder \\(a file is in the way\\)"):
            predict(None, [image], out)
