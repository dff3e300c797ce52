"""Prediction inputs and helpers (no model needed); the CLI run lives in test_inference_e2e.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oanet.engine.predict import (
    ImageListDataset,
    collate_images,
    image_record,
    list_images,
    unique_output_names,
    with_score_thresh,
    with_scores,
)
from oanet.config import Config
from oanet.errors import DataError


def _write_image(path: Path, size=(12, 8), value=128) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def test_list_images_expands_folders_sorted_and_keeps_files(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.jpg", "a.png", "notes.txt"):
        (folder / name).write_bytes(b"x")
    single = _write_image(tmp_path / "single.jpg")
    assert list_images([folder, single]) == [folder / "a.png", folder / "b.jpg", single]


def test_list_images_errors_name_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty.*no images"):
        list_images([empty])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        list_images([tmp_path / "missing.jpg"])


def test_unreadable_image_raises_one_line_data_error_naming_it(tmp_path):
    good = _write_image(tmp_path / "good.png", size=(12, 8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    dataset = ImageListDataset.from_paths([good, bad])
    image, info = dataset[0]
    assert image.shape == (3, 8, 12) and image.dtype == torch.float32
    assert float(image.max()) == pytest.approx(128 / 255)
    assert image_record(image, info) == {"id": 1, "file_name": "good.png", "height": 8, "width": 12}
    with pytest.raises(DataError, match=r"bad\.jpg: not a readable image"):
        collate_images([dataset[0], dataset[1]])


def test_repeated_stems_get_distinct_output_names(tmp_path):
    paths = [Path("x/a.jpg"), Path("y/a.jpg"), Path("a.png"), Path("b.jpg")]
    assert unique_output_names(paths) == ["a", "a_2", "a_3", "b"]
    dataset = ImageListDataset.from_paths(paths)
    assert dataset.file_names == ["a.jpg", "a_2.jpg", "a_3.png", "b.jpg"]
    assert dataset.image_ids == [1, 2, 3, 4]


def test_score_thresh_override_and_scores_for_labels():
    cfg = Config()
    assert with_score_thresh(cfg, None) is cfg
    assert with_score_thresh(cfg, 0.3).model.fusion.score_thresh == 0.3
    assert cfg.model.fusion.score_thresh == 0.5  # the original is untouched
    with pytest.raises(ValueError):
        with_score_thresh(cfg, 1.5)
    info = [{"id": 3, "category_id": 1, "area": 4}, {"id": 5, "category_id": 9, "area": 2}]
    fused = [{"id": 3, "category_id": 1, "isthing": True, "score": 0.9}, {"id": 5, "category_id": 9, "isthing": False}]
    merged = with_scores(info, fused)
    assert merged[0]["score"] == 0.9 and merged[0]["area"] == 4 and merged[1]["isthing"] is False


def test_evaluation_images_are_checked_against_the_json(tmp_path):
    # an image of another size than its annotation would be scored against the wrong pixels
    import json

    _write_image(tmp_path / "a.png", size=(12, 8))
    panoptic_json = tmp_path / "panoptic.json"
    entry = {"id": 1, "file_name": "a.png", "width": 12, "height": 9}
    panoptic_json.write_text(json.dumps({"images": [entry], "annotations": []}))
    dataset = ImageListDataset.from_panoptic_json(panoptic_json, tmp_path)
    with pytest.raises(DataError, match=r"a\.png: image is 12x8 but the annotation says 12x9"):
        collate_images([dataset[0]])
    for bad, words in (({"id": 1, "width": 12, "height": 8}, "image entry needs id, file_name"),
                       ({**entry, "id": [1]}, r"image id \[1\] is not a number")):
        panoptic_json.write_text(json.dumps({"images": [bad], "annotations": []}))
        with pytest.raises(DataError, match=f"panoptic.json: {words}"):
            ImageListDataset.from_panoptic_json(panoptic_json, tmp_path)


def test_too_thin_image_and_unusable_output_folder_are_named(tmp_path):
    from oanet.engine.predict import check_resizable, predict

    cfg = Config()  # min_size 800, max_size 1333
    check_resizable(torch.zeros(3, 1, 1), cfg, "one.png")  # tiny but resizable: fine
    with pytest.raises(DataError, match=r"thin\.png: image is 4000x2; .* short side would be 0 pixels"):
        check_resizable(torch.zeros(3, 2, 4000), cfg, "thin.png")
    image = _write_image(tmp_path / "a.png")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    from oanet.errors import ConfigError

    for out in (blocker, blocker / "out"):  # the folder is made before the model is touched
        with pytest.raises(ConfigError, match="cannot create the output folder \\(a file is in the way\\)"):
            predict(None, cfg, None, [image], out)


@pytest.mark.parametrize("command, args, words", [
    ("predict", ["--batch-size", "0", "x.png", "--out", "o"], "--batch-size must be >= 1"),
    ("evaluate", ["--batch-size", "0"], "--batch-size must be >= 1"),
    ("evaluate", ["--workers", "-1"], "--workers must be >= 0"),
    ("evaluate", ["--loader-workers", "-1"], "--loader-workers must be >= 0"),
])
def test_cli_bad_counts_are_one_line_errors(command, args, words, capsys):
    from oanet.cli import main

    assert main([command, "--checkpoint", "missing.pth", *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"oanet {command}: error: {words}, got {args[1]}"
