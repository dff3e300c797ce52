"""Throughput of ``oanet.evaluation.pq.pq_compute`` against hotcoco's Rust PQ on the same data.

The benchmark set is the 16 real COCO val2017 panoptic GT PNGs replicated ``--copies`` times (under new
image ids), each with its own perturbed prediction (shifted, eroded, dilated, dropped, relabelled and
extra segments), written once under benchmarks/_data/ (git-ignored). Every implementation evaluates
the same files in the same run; the runs are interleaved and each is timed ``--repeats`` times, from
the JSON paths to the result (JSON parsing included). Prints a markdown table and checks that the
results agree.

    python benchmarks/bench_pq.py --copies 25 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "coco_panoptic_val16" / "annotations"


def build_set(source: Path, out_dir: Path, copies: int, seed: int) -> tuple[Path, Path, Path, Path]:
    from oanet.evaluation.perturb import write_perturbed_predictions

    stamp = out_dir / "built.json"
    wanted = {"source": str(source), "copies": copies, "seed": seed}
    paths = (out_dir / "gt.json", out_dir / "gt", out_dir / "pred.json", out_dir / "pred")
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return paths
    print(f"building the benchmark set ({copies} x 16 images) under {out_dir} ...", file=sys.stderr)
    paths = write_perturbed_predictions(
        source / "panoptic_val2017.json", source / "panoptic_val2017", out_dir, seed=seed, copies=copies
    )
    stamp.write_text(json.dumps(wanted))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with panoptic_val2017.json/.png")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "benchmarks" / "_data" / "pq")
    parser.add_argument("--copies", type=int, default=25, help="replications of the 16 images (25 -> 400)")
    parser.add_argument("--workers", type=int, default=2, help="oanet processes and hotcoco threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # hotcoco parallelises with rayon, which reads its thread count once, at its first parallel call.
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)
    import hotcoco
    from hotcoco.panoptic import pq_compute as hotcoco_pq

    from oanet import _ext
    from oanet.data import png_io
    from oanet.evaluation.pq import pq_compute

    gt_json, gt_dir, pred_json, pred_dir = build_set(args.source, args.data_dir, args.copies, args.seed)
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
        f"hotcoco {hotcoco.__version__} (Rust, {args.workers} threads)": run_hotcoco,
        f"oanet, workers={args.workers} ({fast})": lambda: run_oanet(args.workers),
        f"oanet, workers=1 ({fast})": lambda: run_oanet(1),
    }
    if png_io.pyspng is not None:
        runs[f"oanet, workers={args.workers} (pure fallback: numpy + pyspng)"] = lambda: run_pure(args.workers, png_io.pyspng)
    runs["oanet, workers=1 (pure fallback: numpy + Pillow)"] = lambda: run_pure(1, None)

    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    results = {}
    for _ in range(args.repeats):
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
    print(f"{n_images} images ({args.copies} x 16 real COCO val2017 PNGs + perturbed predictions), "
          f"{os.cpu_count()} CPUs, load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}")
    print(f"All PQ {100 * reference['All']['pq']:.3f}; largest difference between implementations: {worst:.1e}\n")
    print("| implementation | median s | best s | images/s (median) |")
    print("|---|---:|---:|---:|")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {min(times):.2f} | {n_images / median:.0f} |")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
