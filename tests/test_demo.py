"""End to end through the CLI: `oanet demo --quick`, then `evaluate` and `predict` on its checkpoint.

`demo` and `evaluate` run in subprocesses; `predict` goes through ``oanet.cli.main`` in this process.

One quick demo (tiny benchmark, tiny network, 2 iterations, CPU) runs once per module in a
subprocess, exactly as a user would start it; the other commands reuse its data and checkpoint.
The numbers of a 2-iteration model mean nothing: these tests check files, keys and consistency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oanet.cli import main as oanet_main
from oanet import viz
from oanet.data.png_io import read_id_png

PQ_GROUPS = ("All", "Things", "Stuff")
PQ_KEYS = {"pq", "sq", "rq", "n"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "oanet.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_pq_dict(result: dict) -> None:
    for group in PQ_GROUPS:
        assert set(result[group]) == PQ_KEYS
        assert all(0.0 <= result[group][k] <= 1.0 for k in ("pq", "sq", "rq"))
    assert isinstance(result["per_class"], dict) and result["per_class"]


def assert_valid_panoptic_output(panoptic_json: Path, expected_images: int) -> dict:
    """Every PNG exists, every id in it is declared, every category resolves to a named category."""
    data = json.loads(panoptic_json.read_text())
    assert len(data["images"]) == len(data["annotations"]) == expected_images
    names = {c["id"]: c["name"] for c in data["categories"]}
    for ann in data["annotations"]:
        ids = read_id_png(panoptic_json.parent / "panoptic" / ann["file_name"])
        declared = {s["id"] for s in ann["segments_info"]}
        present = set(np.unique(ids).tolist()) - {0}
        assert present == declared, ann["file_name"]
        for seg in ann["segments_info"]:
            assert seg["category_id"] in names
            assert seg["area"] == int((ids == seg["id"]).sum())
    return data


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    proc = run_cli("demo", "--quick", "--out", str(out), cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[4/4]" in proc.stderr  # progress is shown
    return out


@pytest.mark.slow
def test_demo_quick_writes_report_with_both_orders(demo):
    report = json.loads((demo / "report.json").read_text())
    for order in ("score_order", "srm_order"):
        assert_pq_dict(report[order])
    for group in PQ_GROUPS:
        expected = report["srm_order"][group]["pq"] - report["score_order"][group]["pq"]
        assert report["difference"][group]["pq"] == pytest.approx(expected)
    md = (demo / "report.md").read_text()
    assert "PQ (score)" in md and "PQ (SRM)" in md and "ΔPQ" in md
    assert (demo / "loss.png").is_file() and "![training loss](loss.png)" in md
    assert report["run"]["iterations"] == 2
    # The oracle order (true depth) comes from the same evaluation; the report states the SRM's share of it.
    assert_pq_dict(report["oracle_order"])
    assert "srm_share_of_oracle_gain" in report and "perfect order" in md
    # The evaluation outputs behind the report.
    assert json.loads((demo / "eval" / "results.json").read_text()).keys() == {"score_order", "srm_order",
                                                                                "oracle_order"}
    assert_valid_panoptic_output(demo / "eval" / "srm_order" / "panoptic.json", expected_images=3)
    # The page to open first (oanet.report): the run, then the evaluation's page with the oracle order.
    page = (demo / "report.html").read_text()
    assert "The demo" in page and '"orders":["score","srm","oracle"]' in page and "eval/report_files/" in page
    assert (demo / "eval" / "report.html").is_file() and (demo / "eval" / "segment_scores.json").is_file()


@pytest.mark.slow
def test_demo_overlays_show_ground_truth_and_both_orders(demo, tmp_path):
    from oanet import Predictor
    from oanet.experiments.benchmark import benchmark_split
    from oanet.experiments.demo import draw_order_comparisons
    from oanet.inference.evaluate import evaluate

    split = benchmark_split(demo / "data", "val")
    predictor = Predictor.from_checkpoint(demo / "train" / "model_final.pth", order="both", score_thresh=0.0)
    evaluation = evaluate(predictor, split, tmp_path / "eval", workers=0, keep_most_different=2, progress=False)
    kept = evaluation.most_different
    assert kept and len(kept) <= 2
    differences = sorted(evaluation.differences.values(), reverse=True)
    assert [d for _, _, d in kept] == differences[: len(kept)]  # the most different, most first
    (picture, *_) = draw_order_comparisons(kept, split, predictor.categories, tmp_path / "overlays")
    with Image.open(picture) as img:
        width, height = img.size
    # ground truth | heuristic | SRM, each 64 px image enlarged 6x (to OVERLAY_MIN_SIDE = 384)
    assert (width, height) == (3 * 384 + 2 * 4, 384 + viz.TITLE_HEIGHT)


@pytest.mark.slow
def test_evaluate_cli_on_a_subset(demo, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli(
        "evaluate", "--checkpoint", str(demo / "train" / "model_final.pth"),
        "--data-json", str(demo / "data" / "annotations" / "panoptic_val.json"),
        "--data-png-dir", str(demo / "data" / "annotations" / "panoptic_val"),
        "--data-image-dir", str(demo / "data" / "images" / "val"),
        "--out", str(out), "--workers", "0", "--max-images", "2",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"score_order", "srm_order"}
    for order in results.values():
        assert_pq_dict(order)
    assert "SRM - score" in proc.stdout and "Things" in proc.stdout
    for order in ("score_order", "srm_order"):
        assert_valid_panoptic_output(out / order / "panoptic.json", expected_images=2)
    assert len(json.loads((out / "gt_subset.json").read_text())["annotations"]) == 2
    # The order measures, on the network's own detections: every non-crowd GT thing is in one level.
    measures = json.loads((out / "order_measures.json").read_text())
    assert measures["images"] == 2 and set(measures["pairwise_order_accuracy"]) == {"score", "srm"}
    gt = json.loads((out / "gt_subset.json").read_text())
    thing_ids = {c["id"] for c in gt["categories"] if c["isthing"]}
    things = sum(1 for a in gt["annotations"] for s in a["segments_info"]
                 if s["category_id"] in thing_ids and not s["iscrowd"])
    for order in ("score", "srm"):
        assert sum(r["tp"] + r["fn"] for r in measures["pq_th_by_occlusion"][order]) == things
    assert "pairwise order acc." in proc.stdout and "PQ_th heavy" in proc.stdout


@pytest.mark.slow
def test_evaluate_and_predict_under_torchrun_match_one_process(demo, tmp_path):
    """2 processes (gloo, CPU) shard the images and write exactly the files of 1 process."""
    checkpoint = str(demo / "train" / "model_final.pth")
    split = ["--data-json", str(demo / "data" / "annotations" / "panoptic_val.json"),
             "--data-png-dir", str(demo / "data" / "annotations" / "panoptic_val"),
             "--data-image-dir", str(demo / "data" / "images" / "val"), "--workers", "0", "--no-progress"]
    images = str(demo / "data" / "images" / "val")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "oanet.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command, args in (("evaluate", split), ("predict", [images, "--order", "both", "--no-progress"])):
        outs = {}
        for name, prefix in (("one", [sys.executable, "-m", "oanet.cli"]), ("two", launch)):
            outs[name] = tmp_path / f"{command}_{name}"
            proc = subprocess.run([*prefix, command, "--checkpoint", checkpoint, *args, "--out", str(outs[name])],
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
        # records/ is the resume journal: one file per rank and run, named by time; the images it lists count.
        listed = {name: sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.parts[-2] != "records")
                  for name, out in outs.items()}
        files = listed["one"]
        assert files == listed["two"]
        journal = {name: sorted(json.loads(line)["name"] for f in (out / "records").glob("*.jsonl")
                                for line in f.read_text().splitlines()[1:]) for name, out in outs.items()}
        assert journal["one"] and journal["one"] == journal["two"]
        assert any(f.suffix == ".png" for f in files)
        for f in files:
            if f.suffix != ".jpg":  # JPEG overlays are drawn from the same maps; PNG/JSON compared bytewise
                one, two = ((outs[n] / f).read_bytes().replace(str(outs[n]).encode(), b"OUT") for n in ("one", "two"))
                assert one == two, f  # the report names its own folder
    assert json.loads((tmp_path / "evaluate_two" / "results.json").read_text())["srm_order"]["All"]["n"] > 0


@pytest.mark.slow
def test_predict_cli_both_orders_on_a_folder(demo, tmp_path, capsys):
    # The CLI's own entry point, in this process (torch is already imported: saves a start-up).
    images = demo / "data" / "images" / "val"
    out = tmp_path / "pred"
    code = oanet_main([
        "predict", "--checkpoint", str(demo / "train" / "model_final.pth"), str(images),
        "--out", str(out), "--order", "both", "--score-thresh", "0.3",
    ])
    assert code == 0, capsys.readouterr().err[-3000:]
    n = len(list(images.iterdir()))
    for order in ("score_order", "srm_order"):
        assert_valid_panoptic_output(out / order / "panoptic.json", expected_images=n)
    overlays = sorted((out / "overlays").iterdir())
    assert [p.stem for p in overlays] == sorted(p.stem for p in images.iterdir())
    with Image.open(overlays[0]) as img:
        assert img.size[0] == 2 * 64 + 4  # heuristic | SRM


@pytest.mark.slow
def test_predict_single_order_in_process(demo, tmp_path):
    from oanet import Predictor
    from oanet.inference.predict import predict

    predictor = Predictor.from_checkpoint(demo / "train" / "model_final.pth", order="score")
    image = next((demo / "data" / "images" / "val").iterdir())
    summary = predict(predictor, [image], tmp_path / "one", progress=False)
    assert summary["images"] == 1
    assert_valid_panoptic_output(tmp_path / "one" / "panoptic.json", expected_images=1)
    with Image.open(tmp_path / "one" / "overlays" / f"{image.stem}.jpg") as img:
        assert img.size == (64, 64)


@pytest.mark.slow
def test_predict_errors_name_the_file(demo, tmp_path, capsys):
    checkpoint = str(demo / "train" / "model_final.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert oanet_main(["predict", "--checkpoint", checkpoint, str(empty), "--out", str(tmp_path / "o")]) == 2
    assert f"{empty}: folder holds no images" in capsys.readouterr().err

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "broken.jpg").write_bytes(b"\x89PNG not really")
    assert oanet_main(["predict", "--checkpoint", checkpoint, str(bad_dir), "--out", str(tmp_path / "o")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("oanet predict:")]
    assert len(errors) == 1 and f"{bad_dir / 'broken.jpg'}: not a readable image" in errors[0]

    missing = tmp_path / "missing.pth"
    image = str(next((demo / "data" / "images" / "val").iterdir()))
    assert oanet_main(["predict", "--checkpoint", str(missing), image, "--out", str(tmp_path / "o")]) == 2
    assert f"{missing}: checkpoint not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the report and the schedule, from hand-made numbers (no training)

PQ = {
    "score_order": {
        "All": {"pq": 0.40, "sq": 0.80, "rq": 0.50, "n": 6},
        "Things": {"pq": 0.30, "sq": 0.75, "rq": 0.40, "n": 4},
        "Stuff": {"pq": 0.60, "sq": 0.90, "rq": 0.6667, "n": 2},
        "per_class": {"1": {"pq": 0.3, "sq": 0.75, "rq": 0.4, "tp": 2, "fp": 1, "fn": 2}},
    },
    "srm_order": {
        "All": {"pq": 0.45, "sq": 0.81, "rq": 0.5556, "n": 6},
        "Things": {"pq": 0.375, "sq": 0.77, "rq": 0.487, "n": 4},
        "Stuff": {"pq": 0.60, "sq": 0.90, "rq": 0.6667, "n": 2},
        "per_class": {"1": {"pq": 0.375, "sq": 0.77, "rq": 0.487, "tp": 3, "fp": 1, "fn": 1}},
    },
}


def test_report_from_hand_made_numbers(tmp_path):
    from oanet.experiments.demo import plot_losses, write_report

    metrics = [{"iteration": i, "loss": 5.0 / i, "loss_srm": 1.0 / i, "time_per_iter": 0.5} for i in (1, 2, 3)]
    plot = plot_losses(metrics, tmp_path / "loss.png")
    assert plot is not None and plot.stat().st_size > 1000
    overlay = tmp_path / "overlays" / "000001.jpg"
    run = {"data_dir": "d", "train_images": 10, "val_images": 3, "preset": "synthetic_cpu.yaml", "iterations": 3,
           "train_minutes": 0.1, "eval_minutes": 0.05, "device": "cpu", "checkpoint": "c.pth", "eval_dir": "e"}
    md_path, json_path = write_report(tmp_path, PQ, run, plot, [(overlay, 0.125)])
    report = json.loads(json_path.read_text())
    assert report["score_order"] == PQ["score_order"] and report["srm_order"] == PQ["srm_order"]
    assert report["difference"]["All"]["pq"] == pytest.approx(0.05)
    assert report["difference"]["Things"]["pq"] == pytest.approx(0.075)
    md = md_path.read_text()
    assert "| All | 6 | 40.00 | 45.00 | +5.00 |" in md
    assert "**+5.00** points" in md and "(things +7.50, stuff +0.00)" in md
    assert "![000001](overlays/000001.jpg)" in md and "12.5% of pixels differ" in md
    assert plot_losses([], tmp_path / "none.png") is None


def test_loss_plot_legend_is_beside_the_curves():
    import matplotlib.pyplot as plt

    from oanet.experiments.demo import loss_figure

    terms = ("rpn_cls", "rpn_bbox", "cls", "bbox", "mask", "seg", "srm")
    metrics = [{"iteration": i, "loss": 8.0 / i, **{f"loss_{t}": 1.0 / i for t in terms}} for i in range(1, 41)]
    fig = loss_figure(metrics)
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()][0] == "total (Eq. 1)"
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())
    assert legend.get_window_extent().x1 <= fig.bbox.x1  # inside the picture
    plt.close(fig)


@pytest.mark.slow
def test_demo_with_a_time_budget_trains_the_planned_schedule(tmp_path, demo):
    """--minutes times a few iterations in a scratch folder, then trains the plan from the start."""
    proc = run_cli("demo", "--quick", "--minutes", "0.05", "--out", str(tmp_path / "d"), "--data", str(demo / "data"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads((tmp_path / "d" / "train" / "demo_schedule.json").read_text())
    assert json.loads((tmp_path / "d" / "report.json").read_text())["run"]["iterations"] == plan["max_iter"]
    assert not (tmp_path / "d" / "train_timing").exists()


def test_schedule_scaling_and_logged_training_time():
    from oanet.config import Config
    from oanet.experiments.benchmark import scale_schedule, training_seconds

    cfg = Config()
    cfg.solver.max_iter, cfg.solver.steps, cfg.solver.warmup_iters = 800, (600, 750), 100
    scaled = scale_schedule(cfg, 80)
    assert scaled.solver.max_iter == 80 and scaled.solver.steps == (60, 75)
    assert scaled.solver.warmup_iters == 10 and cfg.solver.max_iter == 800
    rows = [{"iteration": 10, "time_per_iter": 2.0}, {"iteration": 20, "time_per_iter": 1.0}, {"loss": 1.0}]
    assert training_seconds(rows) == pytest.approx(30.0)


def test_preset_is_found_and_points_at_the_benchmark(tmp_path):
    from oanet.experiments.demo import demo_config
    from oanet.presets import find_preset

    from oanet.experiments.benchmark import PRESET

    preset = find_preset(PRESET)
    assert preset.name == "synthetic_cpu.yaml" and preset.is_file()
    cfg = demo_config(tmp_path / "data", tmp_path / "out", quick=True, preset=preset)
    assert cfg.data.val.panoptic_json == str(tmp_path / "data" / "annotations" / "panoptic_val.json")
    assert cfg.output_dir == str(tmp_path / "out" / "train") and cfg.solver.max_iter == 2
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        find_preset("nope.yaml")


def test_demo_refuses_bad_folders_and_minutes_before_any_work(tmp_path):
    from oanet.experiments.demo import run_demo
    from oanet.errors import ConfigError, DataError

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="file.txt: cannot create the output folder"):
        run_demo(blocker, quick=True)
    with pytest.raises(DataError, match="file.txt: exists and is not a folder"):
        run_demo(tmp_path / "out", data_dir=blocker, quick=True)
    with pytest.raises(ConfigError, match="--minutes must be positive"):
        run_demo(tmp_path / "out2", minutes=-1, quick=True)
    assert not (tmp_path / "out2").exists()  # refused before generating the benchmark
