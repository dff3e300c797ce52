"""``oanet demo``: the paper's central claim, checked end to end on a CPU in minutes.

1. generate the synthetic occlusion benchmark (unless the data folder already holds one);
2. train the CPU preset (``synthetic_cpu.yaml``) on its train split;
3. evaluate on its val split, pasting instances by detection score (the heuristic), by the SRM
   ranking score and in the true depth order of the scene (the oracle, :mod:`oanet.experiments.oracle`),
   from one forward pass per image;
4. write ``report.html`` (:mod:`oanet.report`: the run, the PQ tables, the images to browse with each
   order side by side), ``report.md`` (PQ table, the SRM's share of the PQ_th a perfect order would add,
   loss curve, overlays where the two orders differ most) and ``report.json`` (``score_order`` /
   ``srm_order`` / ``oracle_order`` in the format of ``oanet pq --output``).

Running it again in the same folder resumes training where it stopped and re-evaluates.

Layout of ``out_dir``::

    data/            the benchmark (unless --data names another folder)
    train/           checkpoints, metrics.jsonl, config.yaml (the trainer's output folder)
    eval/            predictions of the three orders, results.json, order_differences.json, report.html
    report.html      the page to look at first (its pictures are in eval/report_files/)
    loss.png, overlays/<image>.jpg, report.md, report.json
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from oanet.config import Config, SplitConfig, load_config
from oanet.errors import ConfigError, DataError, make_dir
from oanet.fileio import read_json, write_json_atomic, write_text_atomic
from oanet.experiments.benchmark import (PRESET, QUICK_OVERRIDES, benchmark_split, ensure_benchmark, read_metrics,
                                        scale_schedule, training_seconds)
from oanet.orders import ORACLE, ORDERS, order_key
from oanet.presets import find_preset

NUM_OVERLAYS = 4
OVERLAY_MIN_SIDE = 384  # small benchmark images are enlarged so their labels stay readable
CALIBRATION_ITERS = 10


# --------------------------------------------------------------------------------------------
# configuration and training


def demo_config(data_dir: Path, out_dir: Path, quick: bool, preset: Optional[Path] = None) -> Config:
    cfg = load_config(preset or find_preset(PRESET), QUICK_OVERRIDES if quick else [])
    data = dataclasses.replace(cfg.data, train=benchmark_split(data_dir, "train"), val=benchmark_split(data_dir, "val"))
    return dataclasses.replace(cfg, data=data, output_dir=str(out_dir / "train"))


def train_for(cfg: Config, minutes: Optional[float], log=print) -> tuple[Config, dict]:
    """Train ``cfg``, resuming a previous run in its output folder.

    With ``minutes``, a fresh run first times ``CALIBRATION_ITERS`` iterations in a scratch folder (deleted
    afterwards), then trains the iteration count that fits the budget from the start, LR steps and
    warm-up scaled to it. The plan is saved, so a resumed run keeps the same schedule.
    """
    import shutil

    from oanet.train.trainer import train

    out = Path(cfg.output_dir)
    plan_path = out / "demo_schedule.json"
    if plan_path.is_file():
        cfg = scale_schedule(cfg, int(read_json(plan_path, "demo schedule")["max_iter"]))
    elif minutes is not None:
        if minutes <= 0:
            raise ConfigError(f"--minutes must be positive, got {minutes}")
        calibration = min(CALIBRATION_ITERS, cfg.solver.max_iter)
        log(f"[2/4] timing {calibration} iterations to fit training into {minutes:g} min")
        # The timing run has its own folder: the planned run's warm-up and LR steps differ from any
        # schedule the timing run could store, and a resumed run must keep one schedule.
        scratch = out.parent / f"{out.name}_timing"
        probe = dataclasses.replace(cfg, output_dir=str(scratch),
                                    solver=dataclasses.replace(cfg.solver, max_iter=calibration))
        started = time.perf_counter()
        train(probe, resume=True)
        # The logged iteration times leave out start-up (reading annotations, building the model).
        logged = training_seconds(read_metrics(scratch / "metrics.jsonl"))
        seconds_per_iter = (logged if logged > 0 else time.perf_counter() - started) / calibration
        shutil.rmtree(scratch, ignore_errors=True)
        max_iter = max(calibration, int(minutes * 60 / seconds_per_iter))
        cfg = scale_schedule(cfg, max_iter)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(plan_path, {"max_iter": max_iter, "seconds_per_iter": seconds_per_iter})
        log(f"      {seconds_per_iter:.2f} s/iteration -> {max_iter} iterations")
    log(f"[2/4] training {cfg.solver.max_iter} iterations -> {out}")
    summary = train(cfg, resume=True)
    return cfg, summary


# --------------------------------------------------------------------------------------------
# report


def loss_figure(metrics: Sequence[Mapping]):
    """The figure of :func:`plot_losses` (None without metrics); matplotlib is imported here only."""
    rows = [m for m in metrics if "loss" in m]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [m["iteration"] for m in rows]
    terms = sorted({k for m in rows for k in m if k.startswith("loss_")})
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    ax.plot(iterations, [m["loss"] for m in rows], color="black", linewidth=2, label="total (Eq. 1)")
    for term in terms:
        ax.plot(iterations, [m.get(term, float("nan")) for m in rows], linewidth=1, label=term[len("loss_"):])
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    if all(m["loss"] > 0 for m in rows):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    # Beside the axes: inside, any corner covered the total loss at the start or the end of training.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot_losses(metrics: Sequence[Mapping], path: Path) -> Optional[Path]:
    """Total and per-term training losses against the iteration (log scale), the legend beside the
    plot; None without metrics."""
    fig = loss_figure(metrics)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_order_comparisons(most_different: Sequence[tuple], split: SplitConfig, categories: Mapping[int, dict],
                           out_dir: Path) -> list[Path]:
    """Ground truth | heuristic | SRM overlays of the images the evaluation kept as most different.

    ``most_different`` holds ``(ImageItem, {order: PanopticResult}, difference)`` as
    :class:`~oanet.inference.sinks.OrderDifferences` keeps them: the predictions come from memory, only
    the ground truth is read.
    """
    from oanet import viz
    from oanet.data.coco_panoptic import PanopticSplit
    from oanet.orders import ORDER_TITLES, ORDERS

    ground_truth = PanopticSplit.from_config(split, where="data.val")
    out_dir.mkdir(parents=True, exist_ok=True)

    def panel(title: str, image, ids, segments) -> tuple:
        big_image, big_ids = viz.enlarge(image, ids, OVERLAY_MIN_SIDE)
        return title, viz.draw_panoptic(big_image, big_ids, segments, categories)

    written = []
    for item, results, _ in most_different:
        ann = ground_truth.annotation(item.image_id)
        gt_segments = [{"id": int(i), "category_id": int(c)} for i, c in zip(ann.segment_ids, ann.category_ids)]
        panels = [panel("ground truth", item.rgb, ground_truth.read_id_map(item.image_id), gt_segments)]
        panels += [panel(ORDER_TITLES[o], item.rgb, results[o].panoptic, results[o].segments) for o in ORDERS]
        path = out_dir / (Path(item.file_name).stem + ".jpg")
        viz.side_by_side(panels).save(path, quality=92)
        written.append(path)
    return written


def difference_dict(score: Mapping, srm: Mapping) -> dict:
    """SRM - score for PQ/SQ/RQ of All/Things/Stuff (fractions, like the PQ dicts)."""
    from oanet.inference.evaluate import GROUPS, METRICS

    return {g: {m: float(srm[g][m]) - float(score[g][m]) for m in METRICS} for g in GROUPS}


def write_report(
    out_dir: Path,
    results: Mapping[str, Mapping],
    run: Mapping[str, Any],
    loss_plot: Optional[Path],
    overlays: Sequence[tuple[Path, float]],
) -> tuple[Path, Path]:
    """report.md and report.json in ``out_dir`` (written atomically); returns their paths."""
    from oanet.experiments.tables import oracle_share

    score, srm = results[order_key("score")], results[order_key("srm")]
    diff = difference_dict(score, srm)
    report_json = {order_key("score"): score, order_key("srm"): srm, "difference": diff, "run": dict(run)}
    if order_key(ORACLE) in results:
        report_json[order_key(ORACLE)] = results[order_key(ORACLE)]
        report_json["srm_share_of_oracle_gain"] = oracle_share(results)  # PQ_th; None when undefined
    json_path = write_json_atomic(out_dir / "report.json", report_json, indent=2)
    md_path = write_text_atomic(out_dir / "report.md", report_markdown(results, diff, run, loss_plot, overlays))
    return md_path, json_path


def report_markdown(results: Mapping[str, Mapping], diff: Mapping, run: Mapping[str, Any], loss_plot: Optional[Path],
                    overlays: Sequence[tuple[Path, float]]) -> str:
    from oanet.inference.evaluate import format_comparison_markdown

    score, srm = results[order_key("score")], results[order_key("srm")]
    verdict = (
        f"The SRM order changes PQ by **{100 * diff['All']['pq']:+.2f}** points "
        f"(things {100 * diff['Things']['pq']:+.2f}, stuff {100 * diff['Stuff']['pq']:+.2f}) "
        "against the detection-score heuristic, on the same detections from the same forward pass."
    )
    lines = [
        "# oanet demo: score-order heuristic vs spatial ranking module",
        "",
        f"Synthetic occlusion benchmark `{run['data_dir']}`: {run['train_images']} training and "
        f"{run['val_images']} validation images. Preset `{run['preset']}`, {run['iterations']} iterations "
        f"({run['train_minutes']:.1f} min of training on {run['device']}), evaluation {run['eval_minutes']:.1f} min.",
        "" if not run.get("quick") else "\n**--quick run: a smoke test with a few iterations; the numbers mean nothing.**\n",
        "## Panoptic quality (val, %)",
        "",
        format_comparison_markdown(score, srm),
        "",
        verdict,
        "",
        oracle_sentence(results, run.get("no_oracle")),
        "",
        "Both orders paste the same detections over the same stuff prediction; only the order in which "
        "overlapping instances are pasted differs (detection score vs. the Eq. 3 ranking score). "
        "`n` is the number of categories that occur. Full per-class numbers: `report.json` "
        "(format of `oanet pq --output`).",
        "",
        "## Training loss",
        "",
        f"![training loss]({loss_plot.name})" if loss_plot else "(no metrics logged)",
        "",
        "## Where the two orders differ",
        "",
    ]
    if overlays:
        lines += [
            "Validation images whose panoptic maps differ most between the two orders "
            "(share of pixels assigned to a different segment). Left to right: ground truth, heuristic, SRM.",
            "",
        ]
        for path, difference in overlays:
            lines += [f"**{path.stem}**: {100 * difference:.1f}% of pixels differ", "", f"![{path.stem}](overlays/{path.name})", ""]
    else:
        lines.append("The two orders gave identical panoptic maps on every validation image.")
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        reproduce_command(Path(run["checkpoint"]), Path(run["eval_dir"])),
        "```",
        "",
    ]
    return "\n".join(lines)


def reproduce_command(checkpoint: Path, eval_dir: Path) -> str:
    """The evaluate command behind the report, with absolute paths: it works from any folder (the
    checkpoint's data paths are absolute too, see oanet.config.resolve_data_paths)."""
    return f"oanet evaluate --checkpoint {shlex.quote(str(checkpoint.absolute()))} --out {shlex.quote(str(eval_dir.absolute()))}"


# --------------------------------------------------------------------------------------------
# the job


def run_demo(
    out_dir: str | Path,
    data_dir: Optional[str | Path] = None,
    minutes: Optional[float] = None,
    quick: bool = False,
    log=None,
) -> dict:
    """Generate, train, evaluate and report; returns ``{"report_md", "report_json", "results"}``."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    data_dir = Path(data_dir) if data_dir is not None else out_dir / "data"
    if minutes is not None and minutes <= 0:  # before minutes of benchmark generation, not after
        raise ConfigError(f"--minutes must be positive, got {minutes}")
    make_dir(out_dir)

    ensure_benchmark(data_dir, quick, log)
    preset = find_preset(PRESET)
    cfg = demo_config(data_dir, out_dir, quick, preset)

    cfg, summary = train_for(cfg, minutes, log)

    started = time.perf_counter()
    checkpoint, eval_dir = Path(summary["final_model"]), out_dir / "eval"
    predictor, evaluation, no_oracle = evaluate_orders(checkpoint, eval_dir, quick, log)
    results = evaluation.results
    eval_minutes = (time.perf_counter() - started) / 60

    log("[4/4] writing the report")
    metrics = read_metrics(Path(cfg.output_dir) / "metrics.jsonl")
    train_minutes = training_seconds(metrics) / 60
    loss_plot = plot_losses(metrics, out_dir / "loss.png")
    pictures = draw_order_comparisons(evaluation.most_different, predictor.cfg.data.val, predictor.categories,
                                      out_dir / "overlays")
    run = {
        "data_dir": str(data_dir),
        "train_images": _count_images(cfg.data.train.panoptic_json),
        "val_images": len(evaluation.differences),
        "preset": preset.name,
        "quick": quick,
        "iterations": int(summary["iteration"]),
        "train_minutes": train_minutes,
        "eval_minutes": eval_minutes,
        "device": str(predictor.device),
        "checkpoint": str(checkpoint.absolute()),
        "eval_dir": str(eval_dir.absolute()),
        "images_with_different_maps": sum(1 for d in evaluation.differences.values() if d > 0),
        "no_oracle": no_oracle,
    }
    md_path, json_path = write_report(out_dir, results, run, loss_plot,
                                      list(zip(pictures, [d for _, _, d in evaluation.most_different])))
    html_path = write_html_reports(out_dir, eval_dir, predictor.cfg.data.val, results, run, loss_plot,
                                   workers=0 if quick else None)
    log(f"wrote {html_path}, {md_path} and {json_path}")
    return {"report_html": str(html_path), "report_md": str(md_path), "report_json": str(json_path),
            "results": results}


def write_html_reports(out_dir: Path, eval_dir: Path, split: SplitConfig, results: Mapping[str, Mapping],
                       run: Mapping[str, Any], loss_plot: Optional[Path], workers: Optional[int] = None) -> Path:
    """``eval/report.html`` (what ``oanet evaluate`` writes) and ``report.html``: the same page with the
    demo's run, verdict and loss curve first; both use the pictures in ``eval/report_files``."""
    import html
    import re

    from oanet.report import evaluation_report
    from oanet.report.html import section

    page = evaluation_report(eval_dir, split.panoptic_json, split.panoptic_dir, split.image_dir, workers=workers)
    page.write(eval_dir / "report.html")
    bold = lambda text: re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))  # noqa: E731
    diff = difference_dict(results[order_key("score")], results[order_key("srm")])
    verdict = (f"The SRM order changes PQ by **{100 * diff['All']['pq']:+.2f}** points (things "
               f"{100 * diff['Things']['pq']:+.2f}, stuff {100 * diff['Stuff']['pq']:+.2f}) against the "
               "detection-score heuristic, on the same detections from the same forward pass.")
    facts = (f"Synthetic occlusion benchmark <code>{html.escape(str(run['data_dir']))}</code>: "
             f"{run['train_images']} training and {run['val_images']} validation images. Preset "
             f"<code>{html.escape(str(run['preset']))}</code>, {run['iterations']} iterations "
             f"({run['train_minutes']:.1f} min of training on {html.escape(str(run['device']))}), evaluation "
             f"{run['eval_minutes']:.1f} min.")
    quick = ("<p><b>--quick run: a smoke test with a few iterations; the numbers mean nothing.</b></p>"
             if run.get("quick") else "")
    loss = (f'<img src="{html.escape(loss_plot.name)}" alt="training loss" style="width:440px;max-width:100%">'
            if loss_plot else "")
    command = html.escape(reproduce_command(Path(run["checkpoint"]), eval_dir))
    body = (f"<div style='display:flex;gap:20px;flex-wrap:wrap;align-items:flex-start'><div style='flex:1 1 480px'>"
            f"<p>{facts}</p>{quick}<p>{bold(verdict)}</p><p>{bold(oracle_sentence(results, run.get('no_oracle')))}</p>"
            f"<p class='note'>Reproduce: <code>{command}</code> (it writes eval/report.html).</p></div>{loss}</div>")
    page.title = "oanet demo: score-order heuristic vs spatial ranking module"
    page.extra_sections = [section("run", "The demo", body)]
    return page.write(out_dir / "report.html")


def evaluate_orders(checkpoint: Path, eval_dir: Path, quick: bool, log) -> tuple[Any, Any, Optional[str]]:
    """Step 3: the val split in the score, SRM and (where the benchmark has depths) oracle orders,
    from one forward pass per image. Returns ``(predictor, evaluation, why there is no oracle)``."""
    from oanet.inference.evaluate import evaluate, format_comparison
    from oanet.inference.torch_predictor import Predictor

    log("[3/4] evaluating both fusion orders (and the oracle order) on the val split")
    predictor = Predictor.from_checkpoint(checkpoint, order="both")
    evaluator, no_oracle = with_oracle(predictor, predictor.cfg.data.val)
    if no_oracle:
        log(f"      no oracle order: {no_oracle}")
    evaluation = evaluate(evaluator, predictor.cfg.data.val, eval_dir, workers=None if not quick else 0,
                          keep_most_different=NUM_OVERLAYS, orders=evaluator.orders)
    log(format_comparison(evaluation.results[order_key("score")], evaluation.results[order_key("srm")]))
    return predictor, evaluation, no_oracle


def with_oracle(predictor, split: SplitConfig) -> tuple[Any, Optional[str]]:
    """``predictor`` with the oracle order added (:class:`~oanet.experiments.oracle.OraclePredictor`) when the
    split's instances annotate depth; else ``predictor`` itself and the reason, as one line."""
    from oanet.experiments.oracle import OraclePredictor
    from oanet.experiments.oracle import DepthTruth

    if split.instances_json is None:
        return predictor, "the val split has no instances JSON (the true depth comes from it)"
    try:
        return OraclePredictor(predictor, DepthTruth(split.instances_json)), None
    except (DataError, FileNotFoundError) as exc:
        return predictor, str(exc)


def oracle_sentence(results: Mapping[str, Mapping], no_oracle: Optional[str] = None) -> str:
    """The report's line on how much of a perfect order's PQ_th gain the SRM recovers."""
    from oanet.experiments.tables import oracle_share

    if order_key(ORACLE) not in results:
        return f"The oracle order was not computed: {no_oracle or 'no depth annotations'}."
    score, srm, oracle = (100 * float(results[order_key(o)]["Things"]["pq"]) for o in (*ORDERS, ORACLE))
    share = oracle_share(results)
    where = (f"Pasting the same detections in the true depth order of the scene (the oracle: detections matched "
             f"to the annotated instances by mask IoU) gives PQ_th **{oracle:.2f}** (heuristic {score:.2f}, "
             f"SRM {srm:.2f}). ")
    if share is None:
        return where + "A perfect order adds nothing over the heuristic here, so the SRM's share of it is undefined."
    return where + f"The SRM recovers **{100 * share:.0f}%** of the PQ_th that a perfect order would add."


def _count_images(panoptic_json: str) -> int:
    return len(read_json(panoptic_json, "panoptic")["images"])
