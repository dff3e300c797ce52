"""Annotation memory and start-up time of a COCO-train2017-sized split (no pixels).

Generates a panoptic JSON and an instances JSON with COCO train2017's sizes (118,287 images,
1.34 M panoptic segments, 864 k instance annotations: polygons of 6-40 points, 1 % crowd RLEs; about
150 + 440 MB), seeded, under ``--data-dir`` (default /tmp, never the repository; kept for the next run).
Then each scenario runs in a fresh process that imports torch first, as training does:

- ``parse``: ``PanopticSplit`` with ``instances_json`` and no cache, then ``PanopticDataset``;
- ``build``: the same with ``cache_dir`` and no cache yet (the parse plus writing the cache);
- ``cached``: the same with the cache present (what the other ranks and a resumed run do).

Each reports the start time (split and dataset), the parent's RSS (anonymous + file-backed; the
split's share is the growth over the RSS after the imports) and its peak, then ``--workers`` forked
DataLoader workers each read every image's panoptic annotation and instance annotations once. Each
worker reports the private memory it gained over that pass (``Private_Clean + Private_Dirty`` of
/proc/self/smaps_rollup, taken when all workers are done, so pages every worker read count as shared).
With ``PYTHONPATH`` pointing at a checkout from before the annotation store, ``--scenarios parse``
measures that code the same way. Linux only (/proc).

    python benchmarks/bench_loader_scale.py                  # full size: about 10 min on 2 cores, 4 GB peak
    python benchmarks/bench_loader_scale.py --scale 0.02 --workers 2 --data-dir /tmp/oanet_scale_small
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NUM_IMAGES = 118_287
NUM_SEGMENTS = 1_340_000
NUM_INSTANCES = 864_000
NUM_THINGS, NUM_STUFF = 80, 53
SIZES = [(640, 480), (640, 427), (480, 640), (640, 424), (500, 375), (640, 512), (427, 640), (333, 500)]
POLYGON_POOL = 4096
SCENARIOS = ("parse", "build", "cached")


# --------------------------------------------------------------------------------------------
# data


def _categories() -> list[dict]:
    things = [{"id": i + 1, "name": f"thing{i + 1}", "supercategory": "thing", "isthing": 1} for i in range(NUM_THINGS)]
    stuff = [{"id": NUM_THINGS + i + 1, "name": f"stuff{i + 1}", "supercategory": "stuff", "isthing": 0}
             for i in range(NUM_STUFF)]
    return things + stuff


def _polygon_texts(rng: np.random.Generator) -> list[str]:
    """Polygon lists (one or two rings of 6..60 points, 2 decimals) as JSON text, reused across
    annotations: the parser builds new objects for each occurrence anyway."""
    texts = []
    for _ in range(POLYGON_POOL):
        rings = []
        for _ in range(1 if rng.random() < 0.85 else 2):
            points = rng.uniform(0, 480, size=2 * int(rng.integers(6, 40)))
            rings.append("[" + ",".join(f"{v:.2f}" for v in points) + "]")
        texts.append("[" + ",".join(rings) + "]")
    return texts


def _crowd_text(rng: np.random.Generator, width: int, height: int) -> str:
    cuts = np.sort(rng.choice(width * height, size=2 * int(rng.integers(20, 120)), replace=False))
    counts = np.diff(np.concatenate([[0], cuts, [width * height]]))
    return '{"counts":[' + ",".join(map(str, counts.tolist())) + f'],"size":[{height},{width}]}}'


def generate(out_dir: Path, scale: float, seed: int) -> tuple[Path, Path]:
    """``panoptic.json`` and ``instances.json`` (plus the empty folders a split needs) in ``out_dir``;
    kept when a stamp says they were made with the same scale and seed."""
    panoptic_json, instances_json = out_dir / "panoptic.json", out_dir / "instances.json"
    stamp = out_dir / "generated.json"
    wanted = {"scale": scale, "seed": seed, "version": 1}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and panoptic_json.is_file() and instances_json.is_file():
        return panoptic_json, instances_json
    tic = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("png", "images"):
        (out_dir / sub).mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    n_img = max(1, round(NUM_IMAGES * scale))
    n_seg = max(n_img, round(NUM_SEGMENTS * scale))
    n_inst = max(1, round(NUM_INSTANCES * scale))
    image_ids = rng.permutation(np.arange(1, 600_000))[:n_img].tolist()
    sizes = [SIZES[k] for k in rng.integers(0, len(SIZES), n_img).tolist()]
    images = [
        {"license": 1, "file_name": f"{i:012d}.jpg", "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
         "height": h, "width": w, "date_captured": "2013-11-14 11:18:45", "id": i}
        for i, (w, h) in zip(image_ids, sizes)
    ]
    categories = _categories()
    info = {"description": "oanet bench_loader_scale: COCO-sized, no pixels", "version": "1.0", "year": 2017}

    per_image = 1 + rng.multinomial(n_seg - n_img, np.full(n_img, 1.0 / n_img))
    seg_cats = rng.integers(1, NUM_THINGS + NUM_STUFF + 1, n_seg).tolist()
    seg_ids = rng.integers(1, 1 << 24, n_seg).tolist()
    boxes = rng.integers(0, 400, (n_seg, 4)).tolist()
    areas = rng.integers(1, 100_000, n_seg).tolist()
    parts, start = [], 0
    for image_id, count in zip(image_ids, per_image.tolist()):
        segments = []
        used = set()
        for k in range(start, start + count):
            sid = seg_ids[k]
            while sid in used:
                sid = sid % ((1 << 24) - 1) + 1
            used.add(sid)
            segments.append(f'{{"id":{sid},"category_id":{seg_cats[k]},"iscrowd":0,"bbox":{boxes[k]},"area":{areas[k]}}}')
        start += count
        parts.append(f'{{"segments_info":[{",".join(segments)}],"file_name":"{image_id:012d}.png","image_id":{image_id}}}')
    _write_json(panoptic_json, info, images, parts, categories)

    polygons = _polygon_texts(rng)
    owners = rng.integers(0, n_img, n_inst).tolist()
    inst_cats = rng.integers(1, NUM_THINGS + 1, n_inst).tolist()
    crowd = (rng.random(n_inst) < 0.01).tolist()
    poly_pick = rng.integers(0, POLYGON_POOL, n_inst).tolist()
    inst_boxes = rng.uniform(0, 400, (n_inst, 4)).round(2).tolist()
    inst_areas = rng.uniform(10, 50_000, n_inst).round(2).tolist()
    parts = []
    for k in range(n_inst):
        owner = owners[k]
        width, height = sizes[owner]
        segmentation = _crowd_text(rng, width, height) if crowd[k] else polygons[poly_pick[k]]
        parts.append(
            f'{{"segmentation":{segmentation},"area":{inst_areas[k]},"iscrowd":{int(crowd[k])},'
            f'"image_id":{image_ids[owner]},"bbox":{inst_boxes[k]},"category_id":{inst_cats[k]},"id":{k + 1}}}'
        )
    _write_json(instances_json, info, images, parts, [c for c in categories if c["isthing"]])
    stamp.write_text(json.dumps(wanted))
    print(f"generated {n_img} images, {n_seg} segments, {n_inst} instances in {time.perf_counter() - tic:.0f} s: "
          f"{panoptic_json.stat().st_size / 1e6:.0f} MB + {instances_json.stat().st_size / 1e6:.0f} MB", file=sys.stderr)
    return panoptic_json, instances_json


def _write_json(path: Path, info: dict, images: list, annotation_texts: list[str], categories: list) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(f'{{"info":{json.dumps(info)},"licenses":[],"images":{json.dumps(images)},"annotations":[')
        for k in range(0, len(annotation_texts), 10_000):
            f.write(("," if k else "") + ",".join(annotation_texts[k:k + 10_000]))
        f.write(f'],"categories":{json.dumps(categories)}}}')
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# measuring (in a child process per scenario)


def proc_fields(path: str, names: tuple[str, ...]) -> dict[str, float]:
    """``name: MB`` of the kB fields ``names`` of a /proc file (status, smaps_rollup)."""
    values = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in names:
                values[key] = int(rest.split()[0]) / 1024
    return values


def private_mb() -> dict[str, float]:
    fields = proc_fields("/proc/self/smaps_rollup", ("Private_Clean", "Private_Dirty"))
    return {"private": fields["Private_Clean"] + fields["Private_Dirty"], "private_dirty": fields["Private_Dirty"]}


def make_touch_all(torch, split, workers: int):
    """An IterableDataset whose every worker reads every image's annotation and instance records once,
    then (when all have) yields its private memory before and after."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    start, end = context.Barrier(workers), context.Barrier(workers)

    def read_instances(image_id):
        if hasattr(split, "instance_annotations"):
            return split.instance_annotations(image_id)
        record = split._instances.get(image_id)  # oanet before the annotation store: JSON bytes per image
        return json.loads(record) if record else []

    class TouchAll(torch.utils.data.IterableDataset):
        def __iter__(self):
            start.wait()
            before = private_mb()
            tic = time.perf_counter()
            segments = instances = 0
            for info in split.images:
                segments += len(split.annotation(info.id))
                instances += len(read_instances(info.id))
            seconds = time.perf_counter() - tic
            end.wait()  # pages every worker read are shared by all of them now
            after = private_mb()
            yield {"pass_s": seconds, "segments": segments, "instances": instances,
                   **{f"{k}_gain_mb": after[k] - before[k] for k in after}, "private_after_mb": after["private"]}

    return TouchAll()


def child(args: argparse.Namespace) -> dict:
    tic = time.perf_counter()
    import torch

    from oanet.data.coco_panoptic import PanopticSplit
    from oanet.data.dataset import PanopticDataset

    torch.set_num_threads(1)
    import_s = time.perf_counter() - tic
    status = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    base = proc_fields("/proc/self/status", status)
    root = args.data_dir
    cache_dir = {"parse": None}.get(args.child, args.data_dir / "cache")
    kwargs = {"cache_dir": cache_dir} if cache_dir else {}
    tic = time.perf_counter()
    split = PanopticSplit(root / "panoptic.json", root / "png", root / "images", instances_json=root / "instances.json", **kwargs)
    split_s = time.perf_counter() - tic
    dataset = PanopticDataset(split, instance_source="instances")
    start_s = time.perf_counter() - tic
    after = proc_fields("/proc/self/status", status)
    result = {
        "scenario": args.child, "images": len(dataset), "import_s": import_s, "split_s": split_s, "start_s": start_s,
        "rss_mb": after["VmRSS"], "rss_anon_mb": after["RssAnon"], "rss_file_mb": after["RssFile"],
        "rss_gain_mb": after["VmRSS"] - base["VmRSS"], "peak_rss_mb": after["VmHWM"],
        "cache_mb": sum(p.stat().st_size for p in cache_dir.iterdir()) / 2**20 if cache_dir else 0.0,
    }
    if args.workers:
        loader = torch.utils.data.DataLoader(make_touch_all(torch, split, args.workers), batch_size=None,
                                             num_workers=args.workers, multiprocessing_context="fork")
        result["workers"] = list(loader)
    return result


# --------------------------------------------------------------------------------------------
# driver


def run_scenario(args: argparse.Namespace, scenario: str) -> dict:
    if scenario == "build":
        shutil.rmtree(args.data_dir / "cache", ignore_errors=True)
    command = [sys.executable, __file__, "--child", scenario, "--data-dir", str(args.data_dir), "--workers", str(args.workers)]
    tic = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"scenario {scenario} failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - tic
    return result


def table(results: list[dict]) -> str:
    lines = ["| scenario | start s | parent RSS MB (anon + file) | of which the split | peak RSS MB | cache MB | "
             "each worker's private gain MB (dirty) | pass s |", "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        workers = r.get("workers", [])
        gains = ", ".join(f"{w['private_gain_mb']:.0f} ({w['private_dirty_gain_mb']:.0f})" for w in workers) or "-"
        pass_s = max((w["pass_s"] for w in workers), default=0.0)
        lines.append(f"| {r['scenario']} | {r['start_s']:.2f} | {r['rss_mb']:.0f} ({r['rss_anon_mb']:.0f} + "
                     f"{r['rss_file_mb']:.0f}) | {r['rss_gain_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['cache_mb']:.0f} | "
                     f"{gains} | {pass_s:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/oanet_loader_scale"))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCO train2017's sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4, help="forked DataLoader workers (0: none)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}")
    if "cached" in scenarios and "build" not in scenarios[: scenarios.index("cached")]:
        scenarios.insert(scenarios.index("cached"), "build")  # a cache of these very JSONs first
    generate(args.data_dir, args.scale, args.seed)
    results = []
    for scenario in scenarios:
        results.append(run_scenario(args, scenario))
        print(f"{scenario}: {json.dumps(results[-1])}", file=sys.stderr)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"scale": args.scale, "workers": args.workers, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
