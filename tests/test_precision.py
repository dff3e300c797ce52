"""Mixed precision: the ``solver.precision`` switch, bf16 autocast on the CPU (training step and inference),
float32 geometry under autocast, and the same checks on CUDA (``cuda`` marker, skipped without a GPU)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from oanet.config import Config, SolverConfig, from_dict, load_config, to_dict
from oanet.data.images import to_float_chw
from oanet.model.precision import PRECISIONS, autocast, autocast_dtype, check_precision, uses_grad_scaler
from oanet.inference.torch_predictor import Predictor
from oanet.train.step import TrainStep
from oanet.errors import ConfigError
from oanet.evaluation.differences import panoptic_map_difference
from oanet.model.oanet import OANet, build_model, resample_to_original, stuff_labels
from oanet.model.srm import paste_masks_at_stride, ranking_scores
from test_model import empty_sample, sample, tiny_config

CPU_BF16 = pytest.param("cpu", "bf16", id="cpu-bf16")
CUDA_CASES = [
    pytest.param("cuda", "amp_fp16", id="cuda-amp_fp16", marks=pytest.mark.cuda),
    pytest.param("cuda", "bf16", id="cuda-bf16", marks=pytest.mark.cuda),
]


# -- the config switch ---------------------------------------------------------------------------


def test_precision_field_and_the_old_amp_key():
    assert SolverConfig().precision == "amp_fp16"  # the old default, amp: true
    assert from_dict(SolverConfig, {"amp": True}).precision == "amp_fp16"
    assert from_dict(SolverConfig, {"amp": False}).precision == "fp32"
    assert from_dict(SolverConfig, {"amp": False, "precision": "fp32"}).precision == "fp32"
    # A checkpoint written before `precision` existed (its config holds solver.amp) still loads.
    old = to_dict(Config())
    del old["solver"]["precision"]
    old["solver"]["amp"] = False
    assert from_dict(Config, old).solver.precision == "fp32"
    assert "amp" not in to_dict(Config())["solver"]
    with pytest.raises(ConfigError, match=r"amp=true \(the old key\) contradicts precision=bf16"):
        from_dict(SolverConfig, {"amp": True, "precision": "bf16"}, "cfg.solver")
    with pytest.raises(ConfigError, match="amp: expected true or false"):
        from_dict(SolverConfig, {"amp": "yes"}, "cfg.solver")
    with pytest.raises(ConfigError, match="precision: 'fp16' is not one of"):
        load_config(None, ["solver.precision=fp16"])
    assert load_config(None, ["solver.precision=bf16"]).solver.precision == "bf16"


def test_what_each_precision_means_on_each_device():
    assert PRECISIONS == ("fp32", "amp_fp16", "bf16")
    assert [autocast_dtype(p, "cpu") for p in PRECISIONS] == [None, None, torch.bfloat16]
    assert [autocast_dtype(p, "cuda") for p in PRECISIONS] == [None, torch.float16, torch.bfloat16]
    assert [uses_grad_scaler(p, "cuda") for p in PRECISIONS] == [False, True, False]
    assert not any(uses_grad_scaler(p, "cpu") for p in PRECISIONS)
    with pytest.raises(ConfigError, match="precision must be one of fp32, amp_fp16, bf16"):
        check_precision("half", torch.device("cpu"))
    with autocast("bf16", "cpu"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with autocast("amp_fp16", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


# -- float32 geometry under autocast -------------------------------------------------------------


def test_anchors_boxes_and_masks_stay_float32_under_bf16():
    torch.manual_seed(0)
    model = OANet.from_config(tiny_config()).eval()
    image_list, _ = model.transform([sample()[0]])
    features, _ = model.backbone(image_list.tensors)
    levels = list(features.values())
    anchors_fp32 = model.rpn.anchor_generator(image_list, levels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_levels = [f.bfloat16() for f in levels]
        anchors = model.rpn.anchor_generator(image_list, bf16_levels)
        objectness, deltas = model.rpn.head(bf16_levels)
    for a, b in zip(anchors, anchors_fp32):
        assert a.dtype == torch.float32 and torch.equal(a, b)  # bfloat16 anchors would move by up to 4 px
    assert all(t.dtype == torch.float32 for t in objectness + deltas)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        (out,) = model([sample()[0]])
    for key in ("boxes", "scores", "masks", "ranking_scores", "sem_seg_logits"):
        assert out[key].dtype == torch.float32, key


def test_the_float32_hooks_change_nothing_in_float32():
    torch.manual_seed(0)
    model = OANet.from_config(tiny_config()).eval()
    bare = copy.deepcopy(model)
    for module in bare.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    image = sample()[0]
    with torch.inference_mode():
        (a,), (b,) = model([image]), bare([image])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_srm_paste_and_stuff_labels_compute_coordinates_in_float32():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 24, 40, generator=g).bfloat16()
    # 1000 px: bfloat16 pixel coordinates would be 4-8 px apart there.
    assert torch.equal(stuff_labels(logits, (96, 160), (600, 1000), 4), stuff_labels(logits.float(), (96, 160), (600, 1000), 4))
    resampled = resample_to_original(logits, (96, 160), (600, 1000), 4)
    assert resampled.dtype == torch.float32
    assert torch.equal(resampled, resample_to_original(logits.float(), (96, 160), (600, 1000), 4))
    probs = torch.rand(3, 28, 28, generator=g).bfloat16()
    boxes = torch.tensor([[10.0, 20, 300, 260], [500, 400, 900, 610], [0, 0, 1000, 620]])
    pasted = paste_masks_at_stride(probs, boxes, (160, 256), 4)
    assert pasted.dtype == torch.float32 and torch.equal(pasted, paste_masks_at_stride(probs.float(), boxes, (160, 256), 4))
    # Means over thousands of pixels: in float32 whatever the dtype of the SRM's output.
    srm_probs = torch.rand(3, 160, 256, generator=g).bfloat16()
    binary = pasted > 0.5
    labels = torch.tensor([0, 2, 1])
    assert torch.equal(ranking_scores(srm_probs, binary, labels), ranking_scores(srm_probs.float(), binary, labels))


# -- training steps ------------------------------------------------------------------------------


def _device_or_skip(name: str, precision: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    return device


def _train_step(device: torch.device, precision: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(tiny_config()).to(device)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    # A small initial scale so that fp16's first step is not skipped for overflow (the default 2**16
    # takes a few skipped steps to settle, which is the GradScaler working, not what is tested here).
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**8, enabled=uses_grad_scaler(precision, device.type))
    step = TrainStep(model, optimizer, scaler, device=device, seed=seed, rank=0, chunks_per_rank=1,
                     distributed=False, precision=precision)
    images, targets = zip(sample(), empty_sample())
    losses = step(0, list(images), list(targets), lr=0.01)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    moved = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), before[n])}
    return dict(zip(step.loss_names, losses.tolist())), grads, moved, before


@pytest.mark.parametrize("device,precision", [CPU_BF16] + CUDA_CASES)
def test_training_step_under_autocast(device, precision):
    device = _device_or_skip(device, precision)
    losses, grads, moved, params = _train_step(device, precision)
    reference, *_ = _train_step(torch.device("cpu"), "fp32")
    assert all(np.isfinite(v) for v in losses.values()), losses
    missing = [n for n, g in grads.items() if g is None or not torch.isfinite(g).all()]
    assert missing == []  # every parameter got a finite gradient (no dtype dead ends)
    assert moved == set(params)  # and the optimizer moved every one of them
    # The dense losses (no sampling, which draws differently on CUDA) are fp32's up to the rounding.
    for name in ("seg", "srm"):
        assert losses[name] == pytest.approx(reference[name], rel=0.1), name


def test_amp_fp16_on_the_cpu_is_fp32_exactly():
    assert _train_step(torch.device("cpu"), "amp_fp16")[0] == _train_step(torch.device("cpu"), "fp32")[0]


# -- inference -----------------------------------------------------------------------------------

# bf16 (or fp16) vs fp32 inference of the tiny random-init checkpoint on 8 synthetic images. Random
# weights are the worst case: the mask head's logits hover around 0, so binarising at 0.5 flips
# wherever rounding moves them, and the detection scores are near-ties. Measured on the CPU (docs/model.md):
# stuff labels differ on 0.6-1.3 % of the pixels, the five best detection scores by 0.0005-0.009, panoptic maps by
# 3.8 % of the pixels on average and 12 % at most (24 % at most on 16 images). The bounds leave room
# for other CPUs' and GPUs' kernels.
STUFF_BOUND, SCORE_BOUND, MEAN_BOUND, MAX_BOUND = 0.03, 0.03, 0.10, 0.35


def _synthetic_rgbs(n: int, size: int = 96) -> list:
    from oanet.data.synthetic.image import render_image

    return [render_image(0, "val", i, size)["rgb"] for i in range(n)]


def _differences(reference: Predictor, other: Predictor, rgbs: list) -> list:
    out = []
    for rgb in rgbs:
        a, b = reference(rgb), other(rgb)
        out += [panoptic_map_difference(a[o].panoptic, b[o].panoptic) for o in ("score", "srm")]
    return out


@pytest.mark.parametrize("device,precision", [CPU_BF16] + CUDA_CASES)
def test_inference_under_autocast_is_close_to_fp32(tiny_checkpoint, device, precision):
    device = _device_or_skip(device, precision)
    reference = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", order="both")
    other = Predictor.from_checkpoint(tiny_checkpoint, device=str(device), order="both", precision=precision)
    assert other.precision == precision and other.device.type == device.type
    rgbs = _synthetic_rgbs(8)
    for rgb in rgbs:
        image = torch.from_numpy(to_float_chw(rgb))
        with torch.inference_mode():
            (a,) = reference.model([image])
            with autocast(precision, device.type):
                (b,) = other.model([image.to(device)])
        assert (a["sem_seg_labels"] != b["sem_seg_labels"].cpu()).float().mean() <= STUFF_BOUND
        # The best scores (the last ones can be another detection: NMS and the top-k cut see near-ties).
        top = min(len(a["scores"]), len(b["scores"]), 5)
        assert (a["scores"][:top] - b["scores"][:top].cpu()).abs().max() <= SCORE_BOUND
    diffs = _differences(reference, other, rgbs)
    assert np.mean(diffs) <= MEAN_BOUND and max(diffs) <= MAX_BOUND, diffs
    # The maps are valid panoptic results (segments describe them exactly), whatever the precision.
    for rgb in _synthetic_rgbs(2):
        for result in other(rgb).values():
            ids, counts = np.unique(result.panoptic, return_counts=True)
            areas = {s["id"]: s["area"] for s in result.segments}
            assert {int(i): int(c) for i, c in zip(ids, counts) if i} == areas


def test_predictor_precision_argument_is_checked(tiny_checkpoint):
    with pytest.raises(ConfigError, match="precision must be one of"):
        Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp16")
    assert Predictor.from_checkpoint(tiny_checkpoint, device="cpu").precision == "fp32"


@pytest.mark.cuda
def test_single_gpu_inference_without_a_process_group(tiny_checkpoint, test_images):
    """A Predictor on one GPU (no torch.distributed, no NCCL) gives the CPU's maps up to TF32 rounding."""
    import torch.distributed as dist
    from PIL import Image

    gpu = Predictor.from_checkpoint(tiny_checkpoint, device="cuda", order="both")
    cpu = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", order="both")
    assert gpu.device.type == "cuda" and not (dist.is_available() and dist.is_initialized())
    diffs = _differences(cpu, gpu, [np.asarray(Image.open(p).convert("RGB")) for p in test_images])
    assert np.mean(diffs) <= MEAN_BOUND, diffs
    results = list(gpu.predict_many(test_images, batch_size=2))
    assert [r["srm"].panoptic.shape for r in results] == [(64, 80), (50, 70), (72, 48)]


@pytest.mark.parametrize("device,precision", [CPU_BF16, CUDA_CASES[0]])
def test_oanet_train_runs_under_autocast(tmp_path, device, precision):
    """Two iterations of the training loop: finite losses; the GradScaler's state is checkpointed
    exactly when fp16 needs one."""
    from oanet.data.synthetic import generate_dataset
    from oanet.train.trainer import train
    from test_train_e2e import TINY, _data_overrides

    root = tmp_path / "synthetic"
    generate_dataset(root, train=4, val=0, size=96, seed=1, workers=1, progress=False)
    overrides = _data_overrides(root) + [f"device={device}", f"solver.precision={precision}", "solver.max_iter=2",
                                         f"output_dir={tmp_path / 'run'}"]
    summary = train(load_config(TINY, overrides))
    assert summary["iteration"] == 2 and np.isfinite(summary["metrics"]["loss"])
    state = torch.load(tmp_path / "run" / "last.pth", map_location="cpu", weights_only=True)
    assert state["config"]["solver"]["precision"] == precision
    if uses_grad_scaler(precision, device):
        assert state["scaler"]["scale"] > 0
    else:
        assert not state["scaler"]
