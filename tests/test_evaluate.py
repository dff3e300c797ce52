"""Evaluation: the comparison tables, the order-difference measure, and (once trained) the CLI end to end."""

from __future__ import annotations

import numpy as np
import pytest

from oanet.inference.evaluate import comparison_rows, format_comparison, format_comparison_markdown
from oanet.evaluation.differences import panoptic_map_difference

SCORE = {
    "All": {"pq": 0.40, "sq": 0.80, "rq": 0.50, "n": 6},
    "Things": {"pq": 0.30, "sq": 0.75, "rq": 0.40, "n": 4},
    "Stuff": {"pq": 0.60, "sq": 0.90, "rq": 0.6667, "n": 2},
}
SRM = {
    "All": {"pq": 0.45, "sq": 0.81, "rq": 0.5556, "n": 6},
    "Things": {"pq": 0.375, "sq": 0.77, "rq": 0.487, "n": 4},
    "Stuff": {"pq": 0.60, "sq": 0.90, "rq": 0.6667, "n": 2},
}


def test_comparison_rows_are_percent_with_srm_minus_score():
    rows = {r["group"]: r for r in comparison_rows(SCORE, SRM)}
    assert list(rows) == ["All", "Things", "Stuff"]
    assert rows["All"]["score_pq"] == pytest.approx(40.0)
    assert rows["All"]["srm_pq"] == pytest.approx(45.0)
    assert rows["All"]["diff_pq"] == pytest.approx(5.0)
    assert rows["Things"]["diff_pq"] == pytest.approx(7.5)
    assert rows["Stuff"]["diff_sq"] == pytest.approx(0.0)
    assert rows["Things"]["n"] == 4


def test_text_and_markdown_tables_show_both_orders_and_the_difference():
    text = format_comparison(SCORE, SRM)
    assert "score order" in text and "SRM order" in text and "SRM - score" in text
    things = next(line for line in text.splitlines() if line.startswith("Things"))
    assert "30.00" in things and "37.50" in things and "+7.50" in things
    md = format_comparison_markdown(SCORE, SRM).splitlines()
    assert md[0].startswith("|") and len(md) == 2 + 3
    assert "| All | 6 | 40.00 | 45.00 | +5.00 |" in md[2]


def test_map_difference_ignores_renumbering_and_counts_moved_pixels():
    a = np.zeros((10, 10), dtype=np.int32)
    a[:, 5:] = 1
    a[2:6, 2:8] = 2  # instance 2 on top of 1
    renamed = np.where(a == 1, 7, np.where(a == 2, 9, a))
    assert panoptic_map_difference(a, renamed) == 0.0
    b = a.copy()
    b[2:6, 5:8] = 1  # instance 1 now on top where they overlap: 12 pixels change owner
    assert panoptic_map_difference(a, b) == pytest.approx(12 / 100)
    assert panoptic_map_difference(a, np.zeros_like(a)) == pytest.approx(0.62)  # merging counts: 38 of 100 kept
    assert panoptic_map_difference(np.zeros_like(a), a) == pytest.approx(0.62)


def test_split_categories_must_match_the_model(tmp_path):
    import json

    from oanet.data.labels import LabelSpace, parse_categories
    from oanet.inference.evaluate import check_label_space
    from oanet.errors import DataError

    cats = [{"id": 1, "name": "disc", "isthing": 1}, {"id": 7, "name": "sky", "isthing": 0}]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    model_space = LabelSpace(parse_categories(cats, "model"))
    check_label_space(model_space, gt)
    other = LabelSpace(parse_categories([{"id": 2, "name": "star", "isthing": 1}], "model"))
    with pytest.raises(DataError, match=r"gt\.json: the split's categories do not match"):
        check_label_space(other, gt)
    flipped = LabelSpace(parse_categories([{**cats[0], "isthing": 0}, cats[1]], "model"))
    with pytest.raises(DataError, match="do not match"):
        check_label_space(flipped, gt)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_unavailable_device_is_a_one_line_error(command, tmp_path, monkeypatch, capsys):
    import torch

    import oanet.model.checkpoint as checkpoint
    from oanet.cli import main
    from oanet.config import Config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(
        checkpoint, "load_model_from_checkpoint", lambda path, device="cpu", **_: (torch.nn.Linear(1, 1), Config(), object())
    )
    ckpt = tmp_path / "model_final.pth"
    ckpt.write_bytes(b"")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(image)
    extra = [str(image), "--out", str(tmp_path / "out")] if command == "predict" else []
    assert main([command, "--checkpoint", str(ckpt), "--device", "cuda", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"oanet {command}: error: device 'cuda' requested but CUDA is not available (use device=cpu or auto)"


def test_evaluate_names_an_image_too_thin_to_resize(tmp_path, tiny_checkpoint):
    import json

    from PIL import Image

    from oanet import Predictor
    from oanet.config import SplitConfig
    from oanet.inference.evaluate import evaluate
    from oanet.errors import DataError
    from conftest import TINY_CATEGORIES

    (tmp_path / "images").mkdir()
    (tmp_path / "png").mkdir()
    Image.new("RGB", (4000, 2)).save(tmp_path / "images" / "thin.png")
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "thin.png", "width": 4000, "height": 2}],
        "annotations": [{"image_id": 1, "file_name": "thin.png", "segments_info": []}],
        "categories": TINY_CATEGORIES,
    }))
    split = SplitConfig(panoptic_json=str(gt), panoptic_dir=str(tmp_path / "png"), image_dir=str(tmp_path / "images"))
    predictor = Predictor.from_checkpoint(tiny_checkpoint, order="both")
    with pytest.raises(DataError, match=r"thin\.png: image is 4000x2; .* short side would be 0 pixels"):
        evaluate(predictor, split, tmp_path / "out", workers=0, progress=False)
