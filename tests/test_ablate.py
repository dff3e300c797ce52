"""`oanet ablate`: SRMs trained alone vs joint training, the table layout, the plan, resuming, --quick."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oanet.config import load_config, to_dict
from oanet.data.labels import IGNORE
from oanet.errors import ConfigError
from oanet.experiments import tables


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """The demo's --quick benchmark: 4 train and 3 val images of 64 px."""
    from oanet.experiments.benchmark import ensure_benchmark

    data = tmp_path_factory.mktemp("bench") / "data"
    ensure_benchmark(data, quick=True, log=lambda m: None)
    return data


def quick_config(bench: Path, out: Path, **solver):
    from oanet.experiments.demo import demo_config

    cfg = demo_config(bench, out, quick=True)
    solver = {"max_iter": 3, "ims_per_device": 1, "checkpoint_period": 1000, **solver}
    # Two input sizes: multi-scale training draws from the torch RNG, which the SRM trainer must replay.
    model = dataclasses.replace(cfg.model, min_size=(56, 64), fusion=dataclasses.replace(cfg.model.fusion, score_thresh=0.0))
    return dataclasses.replace(cfg, model=model, solver=dataclasses.replace(cfg.solver, **solver))


# --------------------------------------------------------------------------------------------
# SRMs trained alone


def srm_weights(state: dict) -> dict:
    return {k[len("srm."):]: v for k, v in state.items() if k.startswith("srm.")}


def test_srm_trained_alone_is_the_jointly_trained_srm(bench, tmp_path):
    from oanet.train.srm_training import SRMVariant, initial_srm, load_srm, train_srms
    from oanet.train.trainer import train

    cfg = quick_config(bench, tmp_path)  # 3 iterations, batch 2 in chunks of 1, flips, two sizes
    summary = train(cfg)
    joint = srm_weights(torch.load(summary["final_model"], weights_only=True)["model"])
    train_srms(cfg, [SRMVariant("gcn7")], tmp_path / "srms", progress=False, log=lambda m: None)
    alone = load_srm(tmp_path / "srms" / "srm_gcn7.pth").state_dict()
    assert alone.keys() == joint.keys()
    assert all(torch.equal(alone[k], joint[k]) for k in alone)  # bit-identical on the CPU
    # Not vacuous: the SRM did train, and other batches (another seed) give other weights.
    init = initial_srm(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_thing_classes=8,
                                                                          num_stuff_classes=5)), "gcn7").state_dict()
    assert not all(torch.equal(init[k], joint[k]) for k in init)
    other = dataclasses.replace(cfg, seed=1)
    train_srms(other, [SRMVariant("other")], tmp_path / "srms", progress=False, log=lambda m: None)
    moved = load_srm(tmp_path / "srms" / "srm_other.pth").state_dict()
    assert not all(torch.equal(moved[k], joint[k]) for k in moved)


def test_the_srm_does_not_change_the_rest_of_the_network(bench, tmp_path):
    """Why every ablation network trains with the SRM on: without it, every other weight would be the same,
    so the score order of a network with the SRM is the paper's SRM-less baseline."""
    from oanet.train.trainer import train

    cfg = quick_config(bench, tmp_path / "with", max_iter=2)
    without = dataclasses.replace(cfg, output_dir=str(tmp_path / "without"), model=dataclasses.replace(
        cfg.model, srm=dataclasses.replace(cfg.model.srm, enabled=False)))
    a = torch.load(train(cfg)["final_model"], weights_only=True)["model"]
    b = torch.load(train(without)["final_model"], weights_only=True)["model"]
    assert set(a) - set(b) == {k for k in a if k.startswith("srm.")} and set(b) <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_srm_on_predicted_masks_trains_on_the_network_detections(bench, tmp_path):
    from oanet.train.srm_training import SRMVariant, initial_srm, load_srm, train_srms
    from oanet.train.trainer import train

    cfg = quick_config(bench, tmp_path, max_iter=2)
    network = train(cfg)["final_model"]
    with pytest.raises(ConfigError, match="give the network"):
        train_srms(cfg, [SRMVariant("p", "gcn7", "predicted")], tmp_path / "srms", progress=False, log=lambda m: None)
    summary = train_srms(cfg, [SRMVariant("p", "3x3", "predicted")], tmp_path / "srms", network_checkpoint=network,
                         progress=False, log=lambda m: None)
    assert summary["p"]["loss"] > 0  # detections (threshold 0) overlap: there are targets to learn
    trained = load_srm(tmp_path / "srms" / "srm_p.pth").state_dict()
    init = initial_srm(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_thing_classes=8,
                                                                          num_stuff_classes=5)), "3x3").state_dict()
    assert not all(torch.equal(init[k], trained[k]) for k in init)


def test_visible_map_and_overlap_target_by_hand():
    from oanet.train.srm_training import overlap_target, visible_thing_map

    index = np.array([[0, 1, 2], [-1, 2, 3]])  # segment positions, -1 = void
    visible = visible_thing_map(index, np.array([-1, 4, 2, 6]), np.array([0, 0, 0, 1]))  # segment 3 is a crowd
    assert visible.tolist() == [[IGNORE, 4, 2], [IGNORE, 2, IGNORE]]
    masks = torch.tensor([[[1, 1, 1], [0, 1, 0]], [[0, 1, 1], [0, 1, 1]]], dtype=torch.uint8)
    target = overlap_target(masks, torch.from_numpy(visible))
    assert target.tolist() == [[IGNORE, 4, 2], [IGNORE, 2, IGNORE]]
    assert overlap_target(masks[:1], torch.from_numpy(visible)).eq(IGNORE).all()


def test_visible_map_is_augmented_with_its_sample(bench):
    from oanet.train.srm_training import VisibleThingDataset
    from oanet.train.trainer import build_train_dataset

    cfg = quick_config(bench, bench.parent / "unused")
    dataset = VisibleThingDataset(build_train_dataset(cfg))
    flipped = 0
    for index in range(len(dataset)):
        for epoch in range(3):
            image, target = dataset[(index, epoch)]
            unflipped, _ = dataset.dataset.load(index)
            flipped += int(not torch.equal(image, unflipped))
            visible = target["visible"]
            known = visible != IGNORE
            assert known.any()
            # Where a thing segment is visible, the stuff-branch target ("all" classes) names that thing.
            assert torch.equal(target["sem_seg"][known], visible[known])
    assert flipped > 0


# --------------------------------------------------------------------------------------------
# the tables


def pq(score, srm, oracle, stuff=0.3):
    return {f"{o}_order": {"All": {"pq": (v + stuff) / 2}, "Things": {"pq": v}, "Stuff": {"pq": stuff}}
            for o, v in (("score", score), ("srm", srm), ("oracle", oracle))}


def test_rows_give_mean_and_half_range_over_seeds():
    row = tables.Row("w/ SRM", "base", order="srm", paper=(39.0, 48.3, 24.9))
    summary = tables.summarize_row(row, {0: {"results": pq(0.5, 0.6, 0.7)}, 1: {"results": pq(0.5, 0.64, 0.7)}})
    assert summary["mean"]["pq_th"] == pytest.approx(62.0) and summary["spread"]["pq_th"] == pytest.approx(2.0)
    assert summary["mean"]["pq_st"] == pytest.approx(30.0) and summary["spread"]["pq_st"] == pytest.approx(0.0)
    assert summary["mean"]["oracle_share"] == pytest.approx(0.6)  # (50% + 70%) / 2
    table = tables.Table(9, "test", "method", (row, tables.Row("oracle", "base", order="oracle",
                                                                paper_note="not in the paper")), oracle_share=True)
    text = tables.format_table(table, [summary, tables.summarize_row(table.rows[1], {})])
    lines = text.splitlines()
    assert lines[2] == ("| method | PQ | PQ_th | PQ_st | of oracle gain (PQ_th) | "
                        "paper, COCO val (R-50): PQ / PQ_th / PQ_st |")
    assert lines[4] == "| w/ SRM | 46.0 ± 1.0 | 62.0 ± 2.0 | 30.0 ± 0.0 | 60 ± 10 % | 39.0 / 48.3 / 24.9 |"
    assert lines[5] == "| oracle | — | — | — |  | not in the paper |"


def test_one_seed_diverged_and_undefined_share():
    row = tables.Row("1.0", "lambda_1.0", paper_note="did not converge")
    diverged = tables.summarize_row(row, {0: {"diverged": "loss is not finite"}})
    one = tables.summarize_row(tables.Row("x", "base", order="srm"), {0: {"results": pq(0.5, 0.6, 0.5)}})
    table = tables.Table(9, "t", "λ", (row, tables.Row("x", "base", order="srm")), oracle_share=True)
    lines = tables.format_table(table, [diverged, one]).splitlines()
    assert lines[4] == "| 1.0 | diverged |  |  |  | did not converge |"
    assert lines[5] == "| x | 45.0 | 60.0 | 30.0 |  | — |"  # one seed: no spread; the oracle adds nothing


def test_parse_tables_and_plan():
    from oanet.experiments.ablate import parse_tables, plan_steps

    assert parse_tables("5, 3,3") == [3, 5]
    for bad in ("", "6", "1,x"):
        with pytest.raises(ConfigError, match="--tables"):
            parse_tables(bad)
    steps = plan_steps([5], seeds=2)
    assert [(s.kind, s.seed, s.network, s.srm) for s in steps[:5]] == [
        ("train", 0, "base", None), ("srms", 0, "base", None), ("eval_srm", 0, "base", "1x1"),
        ("eval_srm", 0, "base", "3x3"), ("eval_srm", 0, "base", "gcn7")]
    assert len(steps) == 10 and steps[5].seed == 1
    assert [(s.kind, s.network, s.srm) for s in plan_steps([3], 1)] == [
        ("train", "base", None), ("srms", "base", None), ("eval_srm", "base", "gcn7_predicted"),
        ("train", "pano_instance_gt", None)]
    assert [s.network for s in plan_steps([4], 1)] == ["base", "sharing_none", "sharing_backbone"]


def test_each_network_changes_what_its_coco_preset_changes():
    """The CPU rows are the shipped COCO presets' rows: the same keys changed, to the same values."""
    from oanet.experiments.ablate import NETWORKS, srm_variants
    from oanet.presets import find_preset

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    def changes(preset: str, reference: str) -> dict:
        a = flat(to_dict(load_config(find_preset(f"ablations/{preset}"))))
        b = flat(to_dict(load_config(find_preset(f"ablations/{reference}"))))
        # The SRM takes no part in the networks' training (it is on in every CPU network).
        return {k: v for k, v in a.items() if v != b[k] and k != "output_dir" and not k.startswith("model.srm.")}

    for network in NETWORKS:
        if network.coco_preset is None:
            continue
        wanted = {}
        for override in network.overrides:
            key, value = override.split("=")
            wanted[key] = type(flat(to_dict(load_config()))[key])(value)
        assert changes(network.coco_preset, "baseline_r50.yaml") == wanted, network.name
    kernels = {v.kernel for v in srm_variants().values()}
    for kernel in kernels:
        assert load_config(find_preset(f"ablations/srm_{kernel}.yaml")).model.srm.kernel == kernel


def test_a_changed_time_budget_is_refused(tmp_path):
    from oanet.experiments.ablate import load_or_make_plan

    (tmp_path / "plan.json").write_text(json.dumps({"quick": False, "minutes_per_run": 2.0, "max_iter": 120}))
    plan = load_or_make_plan(tmp_path, Path("unused"), Path("unused"), None, False, print)
    assert plan["max_iter"] == 120
    with pytest.raises(ConfigError, match="--minutes-per-run 2.0"):
        load_or_make_plan(tmp_path, Path("unused"), Path("unused"), 3.0, False, print)
    with pytest.raises(ConfigError, match="another --out"):
        load_or_make_plan(tmp_path, Path("unused"), Path("unused"), None, True, print)


def test_a_continued_ablation_keeps_its_benchmark(tmp_path):
    from oanet.experiments.ablate import planned_data_dir

    assert planned_data_dir(tmp_path, None) == tmp_path / "data"
    assert planned_data_dir(tmp_path, "elsewhere") == Path("elsewhere")
    (tmp_path / "plan.json").write_text(json.dumps({"data_dir": str(tmp_path / "bench")}))
    assert planned_data_dir(tmp_path, None) == tmp_path / "bench"
    assert planned_data_dir(tmp_path, tmp_path / "bench") == tmp_path / "bench"
    with pytest.raises(ConfigError, match="runs on the benchmark in"):
        planned_data_dir(tmp_path, tmp_path / "other")


# --------------------------------------------------------------------------------------------
# end to end


@pytest.fixture(scope="module")
def quick_ablation(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablate")
    # One thread: 15 tiny steps gain nothing from a second one and lose a lot when the cores are busy.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "oanet.cli", "ablate", "--quick", "--out", str(out)], cwd=out,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_quick_ablation_fills_every_table(quick_ablation):
    md = (quick_ablation / "ablations.md").read_text()
    data = json.loads((quick_ablation / "ablations.json").read_text())
    assert [t["table"] for t in data["tables"]] == [1, 2, 3, 4, 5]
    for table in data["tables"]:
        for row in table["rows"]:
            assert list(row["seeds"]) == ["0"] or row["diverged_seeds"], (table["table"], row["label"])
    assert data["srm_alone_vs_joint"]["0"]["identical"] is True
    for number in range(1, 6):
        assert f"## Table {number}:" in md
    assert "paper, COCO val (R-50)" in md and "oracle order (true depth)" in md and "--quick run" in md
    result = json.loads((quick_ablation / "runs" / "base" / "seed0" / "result.json").read_text())
    assert set(result["results"]) == {"score_order", "srm_order", "oracle_order"}
    # Finished runs keep the model, not the training state.
    assert (quick_ablation / "runs" / "base" / "seed0" / "train" / "model_final.pth").is_file()
    assert not (quick_ablation / "runs" / "base" / "seed0" / "train" / "last.pth").exists()


@pytest.mark.slow
def test_a_finished_ablation_is_not_redone(quick_ablation, monkeypatch):
    import oanet.train.srm_training
    import oanet.train.trainer
    from oanet.experiments.ablate import run_ablation

    def refuse(*args, **kwargs):
        raise AssertionError("a finished step was run again")

    monkeypatch.setattr(oanet.train.trainer, "train", refuse)
    monkeypatch.setattr(oanet.train.srm_training, "train_srms", refuse)
    before = {p: p.stat().st_mtime_ns for p in quick_ablation.glob("runs/*/seed*/result*.json")}
    outcome = run_ablation(quick_ablation, quick=True, log=lambda m: None)
    assert outcome["skipped"] == outcome["steps"] == 15
    # Fewer tables: those steps only, all done.
    assert run_ablation(quick_ablation, tables=[5], quick=True, log=lambda m: None)["steps"] == 5
    assert json.loads((quick_ablation / "plan.json").read_text())["tables"] == [5]
    # Without --tables, a continued ablation keeps the folder's last choice.
    assert run_ablation(quick_ablation, quick=True, log=lambda m: None)["steps"] == 5
    assert {p: p.stat().st_mtime_ns for p in quick_ablation.glob("runs/*/seed*/result*.json")} == before


@pytest.mark.slow
def test_a_killed_training_continues_from_its_checkpoint(tmp_path):
    from oanet.experiments.ablate import NETWORK_BY_NAME, network_config, run_ablation
    from oanet.experiments.benchmark import ensure_benchmark
    from oanet.presets import find_preset
    from oanet.train.trainer import train

    data = tmp_path / "data"
    ensure_benchmark(data, quick=True, log=lambda m: None)
    run = tmp_path / "runs" / "stuff_classes_stuff" / "seed0"
    # What a run killed after its first checkpoint leaves: last.pth at iteration 1, no result.
    partial = network_config(find_preset("synthetic_cpu_ablation.yaml"), NETWORK_BY_NAME["stuff_classes_stuff"], 0,
                             data, run, quick=True, max_iter=1)
    train(partial)
    run_ablation(tmp_path, tables=[2], quick=True, log=lambda m: None)
    record = json.loads((run / "result.json").read_text())
    assert record["resumed_from"] == 1 and record["iterations"] == 2
    assert json.loads((tmp_path / "runs" / "base" / "seed0" / "result.json").read_text())["resumed_from"] == 0
