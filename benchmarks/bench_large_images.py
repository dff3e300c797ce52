"""Large photos in bounded memory: time and peak RSS of ``oanet.Predictor(...)(image)`` by input size,
the grid fusion's quality against the full-size fusion, and the Predictor against Mask R-CNN.

    python benchmarks/bench_large_images.py --checkpoint DEMO/train/model_final.pth --json large.json
    python benchmarks/bench_large_images.py --checkpoint DEMO/train/model_final.pth --parts speed --sizes 640x480

Parts (``--parts``, all by default):

* ``speed``: every (model, size) case runs in a fresh subprocess, so that its peak RSS is its own:
  the model is loaded, the input made (a demo val image resized to the size, uint8 in memory:
  decoding is not timed), one call at 64 x 64 warms the process up; then the peak RSS growth of one
  call at the size (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus ``VmRSS``
  before the call; ``ru_maxrss`` where that is not available) and the median time of ``--repeat``
  more calls. Models: the checkpoint (``--checkpoint``, e.g. the one ``oanet demo`` writes), and
  ``r50``: ``coco_r50.yaml`` at 800 px, random init, 80 + 53 classes, with the box score threshold and
  the selection threshold at 0 so that ``detections_per_img`` (100) detections are selected, ranked and
  pasted.
* ``quality``: ``--quality-images`` val images of the checkpoint's data, upscaled ``--upscale`` times
  (bilinear) with their ground truth (nearest), predicted by the grid fusion (the default) and by
  the full-size fusion (``model(images)`` + ``oanet.model.fusion.fuse``, what came before); PQ of
  both and the share of pixels whose segment id is equal, per order.
* ``overhead``: ``oanet.Predictor`` end to end (uint8 array in, ``PanopticResult`` out, SRM order)
  against torchvision's ``MaskRCNN`` built from the same modules and weights
  (``benchmarks/bench_overhead.py``'s ``build_pair``, demo preset: 160 px, 50 detections, 20 selected),
  interleaved repetitions, medians.

Targets (issue 19): time at 4000x3000 <= 2x the time at 640x480 (checkpoint); peak RSS growth at
4000x3000 <= 300 MB (checkpoint) and <= 1.5 GB (r50); 8000x6000 works; PQ within 0.2 of the full-size
path and >= 99 % of pixels equal; the Predictor <= 1.20x Mask R-CNN.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

SIZES = ("640x480", "4000x3000", "8000x6000")
TARGETS = {"time_ratio": 2.0, "rss_mb": {"checkpoint": 300, "r50": 1500}, "pq_diff": 0.2, "equal": 0.99,
           "overhead": 1.20}


# --------------------------------------------------------------------------------------------
# one case per process


def _status_mb(key: str) -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def r50_predictor():
    """``coco_r50.yaml`` at 800 px, random init, with every one of its 100 detections selected."""
    import dataclasses

    import torch

    from bench_overhead import CONFIGS, label_space
    from oanet.config import Config, load_config
    from oanet.inference.torch_predictor import Predictor
    from oanet.model.oanet import OANet

    cfg = load_config(CONFIGS / "coco_r50.yaml")
    model_cfg = dataclasses.replace(
        cfg.model, num_thing_classes=80, num_stuff_classes=53, min_size=(800,), max_size=1333,
        backbone=dataclasses.replace(cfg.model.backbone, weights=None),
        roi_heads=dataclasses.replace(cfg.model.roi_heads, score_thresh=0.0, detections_per_img=100),
        fusion=dataclasses.replace(cfg.model.fusion, score_thresh=0.0),
    )
    torch.manual_seed(0)
    model = OANet.from_config(model_cfg)
    with torch.no_grad():  # confident, overlapping masks, as a trained model's
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(20.0)
    full = dataclasses.replace(Config(model=model_cfg), device="cpu")
    return Predictor(model, full, label_space(80, 53), device="cpu")


def test_image(data_root: Optional[str], height: int, width: int) -> np.ndarray:
    """A demo val image (or a smooth synthetic picture) resized to ``width x height``, uint8."""
    from PIL import Image

    images = sorted(Path(data_root, "images", "val").glob("*")) if data_root else []
    if images:
        picture = Image.open(images[0]).convert("RGB")
    else:
        yy, xx = np.mgrid[0:256, 0:256]
        picture = Image.fromarray(np.stack([yy, xx, (yy + xx) // 2], -1).astype(np.uint8))
    return np.asarray(picture.resize((width, height), Image.BILINEAR))


def run_case(model: str, size: str, repeat: int, checkpoint: Optional[str], threads: int) -> dict:
    import torch

    from oanet.inference.torch_predictor import Predictor

    torch.set_num_threads(threads)
    width, height = (int(v) for v in size.split("x"))
    if model == "r50":
        predictor, data_root = r50_predictor(), None
    else:
        predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
        image_dir = predictor.cfg.data.val.image_dir
        data_root = str(Path(image_dir).parents[1]) if image_dir and Path(image_dir).is_dir() else None
    image = test_image(data_root, height, width)
    predictor(image[:64, :64].copy())  # lazy initialisation is not the input's cost
    before = _status_mb("VmRSS")
    reset = _reset_peak()
    max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = predictor(image)
    first = time.perf_counter() - start
    if reset and _status_mb("VmHWM") is not None:
        peak = _status_mb("VmHWM") - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - max_before
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        predictor(image)
        times.append(time.perf_counter() - start)
    return {"model": model, "size": size, "first_s": first, "median_s": statistics.median(times) if times else first,
            "times_s": times, "peak_rss_growth_mb": peak, "segments": len(result.segments),
            "things": sum(1 for s in result.segments if s["isthing"]), "threads": threads,
            "peak_measure": "VmHWM" if reset else "ru_maxrss"}


def speed(models: list, sizes: list, repeat: int, checkpoint: Optional[str], threads: int) -> list:
    rows = []
    for model in models:
        for size in sizes:
            command = [sys.executable, __file__, "--case", model, size, "--repeat", str(repeat), "--threads",
                       str(threads)] + (["--checkpoint", checkpoint] if checkpoint else [])
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:
                rows.append({"model": model, "size": size, "error": (out.stderr.strip().splitlines() or ["?"])[-1]})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# quality: grid fusion against full-size fusion on upscaled val images


def upscaled_split(data_root: Path, work: Path, count: int, factor: int) -> tuple[Path, Path, Path, list]:
    """The first ``count`` val images and their ground truth, ``factor`` times larger (images bilinear,
    PNGs nearest; areas and boxes scaled): ``(json, png dir, image dir, images)``."""
    from PIL import Image

    from oanet.fileio import read_json, write_json_atomic

    gt = read_json(data_root / "annotations" / "panoptic_val.json")
    images = sorted(gt["images"], key=lambda i: i["id"])[:count]
    keep = {i["id"] for i in images}
    (work / "gt").mkdir(parents=True, exist_ok=True)
    (work / "images").mkdir(parents=True, exist_ok=True)
    for info in images:
        picture = Image.open(data_root / "images" / "val" / info["file_name"]).convert("RGB")
        picture.resize((picture.width * factor, picture.height * factor), Image.BILINEAR).save(
            work / "images" / Path(info["file_name"]).with_suffix(".png").name)
    annotations = []
    for ann in gt["annotations"]:
        if ann["image_id"] not in keep:
            continue
        png = np.asarray(Image.open(data_root / "annotations" / "panoptic_val" / ann["file_name"]))
        Image.fromarray(png.repeat(factor, 0).repeat(factor, 1)).save(work / "gt" / ann["file_name"])
        segments = [dict(s, area=s["area"] * factor * factor, bbox=[v * factor for v in s["bbox"]])
                    for s in ann["segments_info"]]
        annotations.append(dict(ann, segments_info=segments))
    scaled = [dict(i, height=i["height"] * factor, width=i["width"] * factor,
                   file_name=Path(i["file_name"]).with_suffix(".png").name) for i in images]
    data = dict(gt, images=scaled, annotations=annotations)
    return write_json_atomic(work / "gt.json", data), work / "gt", work / "images", scaled


def quality(checkpoint: str, count: int, factor: int, threads: int) -> dict:
    import torch
    from PIL import Image

    from oanet.data.coco_panoptic import PanopticWriter
    from oanet.evaluation.pq import pq_compute
    from oanet.inference.torch_predictor import Predictor
    from oanet.model.fusion import fuse

    torch.set_num_threads(threads)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", order="both")
    data_root = Path(predictor.cfg.data.val.image_dir).parents[1]
    orders = ("score", "srm")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gt_json, gt_dir, image_dir, images = upscaled_split(data_root, work, count, factor)
        writers = {(path, o): PanopticWriter(work / f"{path}_{o}.json", work / f"{path}_{o}", predictor.label_space)
                   for path in ("grid", "full") for o in orders}
        equal, pixels, seconds = {o: 0 for o in orders}, 0, {"grid": 0.0, "full": 0.0}
        for info in images:
            rgb = np.asarray(Image.open(image_dir / info["file_name"]).convert("RGB"))
            start = time.perf_counter()
            grid = predictor(rgb)
            seconds["grid"] += time.perf_counter() - start
            start = time.perf_counter()
            with torch.inference_mode():
                full = fuse(predictor.forward_arrays([rgb])[0], predictor.label_space, predictor.stuff_classes,
                            predictor.fusion, orders)
            seconds["full"] += time.perf_counter() - start
            pixels += rgb.shape[0] * rgb.shape[1]
            for o in orders:
                ids, segments = full[o]
                writers["full", o].add(info, ids.numpy(), segments)
                writers["grid", o].add(info, grid[o].panoptic, grid[o].segments)
                equal[o] += int((ids.numpy() == grid[o].panoptic).sum())
        report = {"images": len(images), "upscale": factor, "size": f"{images[0]['width']}x{images[0]['height']}",
                  "seconds": seconds, "orders": {}}
        for o in orders:
            pq = {}
            for path in ("grid", "full"):
                writers[path, o].close()
                result = pq_compute(gt_json, gt_dir, work / f"{path}_{o}.json", work / f"{path}_{o}", workers=0,
                                    progress=False).to_dict()
                pq[path] = 100 * result["All"]["pq"]
            report["orders"][o] = {"pq_grid": pq["grid"], "pq_full": pq["full"], "pq_diff": pq["grid"] - pq["full"],
                                   "equal_pixels": equal[o] / pixels}
    return report


# --------------------------------------------------------------------------------------------
# overhead: the Predictor against Mask R-CNN


def overhead(repeat: int, warmup: int, threads: int, selected: int = 20) -> dict:
    import dataclasses

    import torch

    from bench_overhead import PRESETS, build_pair, calibrate, interleaved, label_space, model_config, synthetic_batch
    from oanet.config import Config
    from oanet.inference.torch_predictor import Predictor

    torch.set_num_threads(threads)
    preset = PRESETS["demo"]
    cfg = model_config(preset)
    oanet, maskrcnn = build_pair(cfg)
    oanet.eval(), maskrcnn.eval()
    image = synthetic_batch(1, preset.size, preset.things, preset.stuff, seed=1)[0][0]
    calibration = calibrate(oanet, maskrcnn, image, selected, "fp32")
    rgb = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255  # Mask R-CNN's input, the same pixels
    predictor = Predictor(oanet, dataclasses.replace(Config(model=cfg), device="cpu"),
                          label_space(preset.things, preset.stuff), score_thresh=calibration["score_thresh"])

    def run_maskrcnn():
        with torch.inference_mode():
            maskrcnn([tensor])

    times = interleaved({"maskrcnn": run_maskrcnn, "predictor": lambda: predictor(rgb)}, repeat, warmup,
                        torch.device("cpu"))
    med = {name: statistics.median(t) for name, t in times.items()}
    return {"median_s": med, "ratio": med["predictor"] / med["maskrcnn"], "calibration": calibration,
            "repeat": repeat, "threads": threads}


# --------------------------------------------------------------------------------------------


def verdicts(report: dict) -> list[str]:
    lines = []
    cases = {(r["model"], r["size"]): r for r in report.get("speed", []) if "error" not in r}
    small, large = cases.get(("checkpoint", "640x480")), cases.get(("checkpoint", "4000x3000"))
    if small and large:
        ratio = large["median_s"] / small["median_s"]
        lines.append(f"time 4000x3000 / 640x480 (checkpoint): {ratio:.2f} (target <= {TARGETS['time_ratio']})")
    for model, limit in TARGETS["rss_mb"].items():
        case = cases.get((model, "4000x3000"))
        if case:
            lines.append(f"peak RSS growth at 4000x3000 ({model}): {case['peak_rss_growth_mb']:.0f} MB (target <= {limit})")
    for row in report.get("speed", []):
        if row["size"] == "8000x6000":
            lines.append(f"8000x6000 ({row['model']}): " + ("works" if "error" not in row else f"FAILED: {row['error']}"))
    for o, q in report.get("quality", {}).get("orders", {}).items():
        lines.append(f"quality ({o} order): PQ grid {q['pq_grid']:.2f} vs full {q['pq_full']:.2f} (diff {q['pq_diff']:+.2f}, "
                     f"target within {TARGETS['pq_diff']}); equal pixels {100 * q['equal_pixels']:.3f} % (target >= 99 %)")
    if "overhead" in report:
        o = report["overhead"]
        lines.append(f"Predictor / Mask R-CNN (demo preset): {o['ratio']:.3f} ({o['median_s']['predictor']:.4f} s vs "
                     f"{o['median_s']['maskrcnn']:.4f} s; target <= {TARGETS['overhead']})")
    return lines


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="an oanet checkpoint (e.g. DEMO/train/model_final.pth)")
    parser.add_argument("--parts", nargs="+", default=["speed", "quality", "overhead"],
                        choices=["speed", "quality", "overhead"])
    parser.add_argument("--models", nargs="+", default=["checkpoint", "r50"], choices=["checkpoint", "r50"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WIDTHxHEIGHT")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per case after the measured first one")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared machine more threads only measure the contention)")
    parser.add_argument("--quality-images", type=int, default=30)
    parser.add_argument("--upscale", type=int, default=8)
    parser.add_argument("--overhead-repeat", type=int, default=20)
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--case", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1], args.repeat, args.checkpoint, args.threads)))
        return 0
    needs_checkpoint = "quality" in args.parts or ("speed" in args.parts and "checkpoint" in args.models)
    if needs_checkpoint and not args.checkpoint:
        parser.error("--checkpoint is needed for the quality part and the checkpoint's speed cases")
    report: dict = {"load_average_before": os.getloadavg(), "cpus": os.cpu_count(), "threads": args.threads}
    if "speed" in args.parts:
        report["speed"] = speed(args.models, args.sizes, args.repeat, args.checkpoint, args.threads)
    if "quality" in args.parts:
        report["quality"] = quality(args.checkpoint, args.quality_images, args.upscale, args.threads)
        print(json.dumps(report["quality"]), flush=True)
    if "overhead" in args.parts:
        report["overhead"] = overhead(args.overhead_repeat, 2, args.threads)
        print(json.dumps(report["overhead"]), flush=True)
    report["load_average_after"] = os.getloadavg()
    report["verdicts"] = verdicts(report)
    print("\n".join(report["verdicts"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
