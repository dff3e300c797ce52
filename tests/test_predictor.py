"""The public Python API: ``oanet.Predictor`` and ``PanopticResult`` on a tiny random-init checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oanet import PanopticResult, Predictor
from oanet.data.png_io import read_id_png
from oanet.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu")


def test_the_four_input_kinds_give_the_same_result(predictor, test_images):
    path = test_images[0]
    rgb = np.array(Image.open(path).convert("RGB"))
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    results = [predictor(x) for x in (path, Image.open(path), rgb, tensor)]
    for result in results:
        assert isinstance(result, PanopticResult) and result.order == "srm"
        np.testing.assert_array_equal(result.panoptic, results[0].panoptic)
        assert result.segments == results[0].segments
    assert results[0].panoptic.shape == rgb.shape[:2] and results[0].panoptic.dtype == np.int32
    assert results[0].file_name == path.name and results[2].file_name is None


def test_segments_describe_the_map_exactly(predictor, test_images):
    for path in test_images:
        result = predictor(path)
        ids = result.panoptic
        assert sorted(s["id"] for s in result.segments) == sorted(set(np.unique(ids).tolist()) - {0})
        things = [s for s in result.segments if s["isthing"]]
        assert things, "random weights with threshold 0 still paste instances"
        for seg in result.segments:
            mask = ids == seg["id"]
            ys, xs = np.nonzero(mask)
            assert seg["area"] == int(mask.sum())
            assert seg["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            assert seg["category_name"] == predictor.categories[seg["category_id"]]["name"]
            if seg["isthing"]:
                assert 0 <= seg["score"] <= 1 and 0 <= seg["ranking_score"] <= 1
            else:
                assert seg["score"] is None and seg["ranking_score"] is None
        coco = result.to_coco()
        assert coco["file_name"] == path.stem + ".png" and len(coco["segments_info"]) == len(result.segments)


def test_both_orders_come_from_one_forward_pass(tiny_checkpoint, test_images, monkeypatch):
    both = Predictor.from_checkpoint(tiny_checkpoint, order="both")
    calls = []
    forward = both.model.forward
    monkeypatch.setattr(both.model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    results = both(test_images[1])
    assert set(results) == {"score", "srm"} and len(calls) == 1
    single = {o: Predictor.from_checkpoint(tiny_checkpoint, order=o)(test_images[1]) for o in ("score", "srm")}
    for order in ("score", "srm"):
        np.testing.assert_array_equal(results[order].panoptic, single[order].panoptic)


def test_predict_many_keeps_input_order_across_batches(predictor, test_images, tmp_path):
    inputs = [test_images[2], test_images[0], test_images[1], test_images[0]]
    many = list(predictor.predict_many(iter(inputs), batch_size=3))
    assert [r.file_name for r in many] == [p.name for p in inputs]
    assert [r.panoptic.shape for r in many] == [np.asarray(Image.open(p)).shape[:2] for p in inputs]
    # Images of one size are batched without extra padding: exactly the one-at-a-time results. (Mixed
    # sizes are padded to a common size, which shifts border features a little, as in torchvision.)
    rgb = np.asarray(Image.open(test_images[0]).convert("RGB"))
    same = [rgb, rgb[::-1].copy(), rgb[:, ::-1].copy()]
    for array, result in zip(same, predictor.predict_many(same, batch_size=3)):
        np.testing.assert_array_equal(result.panoptic, predictor(array).panoptic)
    assert list(predictor.predict_many([])) == []


def test_the_srm_ranks_exactly_the_detections_fusion_pastes(tiny_checkpoint, test_images):
    """The threshold lives in one place: it decides what the SRM ranks and what fusion pastes."""
    base = Predictor.from_checkpoint(tiny_checkpoint)
    outputs = []
    base.model.register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    base(test_images[0])
    scores = outputs[-1]["scores"]
    thresh = float(scores.median())
    strict = Predictor.from_checkpoint(tiny_checkpoint, score_thresh=thresh)
    strict.model.register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    # A different threshold in the model's own config must not matter: the predictor's is passed on.
    strict.model.score_thresh = 0.99
    result = strict(test_images[0])
    out = outputs[-1]
    assert torch.equal(out["selected"], out["scores"] >= thresh)
    assert bool((out["ranking_scores"][~out["selected"]] == 0).all())
    assert bool((out["ranking_scores"][out["selected"]] > 0).all())
    # Ranking differs from the threshold-0 run: the SRM saw fewer instances.
    assert not torch.equal(outputs[0]["ranking_scores"], out["ranking_scores"])
    pasted = [s for s in result.segments if s["isthing"]]
    assert pasted and all(s["score"] >= thresh for s in pasted)
    ranked = {round(v, 6) for v in out["ranking_scores"][out["selected"]].tolist()}
    assert {round(s["ranking_score"], 6) for s in pasted} <= ranked
    # The same predictor's model in memory, another threshold: the same rule.
    loose = Predictor(strict.model, strict.cfg, strict.label_space, score_thresh=0.0)
    loose(test_images[0])
    assert bool(outputs[-1]["selected"].all()) and torch.equal(outputs[-1]["ranking_scores"], outputs[0]["ranking_scores"])


def test_from_checkpoint_threshold_and_bad_arguments(tiny_checkpoint, tmp_path):
    assert Predictor.from_checkpoint(tiny_checkpoint, score_thresh=0.7).score_thresh == 0.7
    assert Predictor.from_checkpoint(tiny_checkpoint).score_thresh == 0.0  # the checkpoint's config
    with pytest.raises(ConfigError, match="order must be one of"):
        Predictor.from_checkpoint(tiny_checkpoint, order="depth")
    with pytest.raises(ConfigError, match=r"score_thresh must be a number in \[0, 1\]"):
        Predictor.from_checkpoint(tiny_checkpoint, score_thresh=2)
    with pytest.raises(FileNotFoundError, match="nope.pth: checkpoint not found"):
        Predictor.from_checkpoint(tmp_path / "nope.pth")


def test_unreadable_input_names_the_file(predictor, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        predictor(bad)
    with pytest.raises(DataError, match=r"image is 4000x1; .* short side would be 0 pixels"):
        predictor(np.zeros((1, 4000, 3), np.uint8))


def test_save_overlay_and_to_coco_round_trip(predictor, test_images, tmp_path):
    result = predictor(test_images[0])
    png = result.save(tmp_path / "out.png")
    np.testing.assert_array_equal(read_id_png(png), result.panoptic)
    picture = result.overlay(test_images[0])
    assert picture.size == (result.width, result.height)
    coco = result.to_coco("frame.jpg", image_id=7)
    assert coco["image_id"] == 7 and coco["file_name"] == "frame.png"
    with pytest.raises(ValueError, match="needs a file_name"):
        predictor(np.zeros((64, 64, 3), np.uint8)).to_coco()


def test_predictor_output_equals_oanet_predict_output(tiny_checkpoint, test_images, tmp_path):
    from oanet.cli import main

    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(tiny_checkpoint), *map(str, test_images), "--out", str(out),
                 "--order", "both", "--no-progress"]) == 0
    both = Predictor.from_checkpoint(tiny_checkpoint, order="both")
    for order in ("score", "srm"):
        data = json.loads((out / f"{order}_order" / "panoptic.json").read_text())
        assert [img["file_name"] for img in data["images"]] == [p.name for p in test_images]
        for path, ann in zip(test_images, data["annotations"]):
            result = both(path)[order]
            np.testing.assert_array_equal(read_id_png(out / f"{order}_order" / "panoptic" / ann["file_name"]),
                                          result.panoptic)
            assert ann["segments_info"] == result.to_coco()["segments_info"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [p.stem + ".jpg" for p in test_images]


def _folder_with_a_corrupt_jpeg(test_images, folder: Path) -> Path:
    """Two good images and, between them in name order, a JPEG cut off after its header."""
    folder.mkdir()
    Image.open(test_images[0]).save(folder / "a.jpg", quality=95)
    Image.open(test_images[1]).save(folder / "c.png")
    (folder / "b.jpg").write_bytes((folder / "a.jpg").read_bytes()[:40])
    return folder


def test_predict_skips_an_unreadable_image_and_lists_it(tiny_checkpoint, test_images, tmp_path, capsys):
    from oanet.cli import main

    folder = _folder_with_a_corrupt_jpeg(test_images, tmp_path / "in")
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(tiny_checkpoint), str(folder), "--out", str(out), "--no-progress"]
    assert main(args + ["--loader-threads", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"oanet predict: skipped 1 image(s) that could not be read "
                                    f"(the list and reasons: {out / 'skipped.json'})")
    assert "predicted 2 image(s)" in captured.out
    data = json.loads((out / "panoptic.json").read_text())
    assert [img["file_name"] for img in data["images"]] == ["a.jpg", "c.png"]
    assert [ann["file_name"] for ann in data["annotations"]] == ["a.png", "c.png"]
    assert sorted(p.name for p in (out / "panoptic").iterdir()) == ["a.png", "c.png"]
    (skipped,) = json.loads((out / "skipped.json").read_text())
    assert skipped["file"] == str(folder / "b.jpg") and skipped["reason"].startswith("not a readable image")

    # --strict stops there, as evaluation does; a later run without bad images leaves no stale list.
    assert main(args + ["--strict", "--loader-threads", "0"]) == 2
    # (the rerun into the same folder first says that a.jpg and c.png are done: issue 19's resume)
    err = capsys.readouterr().err.strip().splitlines()
    assert "2 of 3 images already done" in err[0]
    assert re.fullmatch(r"oanet predict: error: .*b\.jpg: not a readable image \(.*\)", err[-1])
    (folder / "b.jpg").unlink()
    assert main(args) == 0 and not (out / "skipped.json").exists()


def test_predict_fails_when_no_image_could_be_read(tiny_checkpoint, tmp_path, capsys):
    from oanet.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(tiny_checkpoint), str(tmp_path / "in"), "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"oanet predict: error: none of the 1 images could be read (the reasons: {out / 'skipped.json'}); "
                          f"the first: {tmp_path / 'in' / 'x.jpg'}: not a readable image")
    assert len(json.loads((out / "skipped.json").read_text())) == 1


def test_readme_from_python_snippet_runs_as_written(tiny_checkpoint, test_images, tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("### From Python"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    lines = [line for line in snippet.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) == 2, "the README promises a two-line API"
    # The snippet's own paths, made to exist in a scratch folder.
    checkpoint = re.search(r'from_checkpoint\("([^"]+)"\)', snippet).group(1)
    image = re.search(r'\)\("([^"]+)"\)', snippet).group(1)
    monkeypatch.chdir(tmp_path)
    Path(checkpoint).parent.mkdir(parents=True)
    Path(checkpoint).write_bytes(tiny_checkpoint.read_bytes())
    Image.open(test_images[0]).save(image)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert isinstance(namespace["result"], PanopticResult) and namespace["result"].segments
