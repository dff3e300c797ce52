"""ONNX export (`oanet export`) and the PyTorch-free runtime (`oanet.runtime.OnnxPredictor`) against
the PyTorch model and predictor, on tiny random models exported once per module."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from test_model import tiny_config

from oanet.cli import main as cli_main
from oanet.config import Config
from oanet.data.labels import Category, LabelSpace
from oanet.model.checkpoint import atomic_save, final_model_state
from oanet.inference.torch_predictor import Predictor
from oanet.errors import ConfigError
from oanet.model.oanet import OANet
from oanet.runtime import MissingExtraError, OnnxPredictor
from oanet.runtime.metadata import INPUTS, OUTPUTS
from oanet.runtime.paste import paste_masks

LABEL_SPACE = LabelSpace([
    Category(1, "person", True, (220, 20, 60)),
    Category(32, "tie", True, (0, 0, 142)),
    Category(3, "car", True, (0, 60, 100)),
    Category(184, "tree", False, (107, 142, 35)),
    Category(187, "sky", False, (70, 130, 180)),
])
SIZES = [(64, 80), (50, 123), (97, 61)]  # three sizes through one exported file


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _export(tmp_path_factory, name, cfg: Config, seed=0):
    """A random tiny model saved as a checkpoint and exported with `oanet export`."""
    torch.manual_seed(seed)
    model = OANet.from_config(cfg.model).eval()
    # Confident masks (far from 0.5), as a trained model's: the parity checks compare binarised masks.
    with torch.no_grad():
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp(name)
    checkpoint = folder / "model_final.pth"
    atomic_save(final_model_state(model, cfg, LABEL_SPACE, iteration=1), checkpoint)
    out = folder / "model.onnx"
    assert cli_main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    return checkpoint, out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(tmp_path_factory, "main", Config(model=tiny_config()))


@pytest.fixture(scope="module")
def exported_no_detections(tmp_path_factory):
    """Stuff-only channels, 3x3 SRM, and a box score threshold no random box reaches: zero detections."""
    model_cfg = tiny_config(classes="stuff", kernel="3x3")
    model_cfg = dataclasses.replace(model_cfg, roi_heads=dataclasses.replace(model_cfg.roi_heads, score_thresh=0.99))
    return _export(tmp_path_factory, "empty", Config(model=model_cfg))


def _fusion_inputs_agree(raw: dict, output: dict) -> bool:
    """Whether the ONNX path and the PyTorch model give fusion the same inputs: selection, labels and
    stuff labels always; the binarised masks of the selected detections may differ only at pixels
    whose probability is 0.5 to float rounding (bilinear pasting puts mask edges at exactly 0.5)."""
    keep = np.flatnonzero(raw["selected"])
    h, w = raw["sem_seg_labels"].shape
    assert np.array_equal(raw["selected"], output["selected"].numpy())
    assert np.array_equal(raw["labels"], output["labels"].numpy())
    assert np.array_equal(raw["sem_seg_labels"], output["sem_seg_labels"].numpy())
    pasted = paste_masks(raw["mask_probs"][keep], raw["boxes"][keep], h, w)
    probs = output["masks"].numpy()[keep]
    differ = pasted != (probs > 0.5)
    assert np.all(np.abs(probs[differ] - 0.5) < 1e-4) and differ.mean() < 1e-3
    return not differ.any()


def _assert_same_result(a, b):
    assert np.array_equal(a.panoptic, b.panoptic)
    assert len(a.segments) == len(b.segments)
    for sa, sb in zip(a.segments, b.segments):
        exact = {k: v for k, v in sa.items() if k not in ("score", "ranking_score")}
        assert exact == {k: sb[k] for k in exact}
        for key in ("score", "ranking_score"):
            assert (sa[key] is None) == (sb[key] is None)
            if sa[key] is not None:
                assert abs(sa[key] - sb[key]) <= 1e-3


def test_export_metadata_is_enough_to_run(exported):
    import onnx

    _, path = exported
    proto = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["oanet"])
    assert meta["opset"] == 17 and [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert meta["label_space"] == LABEL_SPACE.to_dict() and meta["stuff_classes"] == "all"
    assert meta["preprocessing"]["min_size"] == 64 and meta["preprocessing"]["max_size"] == 128
    assert meta["fusion"]["score_thresh"] == 0.0 and meta["srm"] is True
    assert [i.name for i in proto.graph.input] == list(INPUTS)  # the box threshold is frozen inside
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)
    predictor = OnnxPredictor(path)
    assert predictor.label_space == LABEL_SPACE and predictor.stuff_classes == "all"
    assert (predictor.min_size, predictor.max_size, predictor.score_thresh) == (64, 128, 0.0)
    assert predictor.cfg == Predictor.from_checkpoint(exported[0], device="cpu").cfg  # the whole training config


def test_onnx_matches_pytorch_on_three_sizes_in_both_orders(exported):
    checkpoint, path = exported
    onnx_predictor = OnnxPredictor(path, order="both", threads=1)
    torch_predictor = Predictor.from_checkpoint(checkpoint, device="cpu", order="both")
    agreed = 0
    for rgb in _images():
        raw = onnx_predictor.run(rgb)
        with torch.no_grad():
            output = torch_predictor.model([torch.from_numpy(rgb).permute(2, 0, 1).float() / 255], score_thresh=0.0)[0]
        n = len(output["scores"])
        assert n > 0 and raw["boxes"].shape == (n, 4) and raw["mask_probs"].shape == (n, 28, 28)
        assert raw["sem_seg_labels"].shape == rgb.shape[:2]
        assert np.abs(raw["boxes"] - output["boxes"].numpy()).max() <= 1e-3
        assert np.abs(raw["scores"] - output["scores"].numpy()).max() <= 1e-3
        assert np.abs(raw["ranking_scores"] - output["ranking_scores"].numpy()).max() <= 1e-3
        ours, theirs = onnx_predictor(rgb), torch_predictor(rgb)
        if _fusion_inputs_agree(raw, output):
            agreed += 1
            for order in ("score", "srm"):
                assert any(s["isthing"] for s in ours[order].segments)
                _assert_same_result(ours[order], theirs[order])
        else:  # a mask edge pixel at 0.5 went the other way: that pixel and perhaps an overlap decision
            for order in ("score", "srm"):
                assert (ours[order].panoptic == theirs[order].panoptic).mean() > 0.99
    assert agreed >= 1


def test_no_detections_in_the_graph(exported_no_detections):
    checkpoint, path = exported_no_detections
    onnx_predictor = OnnxPredictor(path, order="both")
    torch_predictor = Predictor.from_checkpoint(checkpoint, device="cpu", order="both")
    for rgb in _images(seed=1):
        raw = onnx_predictor.run(rgb)
        assert raw["boxes"].shape == (0, 4) and raw["mask_probs"].shape == (0, 28, 28)
        assert raw["ranking_scores"].shape == raw["selected"].shape == (0,)
        ours, theirs = onnx_predictor(rgb), torch_predictor(rgb)
        for order in ("score", "srm"):
            assert not any(s["isthing"] for s in ours[order].segments)
            _assert_same_result(ours[order], theirs[order])


def test_threshold_is_a_graph_input_with_the_eager_meaning(exported):
    checkpoint, path = exported
    rgb = _images()[0]
    scores = np.sort(OnnxPredictor(path).run(rgb)["scores"])
    # A threshold equal to a detection's score selects it: `score >= score_thresh`, in float32.
    exact = float(scores[len(scores) // 2])
    raw = OnnxPredictor(path, score_thresh=exact).run(rgb)
    assert np.array_equal(raw["selected"], raw["scores"] >= np.float32(exact)) and np.float32(exact) in raw["scores"][raw["selected"]]
    # Between two scores (clear of the ~1e-7 the backends differ by) both select the same detections.
    between = float(scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    raw = OnnxPredictor(path, score_thresh=between).run(rgb)
    with torch.no_grad():
        output = Predictor.from_checkpoint(checkpoint, device="cpu").model(
            [torch.from_numpy(rgb).permute(2, 0, 1).float() / 255], score_thresh=between)[0]
    assert np.array_equal(raw["selected"], output["selected"].numpy())
    assert 0 < raw["selected"].sum() < len(scores)
    assert np.all(raw["ranking_scores"][~raw["selected"]] == 0) and np.all(raw["ranking_scores"][raw["selected"]] > 0)
    # The mask head ran on the selected detections only; their masks are the PyTorch model's.
    assert not raw["mask_probs"][~raw["selected"]].any() and raw["mask_probs"][raw["selected"]].any()
    keep = np.flatnonzero(raw["selected"])
    pasted = paste_masks(raw["mask_probs"][keep], raw["boxes"][keep], *rgb.shape[:2])
    assert (pasted != (output["masks"].numpy()[keep] > 0.5)).mean() < 1e-3
    # None selected: the SRM gets an empty input inside the graph; only stuff is left.
    onnx_none = OnnxPredictor(path, score_thresh=1.0, order="both")
    torch_none = Predictor.from_checkpoint(checkpoint, device="cpu", score_thresh=1.0, order="both")
    raw = onnx_none.run(rgb)
    assert len(raw["scores"]) > 0 and not raw["selected"].any() and not raw["ranking_scores"].any()
    for order, result in onnx_none(rgb).items():
        assert not any(s["isthing"] for s in result.segments)
        _assert_same_result(result, torch_none(rgb)[order])


def _self_check(checkpoint, path, **fusion_or_val):
    from oanet.config import SplitConfig
    from oanet.export.exporter import compare_with_pytorch
    from oanet.model.checkpoint import load_model_from_checkpoint

    model, cfg, _ = load_model_from_checkpoint(checkpoint, device="cpu")
    if "score_thresh" in fusion_or_val:
        model_cfg = dataclasses.replace(cfg.model, fusion=dataclasses.replace(cfg.model.fusion, score_thresh=fusion_or_val["score_thresh"]))
        cfg = dataclasses.replace(cfg, model=model_cfg)
    if "image_dir" in fusion_or_val:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val=SplitConfig(image_dir=str(fusion_or_val["image_dir"]))))
    return compare_with_pytorch(path, model, cfg)


def test_export_self_check_compares_detections_where_the_fusion_threshold_selects_none(exported):
    """A fusion threshold no random detection reaches (as a barely trained model's 0.5): the check lowers
    the selection threshold rather than compare nothing."""
    report = _self_check(*exported, score_thresh=1.0)
    assert report["ok"] and not report["warning"] and report["compared"] >= 1
    assert report["compared"] == report["detections"][1] and report["max_rank_diff"] <= 1e-3
    assert f"{report['compared']} detections compared, at selection threshold 0 since none reached the fusion " \
           "threshold 1" in report["message"]
    assert report["message"].startswith("check: onnxruntime and PyTorch agree on a random ")


def test_export_self_check_runs_on_a_val_image_of_the_config(exported, tmp_path):
    from PIL import Image

    Image.fromarray(_images()[1]).save(tmp_path / "b.png")
    (tmp_path / "a.png").write_bytes(b"not an image")  # unreadable: the next one is used
    report = _self_check(*exported, image_dir=tmp_path)
    assert report["ok"] and report["compared"] >= 1
    assert report["message"].startswith(f"check: onnxruntime and PyTorch agree on val image b.png (123x50): "
                                        f"{report['compared']} detections compared (")


def test_export_self_check_warns_when_no_detection_can_be_compared(exported_no_detections):
    report = _self_check(*exported_no_detections)
    assert report["ok"] and report["warning"] and report["compared"] == 0
    assert report["message"].startswith("check: WARNING: no detection on a random ")
    assert "score threshold 0.99 is frozen in the graph): boxes, masks and SRM ranking scores were NOT compared" \
           in report["message"]


def test_predict_many_and_inputs_as_for_the_pytorch_predictor(exported, tmp_path):
    from PIL import Image

    _, path = exported
    rgbs = _images()
    Image.fromarray(rgbs[0]).save(tmp_path / "a.png")
    predictor = OnnxPredictor(path)
    results = list(predictor.predict_many([tmp_path / "a.png", rgbs[1], rgbs[2].astype(np.float32) / 255], batch_size=2))
    assert [r.panoptic.shape for r in results] == [rgb.shape[:2] for rgb in rgbs]
    assert results[0].file_name == "a.png" and results[0].order == "srm"
    assert np.array_equal(results[0].panoptic, predictor(rgbs[0]).panoptic)


def test_a_large_image_is_fused_on_the_grid_as_the_pytorch_predictor_fuses_it(exported):
    """Both predictors fuse a large image on the same grid (oanet.fusion_grid): the same maps wherever the
    network outputs agree (the numpy and torch grid fusions are bit-identical: tests/test_grid_fusion.py)."""
    from PIL import Image

    checkpoint, path = exported
    rng = np.random.default_rng(4)
    rgb = np.array(Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).resize((600, 480), Image.BILINEAR))
    ours = OnnxPredictor(path, order="both", threads=1, fusion_pixels=20000)(rgb)
    theirs = Predictor.from_checkpoint(checkpoint, device="cpu", order="both", fusion_pixels=20000)(rgb)
    for order in ("score", "srm"):
        assert ours[order].panoptic.shape == (480, 600)
        assert (ours[order].panoptic == theirs[order].panoptic).mean() > 0.99
        assert [s["category_id"] for s in ours[order].segments] == [s["category_id"] for s in theirs[order].segments]


def test_runtime_runs_without_importing_torch(exported):
    _, path = exported
    code = (
        "import sys, numpy as np\n"
        "from oanet.runtime import OnnxPredictor\n"
        f"p = OnnxPredictor({str(path)!r}, order='both')\n"
        "r = p(np.zeros((40, 50, 3), np.uint8))\n"
        "assert r['srm'].panoptic.shape == (40, 50)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_predict_cli_with_onnx_runs_without_torch(exported, tmp_path):
    from PIL import Image

    _, path = exported
    for i, rgb in enumerate(_images()[:2]):
        Image.fromarray(rgb).save(tmp_path / f"img{i}.png")
    out = tmp_path / "pred"
    code = (
        "import sys\n"
        "from oanet.cli import main\n"
        f"rc = main(['predict', '--onnx', {str(path)!r}, {str(tmp_path)!r}, '--out', {str(out)!r}, '--order', 'both'])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 False"
    for order in ("score", "srm"):
        annotations = json.loads((out / f"{order}_order" / "panoptic.json").read_text())["annotations"]
        assert sorted(a["file_name"] for a in annotations) == ["img0.png", "img1.png"]


def test_missing_onnxruntime_is_one_line_naming_the_extra(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'oanet\[deploy\]'") as info:
        OnnxPredictor(exported[1])
    assert isinstance(info.value, ImportError) and "\n" not in str(info.value)


def test_export_without_onnx_is_one_line_naming_the_extra(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert cli_main(["export", "--checkpoint", str(exported[0]), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs onnx" in err[0] and "pip install 'oanet[deploy]'" in err[0]


def test_bad_files_are_one_line_errors(exported, tmp_path, capsys):
    import onnx

    checkpoint, path = exported
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        OnnxPredictor(tmp_path / "nothing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="garbage.onnx: onnxruntime cannot load"):
        OnnxPredictor(tmp_path / "garbage.onnx")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(ConfigError, match="plain.onnx: not an oanet export"):
        OnnxPredictor(tmp_path / "plain.onnx")
    assert cli_main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.onnx"), "--opset", "13"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "opset in 16.." in err[0]
    assert not (tmp_path / "x.onnx").exists()


def test_graph_stuff_labels_and_level_merge_compute_what_the_eager_code_does():
    from oanet.export.graph import merge_levels, traced_stuff_labels
    from oanet.model.oanet import resample_to_original, stuff_labels

    g = torch.Generator().manual_seed(0)
    for fh, fw, h, w, oh, ow in [(16, 20, 64, 80, 64, 80), (16, 32, 52, 128, 50, 123), (8, 32, 21, 128, 33, 200)]:
        logits = torch.randn(13, fh, fw, generator=g)
        expected = resample_to_original(logits, (h, w), (oh, ow), 4).softmax(0).argmax(0)
        assert torch.equal(stuff_labels(logits, (h, w), (oh, ow), 4), expected)
        got = traced_stuff_labels(logits, (torch.tensor(h), torch.tensor(w)), (torch.tensor(oh), torch.tensor(ow)), 4)
        assert torch.equal(got, expected)
    levels = torch.tensor([2, 0, 1, 0, 3, 2])
    per_level = [torch.arange(6.0)[levels == level].reshape(-1, 1, 1, 1).expand(-1, 2, 3, 3) for level in range(4)]
    assert torch.equal(merge_levels(levels, per_level)[:, 0, 0, 0], torch.arange(6.0))


def _aligned_bgr_config():
    model_cfg = tiny_config()
    return dataclasses.replace(
        model_cfg, input_format="BGR", input_scale=255.0, pixel_mean=(103.5, 116.3, 123.7), pixel_std=(57.0, 57.1, 58.4),
        roi_heads=dataclasses.replace(model_cfg.roi_heads, pooler_aligned=True, pooler_sampling_ratio=0))


@pytest.mark.parametrize("variant", ["srm_off_backbone_stuff", "aligned_pooler_bgr"])
def test_other_model_variants_export_without_code_changes(variant):
    """SRM off, one FPN per branch, stuff-only channels; detectron2-style aligned RoIAlign with adaptive
    sampling and BGR 0-255 input: the same graph code, the same outputs, also with fewer detections
    than the trace saw (the box threshold is still an input of the raw traced graph)."""
    import onnxruntime

    from oanet.export.exporter import FROZEN_INPUT, trace_to_onnx

    torch.manual_seed(0)
    if variant == "srm_off_backbone_stuff":
        model_cfg = tiny_config(sharing="backbone", classes="stuff", srm=False)
    else:
        model_cfg = _aligned_bgr_config()
    model = OANet.from_config(model_cfg).eval()
    session = onnxruntime.InferenceSession(trace_to_onnx(model, Config(model=model_cfg), 16),
                                           providers=["CPUExecutionProvider"])
    image = torch.rand(3, 50, 123, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        all_scores = model([image], score_thresh=0.0)[0]["scores"].sort(descending=True).values
    for box_thresh in (0.0, float(all_scores[3] + all_scores[4]) / 2):
        model.roi_heads.score_thresh = box_thresh
        feed = {"image": image.numpy(), "score_thresh": np.array(0.0, np.float32),
                FROZEN_INPUT: np.array(box_thresh, np.float32)}
        raw = dict(zip(OUTPUTS, session.run(list(OUTPUTS), feed)))
        with torch.no_grad():
            output = model([image], score_thresh=0.0)[0]
        assert len(raw["scores"]) == len(output["scores"]) > 0
        assert np.abs(raw["boxes"] - output["boxes"].numpy()).max() <= 1e-3
        assert np.abs(raw["ranking_scores"] - output["ranking_scores"].numpy()).max() <= 1e-3
        assert np.array_equal(raw["sem_seg_labels"], output["sem_seg_labels"].numpy())
        if model.srm is None:
            assert np.array_equal(raw["ranking_scores"], raw["scores"])  # without the SRM, the detection score
    assert len(raw["scores"]) < len(all_scores)


def test_cli_default_opset_is_the_runtime_default_and_building_the_cli_stays_light():
    import subprocess
    import sys

    from oanet.commands import export
    from oanet.runtime.metadata import DEFAULT_OPSET

    assert export.DEFAULT_OPSET == DEFAULT_OPSET
    code = "import sys, oanet.cli; oanet.cli.build_parser(); print(sorted(m for m in ('numpy', 'oanet.runtime', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
