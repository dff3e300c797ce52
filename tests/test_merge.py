"""``oanet merge`` and ``oanet.merge.merge_panoptic``: panopticapi's combine script, exactly, by score;
the SRM's order; the order measures; one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from oanet.cli import main
from oanet.data.labels import Category, LabelSpace
from oanet.data.png_io import read_id_png

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "car", "isthing": 1, "color": [0, 0, 142]},
    {"id": 3, "name": "dog", "isthing": 1, "color": [100, 170, 30]},
    {"id": 10, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
    {"id": 11, "name": "road", "isthing": 0, "color": [128, 64, 128]},
]


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def write_inputs(root: Path, seed: int, n_images: int = 6) -> dict:
    """Random detector results (overlaps, score ties, scores under the threshold, an empty mask) and a
    semantic prediction both as label PNGs and as COCO-stuff RLEs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, inst, sem = [], [], []
    (root / "sem").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 110))
        images.append({"id": i + 1, "file_name": f"img{i:03d}.jpg", "height": h, "width": w})
        for _ in range(int(rng.integers(0, 10))):
            m = np.zeros((h, w), bool)
            y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
            m[y:y + int(rng.integers(2, h // 2)), x:x + int(rng.integers(2, w // 2))] = True
            if rng.random() < 0.05:
                m[:] = False  # panopticapi skips an empty mask
            score = float(rng.choice([0.3, 0.5, 0.75, 0.75, 0.9, round(float(rng.random()), 3)]))
            inst.append({"image_id": i + 1, "category_id": int(rng.choice([1, 2, 3])), "score": score,
                         "segmentation": rle(m)})
        labels = np.where(np.arange(h)[:, None] < int(rng.integers(5, h - 5)), 10, 11) * np.ones((1, w), np.int64)
        labels[rng.random((h, w)) < 0.03] = 0  # void
        labels[:3, :3] = 1  # a thing id in the semantic map: skipped, as panopticapi skips it
        Image.fromarray(labels.astype(np.uint8)).save(root / "sem" / f"img{i:03d}.png")
        for c in (1, 10, 11):
            if (labels == c).any():
                sem.append({"image_id": i + 1, "category_id": c, "segmentation": rle(labels == c)})
    paths = {"images": root / "images.json", "inst": root / "inst.json", "sem_json": root / "sem.json",
             "sem_dir": root / "sem", "cats": root / "cats.json"}
    paths["images"].write_text(json.dumps({"images": images, "categories": CATEGORIES}))
    paths["cats"].write_text(json.dumps(CATEGORIES))
    paths["inst"].write_text(json.dumps(inst))
    paths["sem_json"].write_text(json.dumps(sem))
    return paths


def segments_by_pixels(json_path: Path, png_dir: Path) -> dict:
    """{image_id: sorted (category, pixel indices) of every non-empty segment}, plus void per image."""
    out = {}
    for ann in json.loads(json_path.read_text())["annotations"]:
        ids = read_id_png(png_dir / ann["file_name"]).ravel()
        segs = [(s["category_id"], tuple(np.flatnonzero(ids == s["id"]))) for s in ann["segments_info"]]
        out[ann["image_id"]] = sorted(s for s in segs if s[1])
        out[(ann["image_id"], "void")] = tuple(np.flatnonzero(ids == 0))
    return out


@pytest.mark.parametrize("seed,thresholds,semantic", [
    (0, (0.5, 0.5, 64 * 64), "sem_json"),
    (1, (0.5, 0.5, 200), "sem_dir"),
    (2, (0.3, 0.2, 50), "sem_json"),
    (3, (0.7, 0.8, 0), "sem_dir"),
])
def test_score_order_equals_panopticapi_combine_script(tmp_path, seed, thresholds, semantic, capsys):
    combine = pytest.importorskip("panopticapi.combine_semantic_and_instance_predictions",
                                  reason="panopticapi (pip install --no-deps panopticapi-lite) is a test-only reference")
    paths = write_inputs(tmp_path / "in", seed)
    score, overlap, stuff = thresholds
    combine.combine_to_panoptic_multi_core = _single_core(combine)  # no process pool in a test
    combine.combine_predictions(str(paths["sem_json"]), str(paths["inst"]), str(paths["images"]), str(paths["cats"]),
                                str(tmp_path / "ref"), str(tmp_path / "ref.json"), score, overlap, stuff)
    rc = main(["merge", "--instances", str(paths["inst"]), "--semantic", str(paths[semantic]),
               "--images-json", str(paths["images"]), "--out", str(tmp_path / "ours"), "--order", "score",
               "--score-thresh", str(score), "--overlap-thresh", str(overlap), "--stuff-area", str(stuff),
               "--no-progress", "--workers", "2"])
    assert rc == 0
    ref = segments_by_pixels(tmp_path / "ref.json", tmp_path / "ref")
    ours = segments_by_pixels(tmp_path / "ours" / "panoptic.json", tmp_path / "ours" / "panoptic")
    assert ours.keys() == ref.keys()
    for key in ref:
        assert ours[key] == ref[key], key
    assert sum(len(v) for k, v in ref.items() if not isinstance(k, tuple)) > 20  # the inputs exercise something


def _single_core(combine):
    def run(img_id2img, inst_by_image, sem_by_image, folder, overlap_thr, stuff_area_limit, categories):
        return combine.combine_to_panoptic_single_core(0, list(img_id2img), img_id2img, inst_by_image, sem_by_image,
                                                       folder, overlap_thr, stuff_area_limit, categories)
    return run


def two_class_ranker(front: int, back: int):
    """A 1x1 SRM whose logits make class ``front`` win over class ``back`` wherever both are on."""
    from oanet.model.srm import SpatialRankingModule
    from oanet.srm import SpatialRanker

    space = LabelSpace([Category(c["id"], c["name"], bool(c["isthing"]), tuple(c["color"])) for c in CATEGORIES])
    srm = SpatialRankingModule(space.num_things, "1x1", stride=1)
    with torch.no_grad():
        srm.conv.weight.zero_()
        srm.conv.bias.zero_()
        t = space.thing_index([front, back])
        srm.conv.weight[t[0], t[0]] = 5.0
        srm.conv.weight[t[1], t[1]] = 1.0
    return SpatialRanker(srm, space, short_side=40, max_size=1000)


def test_srm_order_pastes_by_ranking_where_score_order_does_not():
    from oanet.merge import Instances, merge_panoptic

    h, w = 40, 60
    person, car = np.zeros((h, w), bool), np.zeros((h, w), bool)
    person[5:30, 10:30] = True
    car[10:35, 20:50] = True  # overlaps the person on rows 10-29, cols 20-29
    instances = Instances(np.stack([car, person]), [2, 1], [0.9, 0.8])  # the car scores higher
    semantic = np.full((h, w), 10)  # sky everywhere
    ranker = two_class_ranker(front=1, back=2)
    fused = merge_panoptic(instances, semantic, order="both", ranker=ranker,
                           settings=__import__("oanet.merge", fromlist=["MergeSettings"]).MergeSettings(0.5, 0.9, 0))
    for order, front in (("score", 2), ("srm", 1)):
        ids, segments = fused[order]
        on_top = next(s for s in segments if s["id"] == int(ids[15, 25]))
        assert on_top["category_id"] == front, order
    srm_scores = {s["category_id"]: s["ranking_score"] for s in fused["srm"][1] if s["isthing"]}
    assert srm_scores[1] > srm_scores[2]
    assert {s["category_id"] for s in fused["srm"][1] if not s["isthing"]} == {10}


def test_python_api_equals_the_command(tmp_path):
    from oanet.merge import Instances, MergeSettings, merge_panoptic
    from oanet.merge.inputs import decode_rles, read_inputs

    paths = write_inputs(tmp_path / "in", 5, n_images=3)
    assert main(["merge", "--instances", str(paths["inst"]), "--semantic", str(paths["sem_dir"]), "--images-json",
                 str(paths["images"]), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    inputs = read_inputs(paths["inst"], paths["sem_dir"], paths["images"])
    for info in inputs.images:
        rows = inputs.instances.get(info.id, [])
        inst = Instances(decode_rles(rows, info, "x"), [r["category_id"] for r in rows], [r["score"] for r in rows])
        from PIL import Image

        semantic = np.asarray(Image.open(paths["sem_dir"] / info.file_name.replace(".jpg", ".png")))
        ids, segments = merge_panoptic(inst, semantic, label_space=inputs.label_space, settings=MergeSettings())
        written = read_id_png(tmp_path / "out" / "panoptic" / info.file_name.replace(".jpg", ".png"))
        assert np.array_equal(written, ids.numpy())
        assert len([s for s in segments if s["area"] > 0]) == len(
            json.loads((tmp_path / "out" / "panoptic.json").read_text())["annotations"][info.id - 1]["segments_info"])


def run_error(argv, capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def merge_argv(paths, out, **replace) -> list:
    args = {"--instances": paths["inst"], "--semantic": paths["sem_dir"], "--images-json": paths["images"], "--out": out}
    args.update(replace)
    return ["merge", *[str(x) for kv in args.items() for x in kv], "--no-progress"]


def test_bad_inputs_get_one_line_naming_the_file(tmp_path, capsys):
    paths = write_inputs(tmp_path / "in", 7, n_images=2)
    results = json.loads(paths["inst"].read_text())
    out = tmp_path / "out"

    bad = tmp_path / "size.json"
    wrong = dict(results[0], segmentation=rle(np.ones((5, 5), bool)))
    bad.write_text(json.dumps([wrong]))
    err = run_error(merge_argv(paths, out, **{"--instances": bad}), capsys)
    assert str(bad) in err and "RLE size" in err

    bad = tmp_path / "cat.json"
    bad.write_text(json.dumps([dict(results[0], category_id=77)]))
    err = run_error(merge_argv(paths, out, **{"--instances": bad}), capsys)
    assert str(bad) in err and "unknown category id(s) [77]" in err

    bad = tmp_path / "image.json"
    bad.write_text(json.dumps([dict(results[0], image_id=999)]))
    err = run_error(merge_argv(paths, out, **{"--instances": bad}), capsys)
    assert str(bad) in err and "999" in err and "images JSON" in err

    not_srm = tmp_path / "not_srm.pth"
    torch.save({"model": {"backbone.weight": torch.zeros(1)}, "config": {}}, not_srm)
    err = run_error(merge_argv(paths, out, **{"--srm": not_srm}), capsys)
    assert str(not_srm) in err and "no SRM" in err

    code = tmp_path / "code.pth"
    torch.save({"model": {}, "config": {}, "evil": Path("x")}, code)  # a pickled class: refused, not run
    err = run_error(merge_argv(paths, out, **{"--srm": code}), capsys)
    assert str(code) in err

    from PIL import Image
    Image.new("RGB", (3, 3)).save(paths["sem_dir"] / "img000.png")
    err = run_error(merge_argv(paths, out), capsys)
    assert "img000.png" in err and "mode RGB" in err


def test_order_measures_on_a_hand_made_occlusion(tmp_path, capsys):
    """A cup stands in front of a box and scores lower: the score order hides it, the SRM's does not."""
    from PIL import Image

    from oanet.data.png_io import write_id_png

    h, w = 40, 60
    box, cup = np.zeros((h, w), bool), np.zeros((h, w), bool)
    box[5:35, 5:45] = True  # 1200 px, amodal
    cup[15:35, 25:40] = True  # 300 px, inside the box's outline, in front
    ids = np.full((h, w), 3, np.uint32)
    ids[box], ids[cup] = 2, 1
    (tmp_path / "gt").mkdir()
    write_id_png(tmp_path / "gt" / "a.png", ids)
    image = {"id": 1, "file_name": "a.jpg", "height": h, "width": w}
    segments = [{"id": s, "category_id": c, "iscrowd": 0, "area": int((ids == s).sum()), "bbox": [0, 0, 1, 1]}
                for s, c in ((1, 3), (2, 2), (3, 10))]
    (tmp_path / "gt.json").write_text(json.dumps({"images": [image], "categories": CATEGORIES, "annotations": [
        {"image_id": 1, "file_name": "a.png", "segments_info": segments}]}))
    (tmp_path / "inst.json").write_text(json.dumps({"images": [image], "categories": CATEGORIES[:3], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": rle(box), "area": 1200, "bbox": [0, 0, 1, 1]},
        {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": rle(cup), "area": 300, "bbox": [0, 0, 1, 1]},
    ]}))
    (tmp_path / "det.json").write_text(json.dumps([
        {"image_id": 1, "category_id": 2, "score": 0.9, "segmentation": rle(box)},
        {"image_id": 1, "category_id": 3, "score": 0.8, "segmentation": rle(cup)}]))
    (tmp_path / "sem").mkdir()
    Image.fromarray(np.full((h, w), 10, np.uint8)).save(tmp_path / "sem" / "a.png")
    two_class_ranker(front=3, back=2).save(tmp_path / "srm.pth")
    rc = main(["merge", "--instances", str(tmp_path / "det.json"), "--semantic", str(tmp_path / "sem"),
               "--images-json", str(tmp_path / "gt.json"), "--out", str(tmp_path / "out"), "--srm",
               str(tmp_path / "srm.pth"), "--gt-json", str(tmp_path / "gt.json"), "--gt-dir", str(tmp_path / "gt"),
               "--gt-instances", str(tmp_path / "inst.json"), "--stuff-area", "0", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "pairwise order acc." in printed and "PQ_th none <10%" in printed
    ev = json.loads((tmp_path / "out" / "merge.json").read_text())["evaluation"]
    assert ev["pairs"] == 1
    assert ev["pairwise_order_accuracy"] == {"score": 0.0, "srm": 100.0}
    levels = {o: {r["level"]: r for r in ev["pq_th_by_occlusion"][o]} for o in ("score", "srm")}
    # score order: the cup (not occluded) is dropped under the box: a miss; the box (25 % covered) keeps
    # its amodal mask: IoU 900 / 1200 with its visible part.
    assert levels["score"]["none <10%"] == {"level": "none <10%", "pq_th": 0.0, "tp": 0, "fn": 1, "fp": 0}
    assert levels["score"]["light 10-30%"]["pq_th"] == 75.0
    assert levels["srm"]["none <10%"]["pq_th"] == 100.0 and levels["srm"]["light 10-30%"]["pq_th"] == 100.0
    assert ev["pq"]["srm"]["Things"]["pq"] == 1.0 and ev["pq"]["score"]["Things"]["pq"] < 0.5


def test_pairwise_agreement_counts_only_decided_pairs():
    from oanet.evaluation.occlusion import pairwise_agreement

    gt = np.full((10, 10), -1)
    gt[:, :5], gt[:, 5:] = 0, 1
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :, :7] = True  # matched to segment 0; overlaps detection 1 on columns 3-6
    masks[1, :, 3:] = True  # matched to segment 1
    masks[2, :, :] = True  # unmatched: its pairs are not counted
    match = np.array([0, 1, -1])
    # overlap columns 3-6: segment 0 owns 3-4 (20 px), segment 1 owns 5-6 (20 px): a tie, not decided
    assert pairwise_agreement(masks, match, gt, {"a": np.array([0, 1, 2])}) == (0, {"a": 0})
    masks[0, :, 7] = True  # now segment 1 owns 3 columns of the overlap: detection 1 is in front
    pairs, agree = pairwise_agreement(masks, match, gt, {"front0": np.array([0, 1, 2]), "front1": np.array([1, 0, 2])})
    assert pairs == 1 and agree == {"front0": 0, "front1": 1}


def test_semantic_results_named_by_file_as_detectron2_writes_them(tmp_path):
    paths = write_inputs(tmp_path / "in", 11, n_images=3)
    images = {i["id"]: i["file_name"] for i in json.loads(paths["images"].read_text())["images"]}
    by_file = [{"file_name": f"/data/coco/val2017/{images[r['image_id']]}", "category_id": r["category_id"],
                "segmentation": r["segmentation"]} for r in json.loads(paths["sem_json"].read_text())]
    (tmp_path / "d2.json").write_text(json.dumps(by_file))
    for name, semantic in (("ids", paths["sem_json"]), ("files", tmp_path / "d2.json")):
        assert main(merge_argv(paths, tmp_path / name, **{"--semantic": semantic})) == 0
    assert segments_by_pixels(tmp_path / "ids" / "panoptic.json", tmp_path / "ids" / "panoptic") == \
        segments_by_pixels(tmp_path / "files" / "panoptic.json", tmp_path / "files" / "panoptic")


# --------------------------------------------------------------------------------------------
# the score order on RLE runs (oanet.merge.runs): the same output as OANet's fusion, without masks


def _random_intervals(rng, size: int):
    from oanet.merge.runs import intervals_of_runs

    dense = rng.random(size) < rng.uniform(0.1, 0.9)
    dense[rng.random(size) < 0.5] = False
    change = np.flatnonzero(np.diff(dense.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], change, [size]]))
    if dense[0]:
        runs = np.concatenate([[0], runs])
    return dense, intervals_of_runs(runs)


def _dense(intervals, size: int) -> np.ndarray:
    out = np.zeros(size, bool)
    for s, e in zip(*intervals):
        assert e > s  # no empty interval
        out[s:e] = True
    return out


def test_interval_algebra_equals_sets_of_pixels():
    from oanet.merge.runs import difference, disjoint_union, labelled_difference, length, union

    rng = np.random.default_rng(0)
    for _ in range(50):
        size = int(rng.integers(1, 300))
        (a, ia), (b, ib) = _random_intervals(rng, size), _random_intervals(rng, size)
        assert np.array_equal(_dense(difference(ia, ib), size), a & ~b)
        assert np.array_equal(_dense(union(ia, ib), size), a | b)
        assert np.array_equal(_dense(disjoint_union(ib, difference(ia, ib)), size), a | b)
        assert length(ia) == a.sum()
        # two disjoint labelled regions (a's pixels split at a random point) minus b
        cut = int(rng.integers(0, size + 1))
        left = _random_intervals_from(a & (np.arange(size) < cut))
        right = _random_intervals_from(a & (np.arange(size) >= cut))
        parts = labelled_difference({3: left, 7: right}, ib)
        for label, region in ((3, a & (np.arange(size) < cut)), (7, a & (np.arange(size) >= cut))):
            want = region & ~b
            assert np.array_equal(_dense(parts.get(label, (np.zeros(0, int), np.zeros(0, int))), size), want)
            assert (label in parts) == bool(want.any())


def test_many_masks_runs_to_intervals_at_once():
    from oanet.merge.runs import intervals_of_runs_many

    rng = np.random.default_rng(2)
    for _ in range(100):  # zero-length runs too: intervals that touch are joined, never across masks
        runs = [rng.integers(0, 4, int(rng.integers(0, 12))) for _ in range(int(rng.integers(1, 6)))]
        for r, (starts, ends) in zip(runs, intervals_of_runs_many(runs)):
            ones = np.repeat(np.arange(len(r)) % 2 == 1, r)  # zeros first, then ones, alternating
            assert np.array_equal(_dense((starts, ends), ones.size), ones), r
            assert (starts[1:] > ends[:-1]).all(), r  # sorted, disjoint, none touching


def _random_intervals_from(dense: np.ndarray):
    from oanet.merge.runs import intervals_of_runs

    change = np.flatnonzero(np.diff(dense.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], change, [dense.size]]))
    return intervals_of_runs(np.concatenate([[0], runs]) if dense.size and dense[0] else runs)


def test_batch_rle_decoding_equals_pycocotools():
    from oanet.data.instances import compressed_rle_runs_many

    rng = np.random.default_rng(1)
    masks = [(rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random()) for _ in range(30)]
    masks[3][:] = False
    masks[4][:] = True
    strings = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"] for m in masks]
    for m, runs in zip(masks, compressed_rle_runs_many(strings)):
        flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)  # zeros first, then ones, alternating
        assert np.array_equal(flat, m.T.ravel())
    assert compressed_rle_runs_many([strings[0], strings[1][:-1] + b"\x7f"]) is None  # one bad string: None


@pytest.mark.parametrize("semantic", ["sem_json", "sem_dir", "overlapping"])
def test_score_merge_on_runs_equals_oanet_fusion(tmp_path, semantic):
    """Segments, areas, boxes and pixels of :func:`merge_score_runs` equal ``merge_panoptic``'s (the
    fusion on decoded masks), with polygons and uncompressed RLEs among the instances and, in
    "overlapping", stuff RLEs that overlap (the first listed keeps the overlap, as in the fusion)."""
    from oanet.merge import Instances, MergeSettings, merge_panoptic
    from oanet.merge.inputs import read_inputs, semantic_labels
    from oanet.merge.runs import merge_score_runs
    from oanet.result import build_result

    paths = write_inputs(tmp_path / "in", 21, n_images=12)
    results = json.loads(paths["inst"].read_text())
    for k, r in enumerate(results[::4]):  # other segmentation encodings take the row-by-row decoding
        m = mask_utils.decode(dict(r["segmentation"], counts=r["segmentation"]["counts"].encode()))
        flat = m.T.ravel()
        change = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
        r["segmentation"] = {"size": r["segmentation"]["size"], "counts": ([0] + runs) if flat[0] else runs}
    paths["inst"].write_text(json.dumps(results))
    if semantic == "overlapping":
        sem = json.loads(paths["sem_json"].read_text())
        images = {i["id"]: i for i in json.loads(paths["images"].read_text())["images"]}
        extra = []
        for i, info in images.items():
            blob = np.zeros((info["height"], info["width"]), bool)
            blob[5:30, 10:40] = True  # over sky and road; listed first: it keeps the overlap (when big enough)
            extra.append({"image_id": i, "category_id": 11 if i % 2 else 10, "segmentation": rle(blob)})
        (tmp_path / "overlap.json").write_text(json.dumps(extra + sem))
        paths["overlapping"] = tmp_path / "overlap.json"
    inputs = read_inputs(paths["inst"], paths[semantic], paths["images"], paths["cats"])
    for settings in (MergeSettings(), MergeSettings(0.3, 0.2, 50), MergeSettings(0.5, 0.5, 0)):
        for info in inputs.images:
            rows = [r for r in inputs.instances.get(info.id, []) if r["score"] >= settings.score_thresh]
            instances = (Instances.from_results(rows, info.height, info.width) if rows else
                         Instances(np.zeros((0, info.height, info.width), np.uint8), [], []))
            stuff = semantic_labels(inputs, info)  # stuff indices, -1 void: as category ids (0 void)
            category_map = np.where(stuff >= 0, inputs.label_space.stuff_ids[np.maximum(stuff, 0)], 0)
            ids, segments = merge_panoptic(instances, category_map, label_space=inputs.label_space, settings=settings)
            want = build_result(ids.numpy(), segments, inputs.categories(), "score", info.id, info.file_name)
            got = build_result(*merge_score_runs(inputs, info, settings), inputs.categories(), "score", info.id,
                               info.file_name)
            assert np.array_equal(got.panoptic, want.panoptic), info
            assert got.segments == want.segments, info


def test_score_merge_imports_no_torch_and_processes_equal_one_thread(tmp_path):
    import subprocess
    import sys

    paths = write_inputs(tmp_path / "in", 5, n_images=8)
    code = ("import sys; from oanet.cli import main; "
            f"rc = main({merge_argv(paths, tmp_path / 'two', **{'--semantic': paths['sem_json']})!r} + ['--workers', '2']); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'oanet merge --order score imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(merge_argv(paths, tmp_path / "one", **{"--semantic": paths["sem_json"]}) + ["--workers", "1"]) == 0
    one, two = tmp_path / "one", tmp_path / "two"
    for f in sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file() and p.name != "merge.json"):
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
