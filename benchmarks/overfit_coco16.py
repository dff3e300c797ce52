"""Overfit OANet on the 16 real COCO val2017 images and score PQ on the same images, in both orders.

The only real-image evidence this project can produce without COCO: the whole real path (80 + 53
classes, crowd regions, void, overlapping instance masks from the instances JSON) learns. Training runs
in segments; after each, the model is evaluated on the 16 images (one forward pass, pasted by detection
score and by the SRM), which gives the PQ curve. Random init unless --init names pretrained weights.

    # the CPU run (R18-FPN at 256 px): a time budget, calibrated on the first segment
    OMP_NUM_THREADS=2 python benchmarks/overfit_coco16.py --out runs/overfit16 --minutes 35
    # smoke test (a minute)
    python benchmarks/overfit_coco16.py --out /tmp/overfit16 --iters 4 --eval-every 2 --size 128 --max-size 160
    # a GPU: the R50 preset at 800 px with AMP
    python benchmarks/overfit_coco16.py --out runs/overfit16_r50 --recipe r50 --iters 3000 --device cuda

Writes to OUT: train/ (checkpoints, metrics.jsonl), eval_<iteration>/ (predictions of both orders),
loss.png, pq.png (PQ / PQ_th / PQ_st of both orders against the iteration), overlays/<image>.jpg (ground
truth | score order | SRM order), results.json and summary.md (the tables for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coco_panoptic_val16"

# R18-FPN with light heads, trained from random init (BatchNorm trains, every stage trains); no horizontal
# flips: the goal is to learn these 16 images, not to generalise.
CPU_RECIPE = [
    "model.backbone.depth=18", "model.backbone.weights=null", "model.backbone.trainable_layers=5",
    "model.backbone.frozen_bn=false", "model.backbone.fpn_channels=128",
    "model.rpn.anchor_sizes=[16, 32, 64, 128, 256]",
    "model.rpn.pre_nms_top_n_train=1000", "model.rpn.post_nms_top_n_train=500",
    "model.rpn.pre_nms_top_n_test=500", "model.rpn.post_nms_top_n_test=300",
    "model.roi_heads.batch_size_per_image=128", "model.roi_heads.box_representation_size=512",
    "model.roi_heads.mask_head_channels=128", "model.stuff_head.channels=64",
    "data.hflip_prob=0.0", "data.num_workers=1",
    "solver.ims_per_batch=4", "solver.base_lr=0.02", "solver.clip_grad_norm=10.0", "solver.precision=fp32",
    "solver.log_period=10",
]
# The R50 preset (coco_r50.yaml) at 800 px, random init unless --init; AMP on CUDA.
R50_RECIPE = [
    "model.backbone.weights=null", "model.backbone.trainable_layers=5", "model.backbone.frozen_bn=false",
    "data.hflip_prob=0.0", "data.num_workers=4",
    "solver.ims_per_batch=8", "solver.base_lr=0.02", "solver.clip_grad_norm=10.0", "solver.precision=amp_fp16",
    "solver.log_period=20",
]
RECIPES = {"cpu": ("synthetic_cpu.yaml", CPU_RECIPE, 256, 416), "r50": ("coco_r50.yaml", R50_RECIPE, 800, 1333)}
NUM_OVERLAYS = 6
WARMUP = 50  # iterations; the same whatever the budget, so a timed run continues its timing segment


def split_paths(data: Path) -> dict:
    return {
        "panoptic_json": str(data / "annotations" / "panoptic_val2017.json"),
        "panoptic_dir": str(data / "annotations" / "panoptic_val2017"),
        "image_dir": str(data / "val2017"),
        "instances_json": str(data / "annotations" / "instances_val2017.json"),
    }


def build_config(args):
    from oanet.config import SplitConfig, load_config

    preset, recipe, size, max_size = RECIPES[args.recipe]
    overrides = recipe + [f"model.min_size=[{args.size or size}]", f"model.max_size={args.max_size or max_size}"]
    if args.init:
        overrides += [f"model.init={args.init}"]
    cfg = load_config(REPO / "oanet" / "configs" / preset, overrides + list(args.overrides))
    split = SplitConfig(**split_paths(Path(args.data)))
    data = dataclasses.replace(cfg.data, train=split, val=split)  # evaluated on the images it learns
    return dataclasses.replace(cfg, data=data, output_dir=str(Path(args.out) / "train"), device=args.device,
                               seed=args.seed)


def with_schedule(cfg, max_iter: int, warmup: int):
    """Warm-up over ``warmup`` iterations, x0.1 at 80% and 93% of ``max_iter``."""
    steps = tuple(sorted({s for s in (round(0.8 * max_iter), round(0.93 * max_iter)) if warmup < s < max_iter}))
    solver = dataclasses.replace(cfg.solver, max_iter=max_iter, steps=steps, warmup_iters=warmup,
                                 checkpoint_period=max_iter)
    return dataclasses.replace(cfg, solver=solver)


def train_until(cfg, iteration: int) -> dict:
    """Continue the run (same schedule) up to ``iteration``; writes train/model_final.pth."""
    from oanet.train.trainer import train

    solver = dataclasses.replace(cfg.solver, max_iter=iteration, checkpoint_period=iteration)
    return train(dataclasses.replace(cfg, solver=solver), resume=True)


def evaluate_now(cfg, out: Path, iteration: int):
    """PQ of both orders on the 16 images: ``({"iteration", "score_order", "srm_order"}, Evaluation)``."""
    from oanet import Predictor
    from oanet.inference.evaluate import evaluate

    device = "cuda" if cfg.device in ("cuda", "auto") and _cuda() else "cpu"
    predictor = Predictor.from_checkpoint(Path(cfg.output_dir) / "model_final.pth", device=device, order="both")
    evaluation = evaluate(predictor, cfg.data.val, out / f"eval_{iteration}", workers=0,
                          keep_most_different=NUM_OVERLAYS, progress=False)
    return {"iteration": iteration, **evaluation.results}, evaluation


def evaluation_label_space(train_dir: Path):
    from oanet.data.labels import LabelSpace

    import torch

    return LabelSpace.from_dict(torch.load(train_dir / "model_final.pth", map_location="cpu", weights_only=True)["label_space"])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def seconds_per_iteration(train_dir: Path) -> float:
    from oanet.experiments.benchmark import read_metrics, training_seconds

    rows = read_metrics(train_dir / "metrics.jsonl")
    done = max((int(r["iteration"]) for r in rows), default=0)
    return training_seconds(rows) / done if done else float("nan")


def trained_iterations(train_dir: Path) -> int:
    """Iterations in the run's resumable checkpoint (0 when there is none)."""
    import torch

    last = train_dir / "last.pth"
    if not last.is_file():
        return 0
    return int(torch.load(last, map_location="cpu", weights_only=True)["iteration"])


def recorded_points(path: Path) -> dict:
    """The PQ points an earlier (killed) invocation measured, by iteration."""
    if not path.is_file():
        return {}
    return {int(p["iteration"]): p for p in json.loads(path.read_text())}


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def pq_line(results: dict) -> str:
    parts = []
    for order in ("score_order", "srm_order"):
        r = results[order]
        parts.append(f"{order.split('_')[0]}: PQ {100 * r['All']['pq']:.1f} th {100 * r['Things']['pq']:.1f} "
                     f"st {100 * r['Stuff']['pq']:.1f}")
    return " | ".join(parts)


def plot_pq(points: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    its = [p["iteration"] for p in points]
    for group, color in (("All", "black"), ("Things", "tab:red"), ("Stuff", "tab:blue")):
        for order, style in (("score_order", "--"), ("srm_order", "-")):
            label = f"PQ{'' if group == 'All' else '_' + group[:2].lower()} ({order.split('_')[0]})"
            ax.plot(its, [100 * p[order][group]["pq"] for p in points], style, color=color, label=label, marker=".")
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("iteration")
    ax.set_ylabel("PQ on the 16 training images (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_overlays(cfg, out: Path, evaluation, categories: dict) -> list[Path]:
    """Ground truth | score order | SRM order for the images where the two orders differ most."""
    from oanet.experiments.demo import draw_order_comparisons

    return draw_order_comparisons(evaluation.most_different, cfg.data.val, categories, out / "overlays")


def write_summary(out: Path, cfg, points: list[dict], run: dict) -> Path:
    from oanet.inference.evaluate import format_comparison_markdown

    final = points[-1]
    lines = [
        f"# OANet overfit on 16 COCO val2017 images ({run['recipe']} recipe)", "",
        f"{run['iterations']} iterations of {cfg.solver.ims_per_batch} images at "
        f"{cfg.model.min_size[-1]}/{cfg.model.max_size} px, ResNet-{cfg.model.backbone.depth}-FPN "
        f"{cfg.model.backbone.fpn_channels}, init: {cfg.model.init or 'random'}; "
        f"{run['train_minutes']:.1f} min training ({run['seconds_per_iter']:.2f} s/iteration), "
        f"{run['eval_minutes']:.1f} min evaluating; {run['device']}, torch threads {run['threads']}.", "",
        "PQ on the same 16 images (%):", "", format_comparison_markdown(final["score_order"], final["srm_order"]), "",
        "| iteration | " + " | ".join(f"{g} ({o})" for o in ("score", "SRM") for g in ("PQ", "PQ_th", "PQ_st")) + " |",
        "|---:|" + "---:|" * 6,
    ]
    for p in points:
        cells = [f"{100 * p[o][g]['pq']:.1f}" for o in ("score_order", "srm_order") for g in ("All", "Things", "Stuff")]
        lines.append(f"| {p['iteration']} | " + " | ".join(cells) + " |")
    lines += ["", "![PQ](pq.png)", "", "![loss](loss.png)", ""]
    lines += [f"![{p.stem}](overlays/{p.name})" for p in sorted((out / "overlays").glob("*.jpg"))]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plan(cfg, args, log) -> tuple:
    """``(cfg with the full schedule, iterations to evaluate at)``: from --iters, or from --minutes after timing the first
    segment (the schedule's LR steps lie beyond it, so it is the same run either way)."""
    warmup = min(WARMUP, max(1, args.iters // 4)) if args.iters else WARMUP
    if args.iters:
        total = args.iters
    else:
        probe = with_schedule(cfg, 10**6, warmup)  # warm-up and constant rate during the timing segment
        first = args.eval_every or WARMUP
        train_until(probe, first)
        spi = seconds_per_iteration(Path(cfg.output_dir))
        total = max(first + 1, int(args.minutes * 60 * (1 - args.eval_share) / spi))
        log(f"{spi:.2f} s/iteration -> {total} iterations for {args.minutes:g} min")
    every = args.eval_every or max(10, total // 10)
    points = sorted(set(list(range(every, total, every)) + [total]))
    return with_schedule(cfg, total, warmup), points


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (a run there is resumed)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"the 16-image sample (default {DEFAULT_DATA})")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--iters", type=int, help="training iterations")
    budget.add_argument("--minutes", type=float, help="training time budget (calibrated on the first segment)")
    parser.add_argument("--eval-every", type=int, default=0, help="iterations between PQ points (default: 10 points)")
    parser.add_argument("--eval-share", type=float, default=0.15, help="share of --minutes kept for evaluations")
    parser.add_argument("--size", type=int, default=0, help="shortest side (default: the recipe's)")
    parser.add_argument("--max-size", type=int, default=0, help="longest side cap (default: the recipe's)")
    parser.add_argument("--init", default=None, help="model.init: pretrained weights (default: random init)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more config overrides")
    args = parser.parse_args(argv)

    import torch

    from oanet.experiments.benchmark import read_metrics
    from oanet.experiments.demo import plot_losses

    if not (Path(args.data) / "annotations" / "panoptic_val2017.json").is_file():
        parser.error(f"{args.data}: no annotations/panoptic_val2017.json")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[overfit16] {msg}", file=sys.stderr, flush=True)
    cfg = build_config(args)
    started = time.perf_counter()
    cfg, eval_points = plan(cfg, args, log)
    evaluation, recorded = None, recorded_points(out / "curve.json")
    done = trained_iterations(Path(cfg.output_dir))
    for iteration in eval_points:
        if iteration in recorded and (iteration < eval_points[-1] or done >= iteration):
            continue  # a resumed run keeps the points it measured (evaluated again only for the final overlays)
        if iteration < done:
            log(f"iteration {iteration}: not evaluated, the resumed run is already at iteration {done}")
            continue
        train_until(cfg, iteration)
        tic = time.perf_counter()
        recorded[iteration], evaluation = evaluate_now(cfg, out, iteration)
        recorded[iteration]["eval_seconds"] = time.perf_counter() - tic
        log(f"iteration {iteration}: {pq_line(recorded[iteration])}")
        write_atomic(out / "curve.json", json.dumps([recorded[i] for i in sorted(recorded)], indent=1))
    if evaluation is None:
        _, evaluation = evaluate_now(cfg, out, eval_points[-1])  # for the overlays of a finished run
    points = [recorded[i] for i in sorted(recorded) if i <= eval_points[-1]]

    train_dir = Path(cfg.output_dir)
    plot_losses(read_metrics(train_dir / "metrics.jsonl"), out / "loss.png")
    plot_pq(points, out / "pq.png")
    from oanet.result import category_table

    draw_overlays(cfg, out, evaluation, category_table(evaluation_label_space(train_dir)))
    spi = seconds_per_iteration(train_dir)
    run = {
        "recipe": args.recipe, "iterations": eval_points[-1], "seconds_per_iter": spi,
        "train_minutes": spi * eval_points[-1] / 60, "eval_minutes": sum(p.get("eval_seconds", 0.0) for p in points) / 60,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if _cuda() and cfg.device != "cpu" else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "command": " ".join(sys.argv),
    }
    write_atomic(out / "results.json", json.dumps({"final": points[-1], "curve": points, "run": run}, indent=1))
    summary = write_summary(out, cfg, points, run)
    log(f"done ({(time.perf_counter() - started) / 60:.1f} min in this invocation): {pq_line(points[-1])}; {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
