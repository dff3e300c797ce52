"""The overhead benchmark's pair of models and the GPU check's dry run (benchmarks/, on the CPU at tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_overhead as bench  # noqa: E402


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_maskrcnn_is_oanet_without_the_panoptic_part():
    """Same instance network and weights: same instance losses in training, same detections in inference."""
    preset = bench.PRESETS["tiny"]
    cfg = bench.model_config(preset)
    oanet, maskrcnn = bench.build_pair(cfg)
    assert _count(oanet) - _count(maskrcnn) == _count(oanet.stuff_head) + _count(oanet.srm)
    images, targets, mr_targets = bench.synthetic_batch(2, preset.size, preset.things, preset.stuff)
    for target in targets:
        boxes, masks = target["boxes"], target["masks"]
        assert (boxes[:, 2:] > boxes[:, :2]).all() and masks.flatten(1).any(1).all()
        overlap = masks.sum(0) >= 2
        assert ((target["srm"] != 255) == overlap).all() and overlap.any()
    torch.manual_seed(0)
    ours = oanet(images, targets)
    torch.manual_seed(0)
    theirs = maskrcnn(images, mr_targets)
    for key, name in {"rpn_cls": "loss_objectness", "rpn_bbox": "loss_rpn_box_reg", "cls": "loss_classifier",
                      "bbox": "loss_box_reg", "mask": "loss_mask"}.items():
        assert torch.equal(ours[key], theirs[name]), key
    oanet.eval()
    maskrcnn.eval()
    calibration = bench.calibrate(oanet, maskrcnn, images[0], 5, "fp32")
    with torch.no_grad():
        (a,) = oanet([images[0]], score_thresh=calibration["score_thresh"])
        (b,) = maskrcnn([images[0]])
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["masks"], b["masks"][:, 0])
    assert int(a["selected"].sum()) == 5 and len(a["boxes"]) >= cfg.roi_heads.detections_per_img // 2


def test_maskrcnn_r50_has_torchvisions_architecture():
    """The R50 Mask R-CNN of the comparison loads torchvision's maskrcnn_resnet50_fpn state dict exactly."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    cfg = bench.model_config(bench.PRESETS["r50_512"])
    ours = bench.build_maskrcnn(cfg)
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=cfg.num_thing_classes + 1)
    # Frozen BN has no num_batches_tracked; everything else matches by name and shape.
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in state.items()}
    ours.load_state_dict(state)


def test_bench_overhead_command_line(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert bench.main(["--preset", "tiny", "--repeat", "1", "--warmup", "0", "--threads", "1", "--selected", "4",
                       "--json", str(out)]) == 0
    (report,) = json.loads(out.read_text())
    for part in ("train", "inference"):
        assert report[part]["median_s"]["oanet"] > 0 and report[part]["median_s"]["maskrcnn"] > 0
        assert report[part]["gflops"]["oanet"] > report[part]["gflops"]["maskrcnn"]  # the stuff head and SRM
        assert set(report[part]["includes"]) == {"oanet", "maskrcnn"}
    assert report["inference"]["selected"] == 4
    assert {"stuff_head", "srm_ranking", "stuff_labels", "fusion_both_orders"} <= set(report["inference"]["breakdown_s"]["oanet"])
    assert set(report["train"]["oanet_parts_s"]) == {"stuff_head_with_loss", "stuff_loss_alone", "srm_with_loss"}
    assert "ratio" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    """benchmarks/gpu_check.sh --dry-run: environment, the CUDA tests (skipped here), the measurements."""
    out = tmp_path / "gpu_check"
    env = dict(os.environ, PYTHON=sys.executable, CUDA_TESTS="tests/test_precision.py", OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((out / "env.json").read_text())["device"] == "cpu"
    assert (out / "cuda_tests.rc").read_text().strip() == "0"
    assert "skipped" in (out / "cuda_tests.txt").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["setup"]["preset"] == "tiny" and not results["errors"] and not results["skipped"]
    assert set(results["train"]) == {"amp_fp16", "bf16"} and set(results["inference"]) == {"fp32", "amp_fp16", "bf16"}
    for r in results["train"].values():
        assert r["images_per_s"]["oanet"] > 0 and all(v == v for v in r["last_loss"].values())  # finite, not NaN
    summary = (out / "summary.md").read_text()
    assert "| amp_fp16 |" in summary and "Wall time of gpu_check.sh" in summary


def test_gpu_check_refuses_to_run_without_a_gpu_unless_dry(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


@pytest.mark.slow
def test_overfit_coco16_smoke_and_resume(coco16, tmp_path, monkeypatch):
    """benchmarks/overfit_coco16.py at tiny sizes on the real sample. A run killed while evaluating
    iteration 4 continues: the point of iteration 2 is kept, not measured again with a later model."""
    import overfit_coco16

    out = tmp_path / "overfit"
    tiny = ["--data", str(coco16), "--out", str(out), "--iters", "6", "--eval-every", "2", "--size", "96",
            "--max-size", "128", "--device", "cpu", "model.rpn.post_nms_top_n_test=50",
            "model.roi_heads.detections_per_img=20"]
    evaluate_now = overfit_coco16.evaluate_now

    def killed_at_4(cfg, out_dir, iteration):
        if iteration == 4:
            raise KeyboardInterrupt
        return evaluate_now(cfg, out_dir, iteration)

    monkeypatch.setattr(overfit_coco16, "evaluate_now", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        overfit_coco16.main(tiny)
    (first,) = json.loads((out / "curve.json").read_text())
    assert first["iteration"] == 2
    (out / "eval_2" / "results.json").unlink()  # evaluating iteration 2 again would write it again
    monkeypatch.setattr(overfit_coco16, "evaluate_now", evaluate_now)
    assert overfit_coco16.main(tiny) == 0
    results = json.loads((out / "results.json").read_text())
    assert [p["iteration"] for p in results["curve"]] == [2, 4, 6]
    assert results["curve"][0] == first and not (out / "eval_2" / "results.json").exists()
    for order in ("score_order", "srm_order"):
        assert 0.0 <= results["final"][order]["All"]["pq"] <= 1.0
    assert (out / "pq.png").is_file() and (out / "summary.md").read_text().count("\n| ") >= 4


def test_bench_flops_parts_counts_the_panoptic_parts(tmp_path):
    """The stuff head's FLOPs scale with its width; the SRM's do not depend on it."""
    import bench_flops_parts

    out = tmp_path / "parts.json"
    assert bench_flops_parts.main(["--preset", "tiny", "--channels", "16", "32", "--json", str(out)]) == 0
    narrow, wide = json.loads(out.read_text())
    assert (narrow["stuff_head_channels"], wide["stuff_head_channels"]) == (16, 32)
    assert wide["stuff_head"] > 2 * narrow["stuff_head"] > 0  # the 3x3 convs between widths grow ~4x
    assert wide["srm"] == narrow["srm"] > 0
