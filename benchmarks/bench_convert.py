"""``oanet convert cityscapes`` against cityscapesscripts' ``createPanopticImgs`` on the same images.

    python benchmarks/bench_convert.py --images 20            # 2048x1024, as Cityscapes

Writes ``--images`` synthetic instanceIds PNGs in the official layout (``gtFine/val/{city}/``), drawn
as the Cityscapes tools draw them (``json2instanceImg``: polygons filled back to front): sky,
buildings, vegetation, road, sidewalk, poles and signs, the ego vehicle and the rectification border
(ignoreInEval), 25-60 cars, people, riders, bicycles and buses with about 8% crowd groups. Then
times, each into a fresh folder: the reference (one process, once: it takes ~0.7 s per image), oanet
with 1 worker and with ``--workers`` (default: all cores; the median of ``--repeat`` runs each), and
a rerun of oanet into its own output (every image skipped).
Both outputs are compared segment for segment before any number is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CITIES = ("aachen", "bochum")


def _blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, points: int = 24) -> list:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    jitter = rng.uniform(0.85, 1.15, (2, points))
    return list(zip((cx + rx * np.cos(angles) * jitter[0]).tolist(), (cy + ry * np.sin(angles) * jitter[1]).tolist()))


def cityscapes_like(seed: int, width: int = 2048, height: int = 1024) -> np.ndarray:
    """A uint16 instanceIds map (class * 1000 + k for instances, the class id for stuff and groups)."""
    rng = np.random.default_rng(seed)
    img = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(img)
    horizon = int(height * rng.uniform(0.4, 0.5))
    draw.rectangle([0, 0, width, horizon], fill=23)  # sky
    x = 0
    while x < width:  # buildings, walls, a bridge
        w = int(rng.uniform(0.05, 0.2) * width)
        draw.rectangle([x, int(rng.uniform(0.05, 0.35) * height), x + w, horizon + 40], fill=int(rng.choice([11, 11, 12, 15])))
        x += w
    for _ in range(rng.integers(4, 9)):  # trees
        draw.polygon(_blob(rng, rng.uniform(0, width), rng.uniform(0.1 * height, horizon), *(rng.uniform(40, 200, 2))), fill=21)
    draw.polygon([(0, horizon + 20), (width, horizon + 20), (width, height), (0, height)], fill=7)  # road
    draw.polygon([(0, horizon + 20), (width * 0.3, horizon + 20), (0, height * 0.8)], fill=8)  # sidewalks
    draw.polygon([(width, horizon + 20), (width * 0.7, horizon + 20), (width, height * 0.8)], fill=8)
    draw.polygon([(0, height * 0.8), (width * 0.1, horizon + 40), (width * 0.15, horizon + 40), (0, height * 0.9)], fill=22)
    for _ in range(rng.integers(6, 14)):  # poles with lights and signs
        px, pw, top = rng.uniform(0, width), rng.uniform(4, 14), rng.uniform(0.1 * height, horizon)
        draw.rectangle([px, top, px + pw, horizon + rng.uniform(30, 120)], fill=17)
        if rng.random() < 0.5:
            draw.rectangle([px - 20, top, px + 30, top + 40], fill=int(rng.choice([19, 20])))
    draw.rectangle([width * 0.4, horizon - 10, width * 0.45, horizon + 10], fill=13)  # fence
    counters: dict[int, int] = {}
    n_things = int(rng.integers(25, 60))
    for k in range(n_things):  # far to near, as annotators draw them
        depth = (k + 1) / n_things
        cls = int(rng.choice([26, 26, 26, 24, 24, 25, 27, 28, 33, 32, 31]))
        size = 20 + depth * rng.uniform(60, 350)
        aspect = 0.45 if cls in (24, 25) else 1.6
        base = horizon + depth * (height - horizon) * 0.9
        if rng.random() < 0.08:
            value = cls  # a group: crowd
        else:
            value = cls * 1000 + counters.get(cls, 0)
            counters[cls] = counters.get(cls, 0) + 1
        draw.polygon(_blob(rng, rng.uniform(0, width), base - size / 2, size * aspect / 2, size / 2, 20), fill=value)
    draw.polygon([(width * 0.2, height), (width * 0.3, height * 0.88), (width * 0.7, height * 0.88), (width * 0.8, height)],
                 fill=1)  # ego vehicle
    draw.rectangle([0, 0, width, 4], fill=2)  # rectification border
    draw.rectangle([0, height - 4, width, height], fill=2)
    return np.array(img).astype(np.uint16)


def write_tree(root: Path, n: int, width: int, height: int) -> None:
    for k in range(n):
        city = CITIES[k % len(CITIES)]
        path = root / "gtFine" / "val" / city / f"{city}_{k:06d}_000019_gtFine_instanceIds.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(cityscapes_like(k, width, height)).save(path)


def run_reference(root: Path, out: Path) -> float:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    out.mkdir(parents=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its per-image progress line
        convert2panoptic(str(root / "gtFine"), str(out), False, ["val"])
    return time.perf_counter() - start


def run_oanet(root: Path, out: Path, workers: int) -> tuple[float, dict]:
    from oanet.convert import cityscapes, run_plan

    start = time.perf_counter()
    report = run_plan(cityscapes.plan(root, "val"), out, workers=workers, progress=False)
    return time.perf_counter() - start, report


def median_run(work: Path, workers: int, repeat: int) -> tuple[float, dict]:
    """The median time of ``repeat`` conversions, each into a fresh folder (a second run into one would
    skip every image): on a machine shared with other work, one slow run does not decide the figure."""
    runs = [run_oanet(work / "cityscapes", work / f"oanet_{workers}_{k}", workers) for k in range(repeat)]
    return float(np.median([seconds for seconds, _ in runs])), runs[0][1]


def same_output(reference: Path, ours: Path) -> None:
    from oanet.data.png_io import read_id_png

    ref = json.loads((reference / "cityscapes_panoptic_val.json").read_text())
    mine = json.loads((ours / "panoptic_val.json").read_text())
    assert [i["id"] for i in ref["images"]] == [i["id"] for i in mine["images"]]
    for a, b in zip(ref["annotations"], mine["annotations"]):
        assert a["segments_info"] == b["segments_info"], a["image_id"]
        assert np.array_equal(read_id_png(reference / "cityscapes_panoptic_val" / a["file_name"]),
                              read_id_png(ours / "panoptic_val" / b["file_name"])), a["image_id"]


def main(argv=None) -> int:
    from oanet.parallel import default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=default_workers(), help="oanet's parallel run (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="oanet runs per setting, the median is given (default 3)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        write_tree(work / "cityscapes", args.images, args.width, args.height)
        reference = run_reference(work / "cityscapes", work / "reference")
        one, report = median_run(work, 1, args.repeat)
        same_output(work / "reference", work / "oanet_1_0")
        many, _ = median_run(work, args.workers, args.repeat)
        rerun, rerun_report = run_oanet(work / "cityscapes", work / f"oanet_{args.workers}_0", args.workers)
        assert rerun_report["skipped"] == args.images
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = args.images
    rows = {"images": n, "size": f"{args.width}x{args.height}", "segments_per_image": report["segments"] / n,
            "repeat": args.repeat,
            "reference_s": reference, "oanet_1_worker_s": one, "oanet_workers": args.workers, "oanet_workers_s": many,
            "oanet_rerun_all_skipped_s": rerun}
    print(f"{n} images {rows['size']}, {rows['segments_per_image']:.1f} segments per image, outputs equal; "
          f"oanet: median of {args.repeat} runs")
    print("| converter | s | ms/image | speed-up |\n|---|---:|---:|---:|")
    for name, seconds in (("cityscapesscripts createPanopticImgs (1 process)", reference),
                          ("oanet convert cityscapes, 1 worker", one),
                          (f"oanet convert cityscapes, {args.workers} workers", many),
                          ("oanet rerun into the same --out (all skipped)", rerun)):
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / n:.0f} | {reference / seconds:.1f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
