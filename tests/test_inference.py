"""The inference loop and its sinks with a hand-made predictor (no network, no torch)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from oanet.inference.base import BasePredictor
from oanet.config import FusionConfig
from oanet.data.labels import LabelSpace, parse_categories
from oanet.data.png_io import read_id_png
from oanet.inference.loop import ImageItem, Ranks, run_inference
from oanet.inference.sinks import Collector, OrderDifferences, PanopticJsonWriter

LABELS = LabelSpace(parse_categories([{"id": 1, "name": "disc", "isthing": 1},
                                      {"id": 9, "name": "sky", "isthing": 0}], "test"))


class HandMadePredictor(BasePredictor):
    """Segment 1 (disc) is the left half in the score order; the SRM order also gives it the top row
    when the image's mean is odd, so the orders differ on chosen images."""

    def __init__(self, order="both"):
        super().__init__(LABELS, FusionConfig(), "all", min_size=8, max_size=64, order=order)
        self.batches = []

    def _fuse_batch(self, rgbs, orders, image_ids):
        self.batches.append(len(rgbs))
        out = []
        for rgb in rgbs:
            h, w = rgb.shape[:2]
            ids = np.full((h, w), 2, np.int32)
            ids[:, : w // 2] = 1
            segments = [{"id": 1, "category_id": 1, "isthing": True, "score": 0.9, "ranking_score": 0.4},
                        {"id": 2, "category_id": 9, "isthing": False, "score": None, "ranking_score": None}]
            fused = {"score": (ids, segments)}
            srm = ids.copy()
            if int(rgb[0, 0, 0]) % 2:
                srm[0] = 1
            fused["srm"] = (srm, segments)
            out.append({o: fused[o] for o in orders})
        return out


def items(n, h=6, w=8):
    return [ImageItem(i, 100 + i, f"im{i}.jpg", np.full((h, w, 3), i, np.uint8), f"im{i}.jpg") for i in range(n)]


class FakeRanks(Ranks):
    """Rank 0 of a 2-process group whose other rank's records are given: tests the gathering."""

    def __init__(self, others):
        super().__init__(0, 2)
        object.__setattr__(self, "others", others)

    def gather(self, obj):
        return [obj, self.others.pop(0)]

    def barrier(self):
        pass


def test_loop_batches_feeds_every_sink_and_keeps_order():
    predictor = HandMadePredictor()
    collector = Collector()
    outcome = run_inference(predictor, items(5), [collector], batch_size=2, progress=False, ranks=Ranks())
    assert predictor.batches == [2, 2, 1]
    results = outcome["results"]
    assert [r["srm"].image_id for r in results] == [100, 101, 102, 103, 104]
    assert results[0]["score"].segments[0]["category_name"] == "disc"
    assert results[0]["score"].segments[0]["bbox"] == [0, 0, 4, 6]


def test_order_differences_keep_the_most_different_images(tmp_path):
    sink = OrderDifferences(tmp_path / "diff.json", keep=2)
    run_inference(HandMadePredictor(), items(5), [sink], progress=False, ranks=Ranks())
    written = json.loads((tmp_path / "diff.json").read_text())
    assert list(written) == [f"im{i}.jpg" for i in range(5)]
    assert [written[f"im{i}.jpg"] > 0 for i in range(5)] == [False, True, False, True, False]
    sink = OrderDifferences(keep=1)
    result = run_inference(HandMadePredictor(), items(5), [sink], progress=False, ranks=Ranks())
    (item, results, difference), = result["order_differences"]["most_different"]
    assert item.index == 1 and difference == pytest.approx(4 / 48)  # ties: the earliest image


def test_writer_gathers_other_ranks_in_source_order(tmp_path):
    # This rank predicted images 2..3; the other rank's records (images 0..1) arrive via gather.
    other = PanopticJsonWriter(tmp_path, "srm", LABELS)
    run_inference(HandMadePredictor(), items(2), [other], progress=False, ranks=Ranks())
    mine = PanopticJsonWriter(tmp_path, "srm", LABELS)
    later = items(4)[2:]
    outcome = run_inference(HandMadePredictor(), later, [mine], progress=False, ranks=FakeRanks([other.records]))
    data = json.loads(outcome["srm_order_json"].read_text())
    assert [img["id"] for img in data["images"]] == [100, 101, 102, 103]
    assert [ann["file_name"] for ann in data["annotations"]] == [f"im{i}.png" for i in range(4)]
    ids = read_id_png(tmp_path / "panoptic" / "im3.png")  # odd image: the SRM order gave the disc the top row
    assert data["annotations"][3]["segments_info"][0] == {"id": 1, "category_id": 1, "area": int((ids == 1).sum()),
                                                          "bbox": [0, 0, 8, 6], "iscrowd": 0}


def test_non_main_ranks_return_nothing_from_gathering_sinks(tmp_path):
    class Rank1(Ranks):
        def gather(self, obj):
            return None

    outcome = run_inference(HandMadePredictor(), items(1), [Collector(), OrderDifferences()], progress=False,
                            ranks=Rank1(1, 2))
    assert outcome == {"results": None, "order_differences": None}


def test_the_loop_sinks_and_result_never_import_torch():
    code = ("import sys, oanet, oanet.inference.loop, oanet.inference.sinks, oanet.inference.predict, "
            "oanet.inference.video, oanet.inference.base, oanet.result, oanet.commands.common; "
            "oanet.PanopticResult; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
