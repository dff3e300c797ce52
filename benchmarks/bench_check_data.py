"""``oanet check-data`` on a COCO-val-sized synthetic set: 1 worker against all of them.

The set (default 5000 images, 640x480 / 640x427 / 480x640, ~20 segments each: 5-8 stuff regions of a
Voronoi diagram, 10-16 things as boxes and ellipses, a few crowd things and void holes) is written once
under benchmarks/_data/check_data/ (git-ignored) and reused while its parameters are unchanged. To
write it in seconds, ``--templates`` distinct label maps are drawn and each is written as
``images / templates`` PNGs under their own names (the checker decodes every file; it keeps nothing
across files). Areas and boxes of the JSON come from ``np.bincount`` over each label map, a computation
independent of the checker's run-length one: the run must report no error and no warning.

Each timing is one fresh ``python -m oanet.cli check-data`` process (start-up, JSON, PNGs, summary,
report and overlays), as a user runs it; wall time and the process's CPU time (user + system).

    python benchmarks/bench_check_data.py            # 5000 images
    python benchmarks/bench_check_data.py --images 500 --templates 50
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "benchmarks" / "_data" / "check_data"
SIZES = ((480, 640), (427, 640), (640, 480))  # (height, width), COCO's usual shapes
N_THINGS, N_STUFF = 80, 53  # COCO's: ids 1..80 things, 81..133 stuff


def label_map(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(labels uint8 HxW, [(category, iscrowd)] of labels 1..K); label 0 is void."""
    n_stuff, n_things = int(rng.integers(5, 9)), int(rng.integers(10, 17))
    # Stuff: nearest of n_stuff seeds on a quarter-resolution grid, repeated x4 (jagged 4-px borders).
    gy, gx = -(-height // 4), -(-width // 4)
    seeds = rng.uniform([0, 0], [gy, gx], size=(n_stuff, 2))
    ys, xs = np.ogrid[:gy, :gx]
    nearest = np.argmin([(ys - y) ** 2 + 0.5 * (xs - x) ** 2 for y, x in seeds], axis=0)
    labels = np.repeat(np.repeat(nearest + 1, 4, axis=0), 4, axis=1)[:height, :width].astype(np.uint8)
    stuff = rng.choice(np.arange(N_THINGS + 1, N_THINGS + N_STUFF + 1), size=n_stuff, replace=False)
    segments = [(int(c), 0) for c in stuff]
    ys, xs = np.ogrid[:height, :width]
    for k in range(n_things + int(rng.integers(1, 4))):  # the last ones are void holes
        cy, cx, ry, rx = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, 90), rng.uniform(8, 90)
        y0, y1, x0, x1 = max(0, int(cy - ry)), min(height, int(cy + ry) + 1), max(0, int(cx - rx)), min(width, int(cx + rx) + 1)
        window = labels[y0:y1, x0:x1]
        value = len(segments) + 1 if k < n_things else 0
        if rng.random() < 0.4:
            window[:] = value
        else:
            window[((ys[y0:y1] - cy) / ry) ** 2 + ((xs[:, x0:x1] - cx) / rx) ** 2 <= 1.0] = value
        if k < n_things:
            segments.append((int(rng.integers(1, N_THINGS + 1)), int(rng.random() < 0.03)))
    return labels, segments


def segments_info(labels: np.ndarray, segments: list, ids: np.ndarray) -> list[dict]:
    """COCO segments_info of the labels that kept pixels: areas and [x, y, w, h] by bincount."""
    height, width = labels.shape
    k = len(segments) + 1
    lab = labels.astype(np.int64)
    areas = np.bincount(lab.ravel(), minlength=k)
    rows = np.bincount((lab * height + np.arange(height)[:, None]).ravel(), minlength=k * height).reshape(k, height) > 0
    cols = np.bincount((lab * width + np.arange(width)[None, :]).ravel(), minlength=k * width).reshape(k, width) > 0
    info = []
    for label in np.flatnonzero(areas[1:]) + 1:
        r, c = np.flatnonzero(rows[label]), np.flatnonzero(cols[label])
        category, crowd = segments[label - 1]
        info.append({"id": int(ids[label]), "category_id": category, "iscrowd": crowd, "area": int(areas[label]),
                     "bbox": [int(c[0]), int(r[0]), int(c[-1] - c[0] + 1), int(r[-1] - r[0] + 1)]})
    return info


def build_set(out: Path, n_images: int, n_templates: int, seed: int) -> tuple[Path, Path]:
    from PIL import Image

    from oanet.data.png_io import id2rgb

    wanted = {"images": n_images, "templates": n_templates, "seed": seed, "version": 1}
    json_path, png_dir = out / "panoptic.json", out / "panoptic"
    stamp = out / "built.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return json_path, png_dir
    start = time.perf_counter()
    print(f"writing {n_images} PNGs ({n_templates} distinct maps) under {out} ...", file=sys.stderr)
    png_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = []
    for t in range(n_templates):
        height, width = SIZES[t % len(SIZES)]
        labels, segments = label_map(rng, height, width)
        ids = np.zeros(len(segments) + 1, dtype=np.uint32)
        ids[1:] = rng.choice(np.arange(1, 256**3, dtype=np.uint32), size=len(segments), replace=False)
        buffer = io.BytesIO()
        Image.fromarray(id2rgb(ids[labels])).save(buffer, format="PNG")  # Pillow's filters, as COCO's PNGs
        templates.append((height, width, buffer.getvalue(), segments_info(labels, segments, ids)))
    images, annotations = [], []
    for i in range(n_images):
        height, width, png, info = templates[i % n_templates]
        name = f"{i + 1:012d}"
        (png_dir / f"{name}.png").write_bytes(png)
        images.append({"id": i + 1, "file_name": f"{name}.jpg", "width": width, "height": height})
        annotations.append({"image_id": i + 1, "file_name": f"{name}.png", "segments_info": info})
    categories = [{"id": c, "name": f"class{c}", "isthing": int(c <= N_THINGS)} for c in range(1, N_THINGS + N_STUFF + 1)]
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    stamp.write_text(json.dumps(wanted))
    print(f"written in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return json_path, png_dir


def time_check(json_path: Path, png_dir: Path, workers: int, out: Path) -> dict:
    command = [sys.executable, "-m", "oanet.cli", "check-data", "--panoptic-json", str(json_path),
               "--panoptic-dir", str(png_dir), "--out", str(out), "--workers", str(workers), "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"check-data exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    report = json.loads((out / "check_report.json").read_text())
    if report["errors"] or report["warnings"]:
        sys.exit(f"check-data found problems in the generated set:\n{proc.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"workers": workers, "wall": wall, "cpu": cpu, "check": report["seconds"],
            "segments": report["summary"]["segments"], "images": report["summary"]["checked_images"]}


def main() -> int:
    from oanet.parallel import default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--templates", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    json_path, png_dir = build_set(args.data, args.images, args.templates, args.seed)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")
    rows = [time_check(json_path, png_dir, w, args.data / f"report_{w}") for w in sorted({1, default_workers()})]
    print(f"{rows[0]['images']} images, {rows[0]['segments']} segments")
    print("| workers | wall (process) | check (in process) | CPU | images/s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['wall']:.2f} s | {row['check']:.2f} s | {row['cpu']:.2f} s "
              f"| {row['images'] / row['wall']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
