"""Ray Data batch inference (issue 19, part 3): oanet.integrations.ray gives what oanet.Predictor gives,
through a local Ray cluster (skipped where Ray is not installed) and as a plain batch function."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as picture:
        rgb = np.asarray(picture.convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("ray_images")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(8):
        small = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
        path = folder / f"im{i}.png"
        Image.fromarray(small).resize((96, 64), Image.BILINEAR).save(path)  # one size: batching changes nothing
        paths.append(path)
    return paths


def _expected(checkpoint, paths):
    from oanet import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    return [predictor(path) for path in paths]


def _assert_matches(rows, expected, ids):
    assert [row["image_id"] for row in rows] == ids
    for row, result in zip(rows, expected):
        assert np.array_equal(_decode(row["panoptic_png"]), result.panoptic)
        info = json.loads(row["segments_info"])
        coco = result.to_coco(file_name="x.png")["segments_info"]
        assert [{k: v for k, v in s.items() if k not in ("score", "ranking_score")} for s in info] == coco
        # a batch of several images runs other conv kernels than one image: scores agree to float rounding
        scores = [(s["score"], t["score"]) for s, t in zip(info, result.segments)]
        assert all((a is None and b is None) or abs(a - b) < 1e-5 for a, b in scores)


def test_the_batch_function_without_ray(tiny_checkpoint, eight_images):
    from oanet.integrations.ray import BatchPredictor

    expected = _expected(tiny_checkpoint, eight_images)
    predict = BatchPredictor(checkpoint=tiny_checkpoint)
    # paths, encoded files and arrays, as Ray Data's readers give them
    images = [str(eight_images[0]), eight_images[1].read_bytes(), np.asarray(__import__("PIL.Image").Image.open(
        eight_images[2]).convert("RGB"))]
    out = predict({"image": np.array(images, dtype=object), "image_id": np.array([10, 11, 12])})
    assert set(out) == {"image_id", "panoptic_png", "segments_info"} and out["image_id"].tolist() == [10, 11, 12]
    rows = [{k: out[k][i] for k in out} for i in range(3)]
    _assert_matches(rows, expected[:3], [10, 11, 12])
    # picklable: the copy loads the model again and predicts the same
    again = pickle.loads(pickle.dumps(predict))({"image": [str(eight_images[3])]})
    assert again["image_id"].tolist() == [0]
    assert np.array_equal(_decode(again["panoptic_png"][0]), expected[3].panoptic)


def test_refusals_are_one_line(tiny_checkpoint, monkeypatch):
    from oanet.errors import ConfigError, DataError
    from oanet.integrations import ray as integration

    with pytest.raises(ConfigError, match="exactly one of checkpoint"):
        integration.BatchPredictor()
    with pytest.raises(ConfigError, match="order must be"):
        integration.BatchPredictor(checkpoint=tiny_checkpoint, order="both")
    with pytest.raises(DataError, match="image_id 7: not a readable image"):
        integration.BatchPredictor(checkpoint=tiny_checkpoint)({"image": [b"not a png"], "image_id": [7]})
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError) as info:
        integration.RayPredictor(checkpoint=tiny_checkpoint)
    assert str(info.value) == "Ray is not installed: pip install oanet[ray]"


def test_the_module_imports_without_ray():
    code = ("import sys; sys.modules['ray'] = None\n"
            "from oanet.integrations.ray import RayPredictor\n"
            "print(sorted(m for m in ('ray', 'torch') if sys.modules.get(m) is not None))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_ray_data_map_batches_equals_the_predictor(tiny_checkpoint, eight_images):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'oanet[ray]')")
    from oanet.integrations.ray import RayPredictor

    expected = _expected(tiny_checkpoint, eight_images)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = ray.data.from_items([{"image": str(p), "image_id": i} for i, p in enumerate(eight_images)])
        out = ds.map_batches(RayPredictor, fn_constructor_kwargs={"checkpoint": str(tiny_checkpoint)}, batch_size=4,
                             concurrency=2)
        rows = sorted(out.take_all(), key=lambda row: row["image_id"])
    finally:
        ray.shutdown()
    _assert_matches(rows, expected, list(range(8)))
