"""Large images in bounded memory (issue 19): the grid fusion (oanet.fusion_grid, oanet.model.grid_fusion,
oanet.runtime.grid_fusion) against the full-size fusion, the PyTorch and numpy grid fusions against
each other bit for bit, and the uint8 resize against the float one. Tiny random models, small images:
a grid is forced with a small ``max_pixels``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_model import tiny_config

from oanet import fusion_grid
from oanet.config import FusionConfig
from oanet.data.labels import Category, LabelSpace
from oanet.model.fusion import fuse
from oanet.model.grid_fusion import fuse_grid
from oanet.model.oanet import OANet
from oanet.model.stuff_labels import stuff_labels, stuff_labels_at
from oanet.model.transform import PanopticTransform
from oanet.result import build_result
from oanet.runtime import grid_fusion as np_grid

SPACE = LabelSpace([Category(1, "a", True, (1, 2, 3)), Category(2, "b", True, (4, 5, 6)),
                    Category(3, "c", True, (7, 8, 9)), Category(10, "s", False, (9, 9, 9)),
                    Category(11, "t", False, (8, 8, 8))])
CFG = FusionConfig(score_thresh=0.0, overlap_thresh=0.5, stuff_area_limit=40, stuff_area_reference_size=64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = OANet.from_config(tiny_config()).eval()
    with torch.no_grad():
        net.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(20.0)  # confident, overlapping masks
    return net


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes (upscaled from 32 px, as a photo is smooth at its own scale)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    return np.array(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def _outputs(model, rgb):
    image = torch.from_numpy(rgb).permute(2, 0, 1)
    with torch.no_grad():
        full = model([image], score_thresh=0.0)[0]
        compact = model([image], score_thresh=0.0, full_size=False)[0]
    return full, compact


def test_geometry_cells_and_their_pixels():
    for length, count in ((10, 10), (100, 7), (4000, 1155), (7, 1)):
        samples = fusion_grid.sample_positions(length, count)
        cells = fusion_grid.cell_of(length, samples)
        assert np.all(np.diff(samples) > 0) or count == 1
        assert np.array_equal(cells[samples], np.arange(count))  # each grid row lies in its own cell
        assert np.all(np.diff(cells) >= 0) and cells[0] == 0 and cells[-1] == count - 1
    assert fusion_grid.grid_size(30, 40, None) == (30, 40) == fusion_grid.grid_size(30, 40, 1200)
    gh, gw = fusion_grid.grid_size(3000, 4000, 1 << 20)
    assert gh * gw <= 1 << 20 and abs(gw / gh - 4 / 3) < 0.01
    assert fusion_grid.grid_budget(100, (20, 30)) == 600 and fusion_grid.grid_budget(None, (20, 30)) is None
    # every pixel of the chosen cells, once, in chunks
    rows, cols = fusion_grid.sample_positions(50, 9), fusion_grid.sample_positions(70, 11)
    row_cells, col_cells = fusion_grid.cell_of(50, rows), fusion_grid.cell_of(70, cols)
    pick = np.random.default_rng(0).random((9, 11)) < 0.4
    cj, ci = np.nonzero(pick)
    seen = np.zeros((50, 70), dtype=int)
    for ys, xs, cell in fusion_grid.split_pixels(cj, ci, row_cells, col_cells, chunk=37):
        seen[ys, xs] += 1
        assert np.array_equal(row_cells[ys], cj[cell]) and np.array_equal(col_cells[xs], ci[cell])
    assert np.array_equal(seen, pick[row_cells][:, col_cells].astype(int))


def test_uint8_images_resize_as_float_images_do():
    transform = PanopticTransform(min_size=(64,), max_size=96, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25],
                                  size_divisible=32).eval()
    for height, width in ((300, 400), (64, 80), (123, 77), (40, 300)):
        rgb = _photo(height, width)
        as_float, _ = transform([torch.from_numpy(rgb).permute(2, 0, 1).float() / 255])
        as_uint8, _ = transform([torch.from_numpy(rgb).permute(2, 0, 1)])
        assert as_float.image_sizes == as_uint8.image_sizes
        assert as_float.image_sizes[0] == fusion_grid.network_size(height, width, 64, 96)
        assert torch.allclose(as_float.tensors, as_uint8.tensors, atol=1e-4)


def test_stuff_labels_on_a_grid_and_at_points_are_those_of_the_full_map(model):
    _, out = _outputs(model, _photo(90, 130))
    logits, size = out["stuff_logits"], out["image_size"]
    full = stuff_labels(logits, size, (90, 130), 4)
    rows, cols = torch.tensor([0, 7, 44, 89]), torch.tensor([3, 64, 129])
    assert torch.equal(stuff_labels(logits, size, (90, 130), 4, rows, cols), full[rows][:, cols])
    ys, xs = torch.randint(0, 90, (500,)), torch.randint(0, 130, (500,))
    assert torch.equal(stuff_labels_at(logits, size, (90, 130), 4, ys, xs), full[ys, xs])


def _upscaled(height: int, width: int, factor: int, seed: int = 0) -> np.ndarray:
    """A photo at the tiny models' input size (64 x 80), ``factor`` times larger: the issue's setting."""
    from PIL import Image

    return np.array(Image.fromarray(_photo(height, width, seed)).resize((width * factor, height * factor),
                                                                          Image.BILINEAR))


@pytest.mark.parametrize("size", [(64, 80), (80, 60)])
def test_grid_fusion_is_the_full_size_fusion_but_for_a_few_edge_pixels(model, size):
    full, compact = _outputs(model, _upscaled(*size, factor=6, seed=size[0]))
    assert compact["selected"].sum() >= 3
    expected = fuse(full, SPACE, "all", CFG)
    exact = fuse_grid(compact, SPACE, "all", CFG, max_pixels=None)
    # A grid of 4x the network's input, about 1/9 of the pixels. Random weights make speckled masks
    # (every RoI mask cell on its own), the worst case for a grid; a trained model's masks are smooth
    # (the demo's: 99.999 % of the pixels equal at 8x, benchmarks/bench_large_images.py).
    on_grid = fuse_grid(compact, SPACE, "all", CFG, max_pixels=4 * compact["image_size"][0] * compact["image_size"][1])
    for order in ("score", "srm"):
        ids, segments = expected[order]
        assert (exact[order][0] == ids).float().mean() > 0.999  # mask edges at 0.5 may round either way
        assert (on_grid[order][0] == ids).float().mean() > 0.99
        assert [s["category_id"] for s in on_grid[order][1]] == [s["category_id"] for s in segments]


def test_areas_and_boxes_of_the_grid_fusion_are_those_of_its_map(model):
    _, compact = _outputs(model, _photo(250, 330, seed=3))
    for budget in (2500, None):
        for order, (ids, segments) in fuse_grid(compact, SPACE, "all", CFG, max_pixels=budget).items():
            given = build_result(ids.numpy(), segments, {}, order).segments
            measured = build_result(ids.numpy(), [{k: v for k, v in s.items() if k not in ("bbox", "area")}
                                                  for s in segments], {}, order).segments
            assert given == measured and len(given) >= 3


@pytest.mark.parametrize("budget", [None, 1500, 6000])
def test_numpy_grid_fusion_is_bit_identical_to_the_torch_one(model, budget):
    for seed, size in enumerate(((200, 260), (97, 61), (310, 180))):
        _, out = _outputs(model, _photo(*size, seed=seed))
        keep = out["selected"].nonzero().squeeze(1)
        labels_full = stuff_labels(out["stuff_logits"], out["image_size"], size, 4).numpy()
        cfg = dataclasses.replace(CFG, overlap_thresh=0.3 + 0.2 * seed)
        expected = fuse_grid(out, SPACE, "all", cfg, max_pixels=budget)
        got = np_grid.fuse_grid(out["boxes"][keep].numpy(), out["mask_probs"][keep].numpy(), out["labels"][keep].numpy(),
                                out["scores"][keep].numpy(), out["ranking_scores"][keep].numpy(), labels_full, SPACE,
                                "all", cfg, max_pixels=budget)
        for order in ("score", "srm"):
            assert got[order][0].dtype == np.int32
            assert np.array_equal(got[order][0], expected[order][0].numpy())
            assert got[order][1] == expected[order][1]


def test_predictor_on_a_large_image_matches_its_full_size_fusion(tiny_checkpoint):
    from oanet import Predictor

    rgb = _upscaled(64, 80, factor=8, seed=5)  # 512 x 640: a grid of 4x the network's input, 1/5 of the pixels
    grid = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", order="both", fusion_pixels=65536)(rgb)
    full = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", order="both", fusion_pixels=None)(rgb)
    for order in ("score", "srm"):
        assert (grid[order].panoptic == full[order].panoptic).mean() >= 0.99
        assert grid[order].panoptic.shape == (512, 640)


def test_the_compact_output_holds_nothing_at_the_image_size(model):
    full, compact = _outputs(model, _photo(400, 500))
    assert "masks" not in compact and "sem_seg_labels" not in compact
    assert compact["original_size"] == (400, 500) and compact["mask_probs"].shape[-2:] == (28, 28)
    selected = compact["selected"]
    assert torch.allclose(compact["boxes"], full["boxes"]) and torch.equal(selected, full["selected"])
    assert not compact["mask_probs"][~selected].any()  # the mask head ran on the selected ones only


def test_bench_large_images_smoke(tiny_checkpoint, tmp_path):
    import json

    import bench_large_images

    out = tmp_path / "large.json"
    assert bench_large_images.main(["--checkpoint", str(tiny_checkpoint), "--parts", "speed", "--models", "checkpoint",
                                    "--sizes", "160x120", "640x480", "--repeat", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["size"] for row in report["speed"]] == ["160x120", "640x480"]
    assert all(row["peak_rss_growth_mb"] >= 0 and row["median_s"] > 0 for row in report["speed"])
    assert report["verdicts"] == []  # no target applies to these sizes
