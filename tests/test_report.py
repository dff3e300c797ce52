"""report.html (oanet.report): its numbers and pictures, and the page itself in headless Chromium and Firefox.

The page checks itself with ``report.html?selftest=1`` (sorts a table, hovers a segment, flips the order
toggle, records every error) and writes a JSON verdict into ``<pre id="selftest">``, which
``chromium --headless --dump-dom`` prints (Firefox: read over Marionette). Without Debian's ``chromium``
(``firefox-esr``) package those tests skip.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oanet.data.png_io import write_id_png
from oanet.evaluation.differences import panoptic_map_difference
from oanet.evaluation.pq import image_pq, pq_compute, pq_per_image
from oanet.report import images as I

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian's chromium package: apt-get install chromium; .ci/run "
    "installs it when run as root)")
FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
needs_firefox = pytest.mark.skipif(
    FIREFOX is None, reason="no firefox on PATH (Debian's firefox-esr package; .ci/run installs it when run as root)")

CATEGORIES = [
    {"id": 1, "name": "disc", "isthing": 1, "color": [220, 60, 60]},
    {"id": 2, "name": "square", "isthing": 1, "color": [60, 90, 220]},
    {"id": 20, "name": "grass", "isthing": 0, "color": [60, 170, 60]},
    {"id": 21, "name": "sky", "isthing": 0, "color": [140, 200, 240]},
]
H, W = 48, 64


def scene(shift: int) -> dict[str, np.ndarray]:
    """One image's id maps: the ground truth (the square in front of the disc), the score order (the
    disc pasted on top: wrong) and the SRM order (right). Things get ids 1 (disc), 2 (square)."""
    gt = np.zeros((H, W), np.uint32)
    gt[: H // 2] = 21
    gt[H // 2:] = 20
    gt[10:34, 8 + shift:36 + shift] = 1
    gt[18:42, 24 + shift:52 + shift] = 2
    gt[0:4, 0:6] = 0  # a void corner
    srm = np.where(gt == 21, 4, np.where(gt == 20, 3, gt)).astype(np.uint32)
    score = srm.copy()
    score[10:34, 8 + shift:36 + shift] = 1  # the disc over the square
    return {"gt": gt, "score": score, "srm": srm}


def segments_of(ids: np.ndarray, categories: dict) -> list[dict]:
    out = []
    for seg_id in np.unique(ids):
        if seg_id == 0:
            continue
        ys, xs = np.nonzero(ids == seg_id)
        out.append({"id": int(seg_id), "category_id": categories[int(seg_id)], "area": int(len(ys)),
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                    "iscrowd": 0})
    return out


GT_CATS = {1: 1, 2: 2, 20: 20, 21: 21}
PRED_CATS = {1: 1, 2: 2, 3: 20, 4: 21}


def make_evaluation(root: Path, n: int = 4, variants: int = 4, link: bool = False) -> dict:
    """An ``oanet evaluate`` folder by hand: GT, both orders' predictions, results.json,
    order_differences.json, segment_scores.json and order_measures.json. ``link``: images past the first
    ``variants`` are hard links to those (for the 5,000-image page)."""
    for sub in ("images", "gt", "out/score_order/panoptic", "out/srm_order/panoptic"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, gt_anns, preds = [], [], {"score": [], "srm": []}
    differences, scores = {}, {"score_order": {}, "srm_order": {}}
    for i in range(n):
        name = f"img{i:05d}"
        v = i % variants
        maps = scene(shift=2 * v)
        if i == 1 and not link:
            maps["score"] = maps["srm"].copy()  # an image where the orders agree
        targets = {"gt": root / "gt" / f"{name}.png", "score": root / "out/score_order/panoptic" / f"{name}.png",
                   "srm": root / "out/srm_order/panoptic" / f"{name}.png", "image": root / "images" / f"{name}.jpg"}
        if link and i >= variants:
            source = f"img{v:05d}"
            for key, path in targets.items():
                os.link(path.with_name(source + path.suffix), path)
        else:
            for key in ("gt", "score", "srm"):
                write_id_png(targets[key], maps[key])
            rgb = (rng.random((H, W, 3)) * 80 + 60).astype(np.uint8)
            Image.fromarray(rgb).save(targets["image"], quality=90)
        images.append({"id": i + 1, "file_name": f"{name}.jpg", "width": W, "height": H})
        gt_anns.append({"image_id": i + 1, "file_name": f"{name}.png", "segments_info": segments_of(maps["gt"], GT_CATS)})
        for o in ("score", "srm"):
            preds[o].append({"image_id": i + 1, "file_name": f"{name}.png",
                             "segments_info": segments_of(maps[o], PRED_CATS)})
            scores[f"{o}_order"][f"{name}.png"] = [[1, 0.91, 0.35], [2, 0.84, 0.72]]
        differences[f"{name}.jpg"] = panoptic_map_difference(maps["score"], maps["srm"])
    gt = {"images": images, "annotations": gt_anns, "categories": CATEGORIES}
    (root / "gt.json").write_text(json.dumps(gt))
    out = root / "out"
    results = {}
    for o in ("score", "srm"):
        pred = {"images": images, "annotations": preds[o], "categories": CATEGORIES}
        (out / f"{o}_order" / "panoptic.json").write_text(json.dumps(pred))
        results[f"{o}_order"] = pq_compute(gt, root / "gt", pred, out / f"{o}_order" / "panoptic", workers=1,
                                           progress=False).to_dict()
    (out / "results.json").write_text(json.dumps(results))
    (out / "order_differences.json").write_text(json.dumps(differences))
    (out / "segment_scores.json").write_text(json.dumps(scores))
    level = lambda pq: {"level": "medium 30-50%", "pq_th": pq, "tp": 3, "fn": 1, "fp": 1}  # noqa: E731
    (out / "order_measures.json").write_text(json.dumps({
        "images": n, "pairs": n, "pairwise_order_accuracy": {"score": 0.0, "srm": 100.0},
        "pq_th_by_occlusion": {"score": [level(40.0)], "srm": [level(80.0)]}}))
    return {"gt_json": root / "gt.json", "gt_dir": root / "gt", "image_dir": root / "images", "out": out,
            "results": results}


def selftest(page: Path, tmp_path: Path) -> dict:
    """The page's own verdict from headless Chromium (``?selftest=1``)."""
    profile = tmp_path / "chromium-profile"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
               "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri() + "?selftest=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="selftest"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1), f"no verdict in the page (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def firefox_selftest(page: Path, tmp_path: Path, timeout: float = 60.0) -> dict:
    """The page's own verdict from headless Firefox, read over Marionette (length-prefixed JSON on a socket:
    navigate, then read ``<pre id="selftest">`` until the page has written it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    profile = tmp_path / "firefox-profile"
    profile.mkdir(exist_ok=True)
    (profile / "user.js").write_text(f'user_pref("marionette.port", {port});\n')
    proc = subprocess.Popen([FIREFOX, "--headless", "--marionette", "-no-remote", "-profile", str(profile)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        with sock:
            pending = b""

            def receive():
                nonlocal pending
                while b":" not in pending:
                    pending += sock.recv(65536)
                size, rest = pending.split(b":", 1)
                while len(rest) < int(size):
                    rest += sock.recv(65536)
                pending = rest[int(size):]
                return json.loads(rest[: int(size)])

            def command(k, name, params):
                data = json.dumps([0, k, name, params]).encode()
                sock.sendall(str(len(data)).encode() + b":" + data)
                reply = receive()
                assert reply[2] is None, reply
                return reply[3]

            receive()  # the server's greeting
            command(1, "WebDriver:NewSession", {"capabilities": {}})
            command(2, "WebDriver:Navigate", {"url": page.resolve().as_uri() + "?selftest=1"})
            for k in range(3, 10_000):
                value = command(k, "WebDriver:ExecuteScript",
                                {"script": "return document.getElementById('selftest').textContent", "args": []})
                if value and value.get("value"):
                    verdict = json.loads(value["value"])
                    break
                assert time.monotonic() < deadline, "the page wrote no verdict"
                time.sleep(0.1)
            try:
                command(k + 1, "Marionette:Quit", {})
            except (AssertionError, OSError, ValueError):
                pass
            return verdict
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --------------------------------------------------------------------------------------------
# pieces


def test_index_map_run_lengths_round_trip():
    rng = np.random.default_rng(1)
    for shape in ((1, 1), (7, 300), (40, 33)):
        index = rng.integers(0, 3, size=shape)
        index[:, : shape[1] // 2] = 200  # values above one varint byte, runs longer than 127
        text = I.encode_index_map(index)
        assert np.array_equal(I.decode_index_map(text, shape[1], shape[0]), index)
    big = np.full((300, 300), 5)  # one run of 90,000: a three-byte varint
    assert np.array_equal(I.decode_index_map(I.encode_index_map(big), 300, 300), big)


def test_index_map_and_nearest_sampling_keep_real_segments():
    ids = np.array([[0, 7, 7, 9], [9, 9, 12, 12]], dtype=np.uint32)
    assert I.index_map(ids, [9, 7]).tolist() == [[0, 2, 2, 1], [1, 1, 0, 0]]  # 12 is declared by no segment
    small = I.sample(np.arange(100).reshape(10, 10), (5, 5))
    assert small.shape == (5, 5) and set(small.ravel()) <= set(range(100))
    assert I.fit(640, 480, 256) == (256, 192) and I.fit(64, 48, 320) == (64, 48)
    assert I.fit(64, 48, 320, enlarge=True) == (320, 240)


def test_disagreement_marks_the_pixels_that_change_owner():
    maps = scene(0)
    mask = I.disagreement(maps["score"], maps["srm"])
    moved = (maps["score"] != maps["srm"])
    assert np.array_equal(mask, moved)  # here every moved pixel changes owner
    renamed = np.where(maps["srm"] == 4, 40, maps["srm"])
    assert not I.disagreement(maps["srm"], renamed).any()  # ids are free labels
    assert mask.mean() >= panoptic_map_difference(maps["score"], maps["srm"]) > 0


def test_per_image_pq_sums_to_the_dataset_pq(tmp_path):
    ev = make_evaluation(tmp_path)
    pred = ev["out"] / "srm_order"
    ids, stats, categories = pq_per_image(ev["gt_json"], ev["gt_dir"], pred / "panoptic.json", pred / "panoptic",
                                          workers=2)
    whole = pq_compute(ev["gt_json"], ev["gt_dir"], pred / "panoptic.json", pred / "panoptic", progress=False)
    assert ids == [1, 2, 3, 4] and stats.shape == (4, 4, len(categories))
    assert np.array_equal(stats.sum(axis=0), whole.stats)
    per = image_pq(stats)
    assert per.shape == (4,) and np.all((per > 0) & (per <= 1))
    assert np.isnan(image_pq(np.zeros((1, 4, 3))))[0]  # an image where no category occurs


# --------------------------------------------------------------------------------------------
# pages


def _data(page: Path) -> dict:
    text = page.read_text()
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_evaluation_report_numbers_and_files(tmp_path):
    from oanet.report import write_evaluation_report

    ev = make_evaluation(tmp_path)
    page = write_evaluation_report(ev["out"], ev["gt_json"], ev["gt_dir"], ev["image_dir"], images=1, workers=2)
    assert page == ev["out"] / "report.html"
    text, data = page.read_text(), _data(page)
    for needle in ("Summary", "Per class", "Order measures", "pairwise order accuracy", "disc", "square"):
        assert needle in text
    assert "http://" not in text and "https://" not in text  # nothing fetched
    assert data["orders"] == ["score", "srm"] and data["has_gt"] and data["total"] == 4
    # 1 worst + 1 best by PQ + 1 most different: the images that differ are worse in the score order only
    shown = {im["n"] for im in data["images"]}
    assert 1 <= len(shown) <= 3 and len(data["all"]) == 4
    for im in data["images"]:
        assert (ev["out"] / "report_files" / im["t"]).is_file()
        script = (ev["out"] / "report_files" / "data" / f"{im['k']}.js").read_text()
        hover = json.loads(script[script.index(",") + 1: script.rindex(")")])
        assert set(hover["panels"]) == {"gt", "score", "srm", "diff"}
        assert all((ev["out"] / "report_files" / p).is_file() for p in hover["panels"].values())
        index = I.decode_index_map(hover["maps"]["srm"], hover["w"], hover["h"])
        assert index.max() <= len(hover["segs"]["srm"])
        assert [s[3:] for s in hover["segs"]["srm"] if s[0] == 1] == [[0.91, 0.35]]  # segment_scores.json
    # the per-image PQ of the listed rows: the SRM is never worse here, better where the orders differ
    for name, pq_score, pq_srm, diff in data["all"]:
        assert pq_srm >= pq_score and (diff > 0) == (pq_srm > pq_score)
    again = write_evaluation_report(ev["out"], ev["gt_json"], ev["gt_dir"], ev["image_dir"], images=0)
    assert again.is_file() and not list((ev["out"] / "report_files").glob("*.jpg"))  # stale pictures removed


@needs_chromium
def test_evaluation_report_in_chromium(tmp_path):
    from oanet.report import write_evaluation_report

    ev = make_evaluation(tmp_path)
    page = write_evaluation_report(ev["out"], ev["gt_json"], ev["gt_dir"], ev["image_dir"], workers=1)
    verdict = selftest(page, tmp_path)
    assert verdict["errors"] == [] and "exception" not in verdict, verdict
    checks = verdict["checks"]
    assert checks["sort"]["ok"] and checks["sort"]["table"] == "class-table", checks["sort"]
    hover = checks["hover"]
    # the largest thing of the SRM order is the square, id 2, with the scores segment_scores.json gives it
    assert hover["ok"] and hover["category"] == "square" and hover["segment_id"] == 2, hover
    assert "detection score 0.840" in hover["tooltip"] and "ranking score 0.720" in hover["tooltip"], hover
    assert checks["toggle"]["ok"] and checks["toggle"]["from"] != checks["toggle"]["to"], checks["toggle"]
    assert checks["pictures"]["ok"] and checks["pictures"]["count"] == 5
    assert verdict["ok"]


@needs_firefox
def test_evaluation_report_in_firefox(tmp_path):
    from oanet.report import write_evaluation_report

    ev = make_evaluation(tmp_path)
    page = write_evaluation_report(ev["out"], ev["gt_json"], ev["gt_dir"], ev["image_dir"], workers=1)
    verdict = firefox_selftest(page, tmp_path)
    assert verdict["ok"] and verdict["errors"] == [], verdict
    assert verdict["checks"]["hover"]["category"] == "square" and verdict["checks"]["sort"]["ok"], verdict


@needs_chromium
def test_a_broken_picture_is_an_error_in_the_verdict(tmp_path):
    from oanet.report import write_evaluation_report

    ev = make_evaluation(tmp_path)
    page = write_evaluation_report(ev["out"], ev["gt_json"], ev["gt_dir"], ev["image_dir"], workers=1)
    for path in (ev["out"] / "report_files").glob("*_gt.jpg"):
        path.unlink()
    verdict = selftest(page, tmp_path)
    assert not verdict["ok"] and any("failed to load" in e and "_gt.jpg" in e for e in verdict["errors"]), verdict


@needs_chromium
def test_merge_report_without_ground_truth(tmp_path):
    from oanet.report import write_merge_report

    ev = make_evaluation(tmp_path)
    out = ev["out"]
    summary = {"instances": "dets.json", "semantic": "sem/", "images": 4, "orders": ["score", "srm"],
               "outputs": {o: str(out / f"{o}_order" / "panoptic.json") for o in ("score", "srm")}}
    page = write_merge_report(out, summary, workers=1)  # no --image-dir: the segments' colours alone
    data = _data(page)
    assert not data["has_gt"] and "Per class" not in page.read_text()
    # no PQ: the images where the orders differ, most different first, computed from the PNGs
    assert {im["n"] for im in data["images"]} == {"img00000.jpg", "img00002.jpg", "img00003.jpg", "img00001.jpg"}
    assert [row[1] > 0 for row in data["all"]] == [True, False, True, True]
    verdict = selftest(page, tmp_path)
    assert verdict["ok"], verdict
    assert "sort" not in verdict["checks"] and verdict["checks"]["hover"]["category"] == "square"


@needs_chromium
def test_check_data_report(tmp_path, capsys):
    from oanet.cli import main

    ev = make_evaluation(tmp_path)
    gt = json.loads(ev["gt_json"].read_text())
    gt["annotations"][0]["segments_info"][0]["area"] += 5  # area-mismatch (an error)
    gt["annotations"][2]["segments_info"].append({"id": 99, "category_id": 1, "area": 10, "bbox": [0, 0, 1, 1],
                                                  "iscrowd": 0})  # segment-not-in-png
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(gt))
    out = tmp_path / "check"
    assert main(["check-data", "--panoptic-json", str(broken), "--panoptic-dir", str(ev["gt_dir"]), "--image-dir",
                 str(ev["image_dir"]), "--out", str(out), "--no-progress", "--workers", "1"]) == 2
    assert f"{out / 'report.html'}" in capsys.readouterr().out
    text = (out / "report.html").read_text()
    for kind in ("area-mismatch", "segment-not-in-png"):
        assert f'data-kind="{kind}"' in text
    assert "img00000.png" in text and "img00002.png" in text and 'src="overlays/' in text
    verdict = selftest(out / "report.html", tmp_path)
    assert verdict["ok"] and verdict["checks"]["sort"]["table"] == "category-table", verdict


def test_five_thousand_images_stay_a_light_page(tmp_path):
    """COCO val's size: the page embeds pictures of 3 x N images only and lists the rest compactly."""
    from oanet.report import write_evaluation_report

    ev = make_evaluation(tmp_path, n=5000, variants=4, link=True)
    started = time.perf_counter()
    page = write_evaluation_report(ev["out"], ev["gt_json"], ev["gt_dir"], ev["image_dir"], workers=2)
    seconds = time.perf_counter() - started
    size = page.stat().st_size
    data = _data(page)
    assert data["total"] == 5000 and len(data["all"]) == 5000 and len(data["images"]) <= 150
    assert size < 2_000_000, f"{size} bytes"
    assert len(list((ev["out"] / "report_files" / "data").iterdir())) == len(data["images"])
    print(f"5000 images: report.html {size / 1e6:.2f} MB written in {seconds:.1f} s")


@pytest.mark.slow
@needs_chromium
def test_oanet_evaluate_writes_a_report_that_works(tmp_path, tiny_checkpoint):
    from oanet.cli import main

    ev = make_evaluation(tmp_path, n=3)
    gt = json.loads(ev["gt_json"].read_text())
    # the tiny model's categories (disc, square, star; grass, sky)
    from conftest import TINY_CATEGORIES

    gt["categories"] = TINY_CATEGORIES
    ev["gt_json"].write_text(json.dumps(gt))
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data-json", str(ev["gt_json"]),
                 "--data-png-dir", str(ev["gt_dir"]), "--data-image-dir", str(ev["image_dir"]), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    scores = json.loads((out / "segment_scores.json").read_text())
    assert set(scores) == {"score_order", "srm_order"} and len(scores["srm_order"]) == 3
    assert all(row[1] is not None and row[2] is not None for rows in scores["srm_order"].values() for row in rows)
    verdict = selftest(out / "report.html", tmp_path)
    assert verdict["errors"] == [] and verdict["checks"]["toggle"]["ok"] and verdict["checks"]["sort"]["ok"], verdict


def test_demo_writes_its_page_and_the_evaluation_page(tmp_path):
    from oanet.config import SplitConfig
    from oanet.experiments.demo import write_html_reports

    ev = make_evaluation(tmp_path / "demo")
    split = SplitConfig(panoptic_json=str(ev["gt_json"]), panoptic_dir=str(ev["gt_dir"]), image_dir=str(ev["image_dir"]))
    run = {"data_dir": "data", "train_images": 10, "val_images": 4, "preset": "synthetic_cpu.yaml", "iterations": 2,
           "train_minutes": 0.1, "eval_minutes": 0.1, "device": "cpu", "checkpoint": "train/model_final.pth",
           "quick": True, "no_oracle": "no depth"}
    page = write_html_reports(tmp_path / "demo", ev["out"], split, ev["results"], run, None, workers=1)
    assert page == tmp_path / "demo" / "report.html" and (ev["out"] / "report.html").is_file()
    text = page.read_text()
    assert "The demo" in text and "--quick run" in text and "<b>+" in text  # the verdict, in bold
    assert _data(page)["assets"] == "out/report_files/" and _data(ev["out"] / "report.html")["assets"] == "report_files/"


def test_one_order_without_ground_truth_and_a_clean_check(tmp_path):
    from oanet.report import write_check_report, write_merge_report

    ev = make_evaluation(tmp_path)
    out = ev["out"]
    summary = {"images": 4, "orders": ["score"], "outputs": {"score": str(out / "score_order" / "panoptic.json")}}
    data = _data(write_merge_report(out, summary, images=2, workers=1))
    assert data["pair"] == [] and data["main"] == "score" and [im["n"] for im in data["images"]] == [
        "img00000.jpg", "img00001.jpg"]  # no PQ, no second order: the first ones
    script = (out / "report_files" / "data" / f"{data['images'][0]['k']}.js").read_text()
    assert '"panels":{"score":' in script and "diff" not in script
    page = write_check_report(tmp_path, {"ok": True, "errors": 0, "warnings": 0, "problems": [], "summary": {},
                                         "overlays": []})
    assert "No problem found" in page.read_text()
