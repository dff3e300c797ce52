"""``oanet pq`` against hotcoco's Rust PQ, as processes, on the same data in the same run.

Two kinds of data, written once under benchmarks/_data/ (git-ignored) and reused:

- ``coco``: the 16 real COCO val2017 panoptic GT PNGs replicated ``--copies`` times (under new image
  ids), each with its own perturbed prediction (shifted, eroded, dilated, dropped, relabelled and extra
  segments);
- ``synthetic``: ``--images`` generated label maps of ``--size`` (default 640x480) with many segments
  each (6-13 stuff regions and 30-69 things, a few crowd and void regions), each with a prediction made
  from it (moved, grown, shrunk, relabelled, dropped and spurious segments).

Each implementation runs as a fresh process, from the command line to the result, as a user runs it
(interpreter and numpy start-up, JSON parsing, pairing and the evaluation): ``python -m oanet.cli pq``
of this checkout against ``python -c "hotcoco.panoptic.pq_compute(...)"``. The runs are interleaved,
each is timed ``--repeats`` times; the tables give the best and median wall time and the median CPU
time (user + system of the process and its threads). The checkout is byte-compiled first, as an install
is. The results must agree to 1e-9 (exit status 1 otherwise). ``--in-process`` adds the older in-process table (pq_compute timed inside one Python,
with and without the C extension).

    python benchmarks/bench_pq.py --kind both --workers 2 --repeats 7
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "coco_panoptic_val16" / "annotations"
DATA_DIR = REPO_ROOT / "benchmarks" / "_data"

HOTCOCO_SCRIPT = """
import json, sys
from hotcoco.panoptic import pq_compute
gt_json, gt_dir, pred_json, pred_dir, out = sys.argv[1:]
result = pq_compute(gt_json, pred_json, gt_dir, pred_dir)
with open(out, "w") as f:
    json.dump({k: result[k] for k in ("All", "Things", "Stuff")}, f)
"""


# --------------------------------------------------------------------------------------------------
# Data


def _stamped(out_dir: Path, wanted: dict) -> bool:
    stamp = out_dir / "built.json"
    return stamp.is_file() and json.loads(stamp.read_text()) == wanted


def build_coco_set(source: Path, out_dir: Path, copies: int, seed: int) -> tuple[Path, Path, Path, Path]:
    from perturb import write_perturbed_predictions

    wanted = {"kind": "coco", "source": str(source), "copies": copies, "seed": seed}
    paths = (out_dir / "gt.json", out_dir / "gt", out_dir / "pred.json", out_dir / "pred")
    if _stamped(out_dir, wanted):
        return paths
    print(f"building the COCO set ({copies} x 16 images) under {out_dir} ...", file=sys.stderr)
    paths = write_perturbed_predictions(
        source / "panoptic_val2017.json", source / "panoptic_val2017", out_dir, seed=seed, copies=copies
    )
    (out_dir / "built.json").write_text(json.dumps(wanted))
    return paths


N_THINGS, N_STUFF = 80, 53  # COCO's numbers of categories: ids 1..80 things, 81..133 stuff


def _paint(ids, shape: tuple, value: int) -> None:
    """Paint an ellipse or a box (cy, cx, ry, rx, kind) of ``value`` into ``ids``, clipped to the image."""
    import numpy as np

    cy, cx, ry, rx, kind = shape
    height, width = ids.shape
    y0, y1 = max(0, int(cy - ry)), min(height, int(cy + ry) + 1)
    x0, x1 = max(0, int(cx - rx)), min(width, int(cx + rx) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    window = ids[y0:y1, x0:x1]
    if kind == "box":
        window[:] = value
        return
    ys, xs = np.ogrid[y0:y1, x0:x1]
    window[((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0] = value


def _stuff_map(seeds, height: int, width: int):
    """Index of the nearest seed (a stretched Voronoi diagram): stuff regions with slanted borders."""
    import numpy as np

    ys, xs = np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :]
    nearest, label = np.full((height, width), np.inf, np.float32), np.zeros((height, width), np.int32)
    for k, (y, x) in enumerate(seeds.astype(np.float32)):
        distance = (ys - y) ** 2 + 0.4 * (xs - x) ** 2
        closer = distance < nearest
        nearest[closer], label[closer] = distance[closer], k
    return label


def _segments_of(ids, painted: list[tuple[int, int, int]]) -> list[dict]:
    """segments_info of the (id, category, iscrowd) that still own pixels, with their areas."""
    import numpy as np

    present, area = np.unique(ids, return_counts=True)
    area_of = dict(zip(present.tolist(), area.tolist()))
    return [
        {"id": i, "category_id": c, "iscrowd": crowd, "area": area_of[i]}
        for i, c, crowd in painted
        if area_of.get(i, 0) > 0
    ]


def _distinct_ids(rng, n: int) -> list[int]:
    """n distinct random segment ids (1..2^24-1), like the random colours of COCO's PNGs."""
    import numpy as np

    while True:
        draws = rng.integers(1, 256**3, size=n + 16)
        _, first = np.unique(draws, return_index=True)
        if len(first) >= n:
            return draws[np.sort(first)[:n]].tolist()


def synthetic_pair(rng, height: int, width: int) -> tuple:
    """(GT ids, GT segments, predicted ids, predicted segments) of one synthetic image."""
    import numpy as np

    n_stuff, n_things = int(rng.integers(6, 14)), int(rng.integers(30, 70))
    fresh = _distinct_ids(rng, 2 * (n_stuff + n_things) + 8)
    seeds = rng.uniform([0, 0], [height, width], size=(n_stuff, 2))
    stuff_categories = rng.integers(N_THINGS + 1, N_THINGS + N_STUFF + 1, size=n_stuff).tolist()
    stuff_ids = np.array(fresh[: 2 * n_stuff], dtype=np.uint32)
    gt = stuff_ids[:n_stuff][_stuff_map(seeds, height, width)]
    pred = stuff_ids[n_stuff:][_stuff_map(seeds + rng.normal(0, 12, seeds.shape), height, width)]
    gt_painted = [(fresh[k], stuff_categories[k], 0) for k in range(n_stuff)]
    pred_painted = [(fresh[n_stuff + k], stuff_categories[k], 0) for k in range(n_stuff)]
    next_id = 2 * n_stuff
    for _ in range(n_things):
        shape = (rng.uniform(0, height), rng.uniform(0, width), rng.uniform(6, 70), rng.uniform(6, 70),
                 "box" if rng.random() < 0.4 else "ellipse")
        category, gt_id, pred_id = int(rng.integers(1, N_THINGS + 1)), fresh[next_id], fresh[next_id + 1]
        next_id += 2
        _paint(gt, shape, gt_id)
        gt_painted.append((gt_id, category, int(rng.random() < 0.03)))
        operation = rng.choice(["keep", "shift", "grow", "shrink", "relabel", "drop"], p=[.3, .2, .15, .15, .1, .1])
        if operation == "drop":
            continue
        cy, cx, ry, rx, kind = shape
        if operation == "shift":
            cy, cx = cy + rng.normal(0, ry / 3), cx + rng.normal(0, rx / 3)
        elif operation in ("grow", "shrink"):
            factor = rng.uniform(1.1, 1.6) if operation == "grow" else rng.uniform(0.6, 0.9)
            ry, rx = ry * factor, rx * factor
        elif operation == "relabel":
            category = int(rng.integers(1, N_THINGS + 1))
        _paint(pred, (cy, cx, ry, rx, kind), pred_id)
        pred_painted.append((pred_id, category, 0))
    for _ in range(int(rng.integers(2, 5))):  # spurious predictions
        shape = (rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, 40), rng.uniform(5, 40), "ellipse")
        _paint(pred, shape, fresh[next_id])
        pred_painted.append((fresh[next_id], int(rng.integers(1, N_THINGS + 1)), 0))
        next_id += 1
    for _ in range(int(rng.integers(1, 4))):  # unlabelled (void) regions of the GT
        _paint(gt, (rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 30), rng.uniform(4, 30), "ellipse"), 0)
    return gt, _segments_of(gt, gt_painted), pred, _segments_of(pred, pred_painted)


def build_synthetic_set(out_dir: Path, n_images: int, height: int, width: int, seed: int) -> tuple[Path, ...]:
    import numpy as np

    from oanet.data.png_io import write_id_png

    wanted = {"kind": "synthetic", "images": n_images, "height": height, "width": width, "seed": seed, "version": 2}
    paths = (out_dir / "gt.json", out_dir / "gt", out_dir / "pred.json", out_dir / "pred")
    if _stamped(out_dir, wanted):
        return paths
    print(f"building the synthetic set ({n_images} images of {width}x{height}) under {out_dir} ...", file=sys.stderr)
    for folder in paths[1], paths[3]:
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "name": f"class{c}", "isthing": int(c <= N_THINGS)} for c in range(1, N_THINGS + N_STUFF + 1)]
    images, gt_annotations, pred_annotations = [], [], []
    for image_id in range(1, n_images + 1):
        gt, gt_segments, pred, pred_segments = synthetic_pair(rng, height, width)
        file_name = f"{image_id:06d}.png"
        write_id_png(paths[1] / file_name, gt)
        write_id_png(paths[3] / file_name, pred)
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": height, "width": width})
        gt_annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": gt_segments})
        pred_annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": pred_segments})
    paths[0].write_text(json.dumps({"images": images, "categories": categories, "annotations": gt_annotations}))
    paths[2].write_text(json.dumps({"images": images, "annotations": pred_annotations}))
    (out_dir / "built.json").write_text(json.dumps(wanted))
    return paths


# --------------------------------------------------------------------------------------------------
# Timing processes


def run_process(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the process, its threads and children) of a command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{stderr.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def compare_processes(paths: tuple[Path, ...], workers: int, repeats: int) -> tuple[list[str], float]:
    """Table lines, and the largest difference between the two results."""
    gt_json, gt_dir, pred_json, pred_dir = (str(p) for p in paths)
    out = Path(tempfile.mkdtemp(prefix="bench_pq_"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["RAYON_NUM_THREADS"] = str(workers)  # hotcoco's thread pool
    runs = {
        f"oanet pq --workers {workers}": [sys.executable, "-m", "oanet.cli", "pq", "--gt-json", gt_json, "--gt-dir",
                                          gt_dir, "--pred-json", pred_json, "--pred-dir", pred_dir, "--workers",
                                          str(workers), "--output", str(out / "oanet.json")],
        f"hotcoco pq_compute ({workers} threads)": [sys.executable, "-c", HOTCOCO_SCRIPT, gt_json, gt_dir,
                                                    pred_json, pred_dir, str(out / "hotcoco.json")],
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, command in runs.items():
            times[name].append(run_process(command, env))
    ours, theirs = (json.loads((out / f"{n}.json").read_text()) for n in ("oanet", "hotcoco"))
    worst = max(
        abs(ours[group][key] - theirs[group][key]) for group in ("All", "Things", "Stuff") for key in ("pq", "sq", "rq")
    )
    n_images = len(json.loads(Path(gt_json).read_text())["annotations"])
    lines = ["| process | best wall s | median wall s | median CPU s | images/s (best) |", "|---|---:|---:|---:|---:|"]
    best = {}
    for name, samples in times.items():
        walls, cpus = [w for w, _ in samples], [c for _, c in samples]
        best[name] = min(walls)
        lines.append(f"| {name} | {min(walls):.3f} | {statistics.median(walls):.3f} | "
                     f"{statistics.median(cpus):.3f} | {n_images / min(walls):.0f} |")
    oanet_name, hotcoco_name = runs
    lines.append("")
    lines.append(f"oanet is **{best[hotcoco_name] / best[oanet_name]:.2f}x** hotcoco (best wall of {repeats}); "
                 f"All PQ {100 * ours['All']['pq']:.3f}, largest difference {worst:.1e}")
    return lines, worst


# --------------------------------------------------------------------------------------------------
# In one process (the older table): pq_compute with and without the C extension


def compare_in_process(paths: tuple[Path, ...], workers: int, repeats: int) -> tuple[list[str], float]:
    import hotcoco
    from hotcoco.panoptic import pq_compute as hotcoco_pq

    from oanet import _ext
    from oanet.data import png_io
    from oanet.evaluation.pq import pq_compute

    gt_json, gt_dir, pred_json, pred_dir = paths
    n_images = len(json.loads(gt_json.read_text())["annotations"])

    def run_hotcoco() -> dict:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the table
            return hotcoco_pq(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))

    def run_oanet(workers: int) -> dict:
        return pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=workers, progress=False).to_dict()

    def run_pure(workers: int, pyspng) -> dict:
        """Without the C extension: numpy and pyspng (or Pillow where pyspng is None)."""
        saved = _ext.speedups, png_io.pyspng
        _ext.speedups, png_io.pyspng = None, pyspng
        try:
            return run_oanet(workers)
        finally:
            _ext.speedups, png_io.pyspng = saved

    fast = "C extension + zlib-ng" if _ext.speedups is not None else "no C extension"
    runs = {
        f"hotcoco {hotcoco.__version__} (Rust, {workers} threads)": run_hotcoco,
        f"oanet, workers={workers} ({fast})": lambda: run_oanet(workers),
        f"oanet, workers=1 ({fast})": lambda: run_oanet(1),
    }
    if png_io.pyspng is not None:
        runs[f"oanet, workers={workers} (pure fallback: numpy + pyspng)"] = lambda: run_pure(workers, png_io.pyspng)
    runs["oanet, workers=1 (pure fallback: numpy + Pillow)"] = lambda: run_pure(1, None)

    seconds: dict[str, list[float]] = {name: [] for name in runs}
    results = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            seconds[name].append(time.perf_counter() - start)
    reference = results[next(iter(runs))]
    worst = max(
        abs(result[group][key] - reference[group][key])
        for result in results.values()
        for group in ("All", "Things", "Stuff")
        for key in ("pq", "sq", "rq")
    )
    lines = ["| in one process | median s | best s | images/s (median) |", "|---|---:|---:|---:|"]
    for name, times in seconds.items():
        median = statistics.median(times)
        lines.append(f"| {name} | {median:.2f} | {min(times):.2f} | {n_images / median:.0f} |")
    lines.append(f"\nlargest difference between implementations: {worst:.1e}")
    return lines, worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["coco", "synthetic", "both"], default="both")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with panoptic_val2017.json/.png")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--copies", type=int, default=25, help="coco: replications of the 16 images (25 -> 400)")
    parser.add_argument("--images", type=int, default=500, help="synthetic: number of images")
    parser.add_argument("--size", default="640x480", help="synthetic: WIDTHxHEIGHT")
    parser.add_argument("--workers", type=int, default=2, help="oanet threads and hotcoco threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true", help="also time pq_compute inside this process")
    args = parser.parse_args()
    # hotcoco parallelises with rayon, which reads its thread count once, at its first parallel call.
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)
    sys.path.insert(0, str(REPO_ROOT))
    width, height = (int(v) for v in args.size.lower().split("x"))

    sets = {}
    if args.kind in ("coco", "both"):
        if not (args.source / "panoptic_val2017.json").is_file():
            raise SystemExit(f"{args.source}: no panoptic_val2017.json; give --source, or --kind synthetic")
        paths = build_coco_set(args.source, args.data_dir / f"pq_coco_{args.copies}", args.copies, args.seed)
        sets[f"coco: {16 * args.copies} images (16 real COCO val2017 PNGs x {args.copies}, perturbed predictions)"] = paths
    if args.kind in ("synthetic", "both"):
        folder = args.data_dir / f"pq_synthetic_{args.images}_{width}x{height}"
        paths = build_synthetic_set(folder, args.images, height, width, args.seed)
        sets[f"synthetic: {args.images} images of {width}x{height}, many segments each"] = paths

    # Byte-compile this checkout as an install does: with PYTHONDONTWRITEBYTECODE set and no __pycache__,
    # every `oanet pq` process would compile its modules from source (~15% of its start-up).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO_ROOT / "oanet")], check=True)
    load_before, worst = os.getloadavg()[0], 0.0
    report = []
    for title, paths in sets.items():
        n_segments = sum(len(a["segments_info"]) for a in json.loads(paths[0].read_text())["annotations"])
        n_images = len(json.loads(paths[0].read_text())["annotations"])
        report += [f"### {title} ({n_segments / n_images:.0f} GT segments per image)", ""]
        lines, difference = compare_processes(paths, args.workers, args.repeats)
        report += lines + [""]
        worst = max(worst, difference)
        if args.in_process:
            lines, difference = compare_in_process(paths, args.workers, args.repeats)
            report += lines + [""]
            worst = max(worst, difference)
    print(f"{os.cpu_count()} CPUs, load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}; "
          f"{sys.executable}\n")
    print("\n".join(report))
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
