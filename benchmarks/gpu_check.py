"""The measurements of benchmarks/gpu_check.sh: OANet against torchvision's Mask R-CNN R50-FPN on one GPU.

    python benchmarks/gpu_check.py --out DIR              # CUDA: R50 at 800x1333 (what gpu_check.sh runs)
    python benchmarks/gpu_check.py --out DIR --dry-run    # the same code on the CPU, tiny model and sizes

Writes ``DIR/env.json`` (versions, device, TF32 flags), ``DIR/results.json`` (every figure) and
``DIR/summary.md`` (the tables for BENCHMARKS.md). The models, data and timing are those of
bench_overhead.py (its docstring says what each side of a step includes):

* training images/s of ``coco_r50.yaml`` (ResNet-50-FPN, frozen BN, res3-res5 trained) at
  800x1333, 2 images per step (the paper's per-GPU batch), under ``amp_fp16`` (and ``bf16`` where the
  GPU has it), OANet against Mask R-CNN with the same instance network, interleaved; target >= 0.9;
* inference seconds per 800x1333 image in fp32, amp_fp16 and bf16, OANet with fusion in both orders
  against Mask R-CNN (for scale: detectron2's Panoptic FPN R50 1x takes 0.053 s on a V100);
* peak GPU memory of each (``torch.cuda.max_memory_allocated``, one extra step or pass each).

A phase that would start after ``--budget-s`` seconds is skipped and says so in the results.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

import bench_overhead as bench

REAL = {"preset": "r50_800", "device": "cuda", "repeat": 15, "warmup": 3}
DRY = {"preset": "tiny", "device": "cpu", "repeat": 1, "warmup": 0}
TRAIN_TARGET = 0.9  # OANet images/s >= 0.9 x Mask R-CNN's
DETECTRON2_PANOPTIC_FPN_R50_S = 0.053  # s/image on a V100 (detectron2 model zoo, Panoptic FPN R50 1x)


def environment(device: torch.device) -> dict:
    import torchvision

    env = {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cuda_available": torch.cuda.is_available(), "device": str(device),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
        )
    return env


def precisions_for(device: torch.device, names: list) -> list:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return [p for p in names if p != "bf16"]
    return names


def run_phases(setup: dict, budget_s: float, selected: int, save=lambda results: None) -> dict:
    """Every phase in turn; ``save(results)`` after each, so a run cut short keeps what it measured."""
    device = torch.device(setup["device"])
    start = time.perf_counter()
    results: dict = {"setup": setup, "train": {}, "inference": {}, "skipped": [], "errors": {}}
    phases = [("train", p) for p in precisions_for(device, ["amp_fp16", "bf16"])]
    phases += [("inference", p) for p in precisions_for(device, ["fp32", "amp_fp16", "bf16"])]
    for part, precision in phases:
        if time.perf_counter() - start > budget_s:
            results["skipped"].append(f"{part} {precision}: time budget of {budget_s:.0f} s spent")
            continue
        try:
            report = bench.measure(setup["preset"], device, precision, setup["repeat"], setup["warmup"], selected,
                                   parts=(part,))
            results[part][precision] = report[part]
            results.setdefault("parameters", report["parameters"])
        except Exception as exc:  # one failing phase must not cost the others' figures
            results["errors"][f"{part} {precision}"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            traceback.print_exc()
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results["seconds"] = time.perf_counter() - start
        save(results)
        print(f"{part} {precision} done at {results['seconds']:.0f} s", flush=True)
    return results


def _gib(value) -> str:
    return "n/a (CPU)" if value is None else f"{value / 2**30:.2f}"


def summary(env: dict, results: dict) -> str:
    setup = results["setup"]
    preset = bench.PRESETS[setup["preset"]]
    h, w = preset.size
    where = env.get("gpu", "CPU (dry run)")
    lines = [
        f"# GPU check: {where}, torch {env['torch']}, torchvision {env['torchvision']}",
        "",
        f"`{preset.config}` at {h}x{w}, random init, {setup['repeat']} timed repetitions after {setup['warmup']} "
        "warm-up, OANet and Mask R-CNN interleaved (medians). cuDNN TF32 "
        f"{'on' if env['cudnn_allow_tf32'] else 'off'}, matmul TF32 {'on' if env['matmul_allow_tf32'] else 'off'}.",
        "",
        f"| training, batch {preset.batch} | Mask R-CNN images/s | OANet images/s | OANet / Mask R-CNN | target | "
        "peak GiB Mask R-CNN | peak GiB OANet |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for precision, r in results["train"].items():
        ips, mem = r["images_per_s"], r["peak_memory_bytes"]
        ratio = ips["oanet"] / ips["maskrcnn"]
        lines.append(f"| {precision} | {ips['maskrcnn']:.2f} | {ips['oanet']:.2f} | {ratio:.3f} | >= {TRAIN_TARGET} "
                     f"({'met' if ratio >= TRAIN_TARGET else 'not met'}) | {_gib(mem['maskrcnn'])} | {_gib(mem['oanet'])} |")
    lines += [
        "",
        "| inference, 1 image | Mask R-CNN s/image | OANet s/image (+ fusion, both orders) | ratio | "
        "SRM + fusion share | peak GiB Mask R-CNN | peak GiB OANet |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for precision, r in results["inference"].items():
        m, mem = r["median_s"], r["peak_memory_bytes"]
        lines.append(f"| {precision} ({r['detections']} detections, {r['selected']} fused) | {m['maskrcnn']:.4f} | "
                     f"{m['oanet']:.4f} | {r['ratio_oanet_over_maskrcnn']:.3f} | {r['srm_plus_fusion_share']:.1%} | "
                     f"{_gib(mem['maskrcnn'])} | {_gib(mem['oanet'])} |")
    lines.append(f"\nFor scale: detectron2's Panoptic FPN R50 1x, {DETECTRON2_PANOPTIC_FPN_R50_S} s/image on a V100.")
    for precision, r in results["inference"].items():
        lines.append(f"\nOANet inference parts, {precision} (s): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in r["breakdown_s"]["oanet"].items()))
    for precision, r in results["train"].items():
        lines.append(f"\nOANet training parts, {precision} (s, forward + backward): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in r["oanet_parts_s"].items()))
    for note in results["skipped"]:
        lines.append(f"\nSkipped: {note}")
    for phase, error in results["errors"].items():
        lines.append(f"\nFAILED {phase}: {error}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at tiny sizes")
    parser.add_argument("--env-only", action="store_true", help="write env.json and stop")
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no phase after this many seconds")
    parser.add_argument("--selected", type=int, default=20, help="detections fused per image")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = dict(DRY if args.dry_run else REAL)
    device = torch.device(setup["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch (use --dry-run on a CPU machine)", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(1)  # the dry run shares a CI machine's cores
    env = environment(device)
    (out / "env.json").write_text(json.dumps(env, indent=2))
    print(json.dumps(env, indent=2), flush=True)
    if args.env_only:
        return 0
    def save(results: dict) -> None:
        (out / "results.json").write_text(json.dumps({"env": env, **results}, indent=2))
        (out / "summary.md").write_text(summary(env, results))

    results = run_phases(setup, args.budget_s, args.selected, save)
    save(results)
    print(summary(env, results), flush=True)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
