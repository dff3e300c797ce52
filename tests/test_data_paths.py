"""Data paths that survive a `cd`: training stores them absolute, evaluate names the flag for a missing one,
and the first example of `oanet train --help` leads to data that exists."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from oanet.cli import main
from oanet.config import SplitConfig, load_config, resolve_data_paths

TINY = "tiny_test"


def _split(root: str, name: str) -> SplitConfig:
    return SplitConfig(panoptic_json=f"{root}/annotations/panoptic_{name}.json",
                       panoptic_dir=f"{root}/annotations/panoptic_{name}", image_dir=f"{root}/images/{name}",
                       instances_json=f"{root}/annotations/instances_{name}.json")


def test_relative_data_paths_resolve_against_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TINY)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=_split("d", "train"),
                                                            val=dataclasses.replace(_split("/abs", "val"), instances_json=None)))
    resolved = resolve_data_paths(cfg)
    assert resolved.data.train.panoptic_json == str(tmp_path / "d" / "annotations" / "panoptic_train.json")
    assert resolved.data.train.instances_json == str(tmp_path / "d" / "annotations" / "instances_train.json")
    assert resolved.data.val.image_dir == "/abs/images/val"  # absolute paths stay as they are
    assert resolved.data.val.instances_json is None and resolved.data.val.categories_json is None
    assert resolve_data_paths(cfg, base="/elsewhere").data.train.image_dir == "/elsewhere/d/images/train"


@pytest.fixture(scope="module")
def trained_from_a_relative_folder(tmp_path_factory):
    """One training iteration run in ``work/`` with the data given as ``data/...`` (relative)."""
    from oanet.data.synthetic import generate_dataset
    from oanet.train.trainer import train

    work = tmp_path_factory.mktemp("work")
    generate_dataset(work / "data", train=2, val=1, size=64, seed=1, workers=1, progress=False)
    cfg = load_config(TINY, ["solver.max_iter=1", "solver.ims_per_batch=1", "solver.ims_per_device=0"])
    cfg = dataclasses.replace(cfg, output_dir=str(work / "train"),
                              data=dataclasses.replace(cfg.data, train=_split("data", "train"), val=_split("data", "val")))
    previous, threads = Path.cwd(), torch.get_num_threads()
    try:
        import os

        os.chdir(work)
        torch.set_num_threads(1)
        summary = train(cfg)
    finally:
        os.chdir(previous)
        torch.set_num_threads(threads)
    return work, Path(summary["final_model"])


def test_training_stores_absolute_data_paths_and_evaluate_works_from_elsewhere(
        trained_from_a_relative_folder, tmp_path, monkeypatch, capsys):
    work, checkpoint = trained_from_a_relative_folder
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["config"]["data"]
    assert stored["val"]["panoptic_json"] == str(work / "data" / "annotations" / "panoptic_val.json")
    assert stored["train"]["image_dir"] == str(work / "data" / "images" / "train")
    assert load_config(work / "train" / "config.yaml").data.val.panoptic_dir == str(work / "data/annotations/panoptic_val")

    monkeypatch.chdir(tmp_path)  # another folder: the stored paths still lead to the data
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", "eval", "--workers", "0", "--no-progress"]) == 0
    assert (tmp_path / "eval" / "results.json").is_file()


def test_evaluate_prints_one_progress_line_per_stage_and_pq_as_oanet_pq(trained_from_a_relative_folder, tmp_path,
                                                                         capsys):
    """(Uses this module's trained model.) Without a terminal, progress is one line per stage at the end:
    the forward passes, then PQ of both orders together; and 2 decimals, as `oanet pq` prints."""
    _, checkpoint = trained_from_a_relative_folder
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval"), "--workers", "0"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["evaluate", "PQ (score, srm)"]
    assert lines[1].startswith("PQ (score, srm): 2/2 img (100%)") and "done in" in lines[1]
    all_row = next(line for line in captured.out.splitlines() if line.startswith("All "))
    assert len(all_row.split("|")[1].split()[0].split(".")[1]) == 2


def test_a_missing_path_from_the_checkpoint_names_the_flags(tmp_path, monkeypatch, capsys):
    """A checkpoint of before absolute paths (relative ones), evaluated from another folder."""
    from conftest import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "model_final.pth")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["config"]["data"]["val"] = dataclasses.asdict(_split("oanet-demo/data", "val"))
    torch.save(state, checkpoint)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", "eval"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "oanet evaluate: error: oanet-demo/data/annotations/panoptic_val.json: panoptic JSON of the evaluation split "
        f"not found (data.val.panoptic_json of {checkpoint}); pass --data-json ... --data-png-dir ... "
        "--data-image-dir ..., or run from the folder training ran in"
    )
    (tmp_path / "gt.json").write_text("{}")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", "eval", "--data-json", "gt.json",
                 "--data-png-dir", "nowhere"]) == 2
    assert capsys.readouterr().err.strip() == "oanet evaluate: error: nowhere: panoptic PNG folder not found (--data-png-dir)"


def test_the_reproduce_line_of_the_demo_report_works_from_any_folder(tmp_path, monkeypatch):
    from oanet.experiments.demo import reproduce_command

    monkeypatch.chdir(tmp_path)
    line = reproduce_command(Path("oanet-demo/train/model_final.pth"), Path("oanet demo/eval"))
    assert line == (f"oanet evaluate --checkpoint {tmp_path}/oanet-demo/train/model_final.pth "
                    f"--out '{tmp_path}/oanet demo/eval'")


def _help_examples(capsys) -> list[str]:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    return [line.split("#")[0].strip() for line in text.split("examples:\n", 1)[1].splitlines() if line.strip()]


def test_the_first_train_example_works_on_a_fresh_clone(tmp_path, monkeypatch, capsys):
    """In an empty folder: the training example alone says how to make its data; after the synth line
    (smaller here, for time) the same command trains."""
    examples = _help_examples(capsys)
    assert examples[0] == "oanet synth --out datasets/synthetic"
    assert examples[1].startswith("oanet train --config synthetic_cpu ")
    train_args = examples[1].split()[1:]
    monkeypatch.chdir(tmp_path)
    assert main(train_args) == 2
    assert capsys.readouterr().err.strip() == (
        "oanet train: error: datasets/synthetic/annotations/panoptic_train.json: training JSON "
        "(data.train.panoptic_json) not found; generate the synthetic benchmark with "
        "`oanet synth --out datasets/synthetic` (or, after `oanet demo`, link its identical oanet-demo/data to "
        "datasets/synthetic)"
    )
    assert not (tmp_path / "runs").exists()  # refused before any output

    assert main(examples[0].split()[1:] + ["--train", "2", "--val", "1", "--size", "64", "--quiet"]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(train_args + ["solver.max_iter=1", "solver.ims_per_batch=1", "data.num_workers=0",
                                  "device=cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "runs" / "demo" / "model_final.pth").is_file()


def test_a_missing_training_json_of_another_layout_says_where_to_point(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "coco_r50", "--output", "r50"]) == 2
    assert capsys.readouterr().err.strip() == (
        "oanet train: error: datasets/coco/annotations/panoptic_train2017.json: training JSON "
        "(data.train.panoptic_json) not found; download the dataset there (docs/training.md) or point "
        "data.train.* at yours (KEY=VALUE overrides)"
    )


def test_a_missing_path_from_an_onnx_models_metadata_names_the_flags(tmp_path, monkeypatch):
    """--onnx takes data.val from the metadata's config: the same check, naming the file."""
    import argparse
    import types

    from oanet.commands.evaluate import split_from_args
    from oanet.config import Config

    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val=_split("runs/data", "val")))
    args = argparse.Namespace(checkpoint=None, onnx="m.onnx", data_json=None, data_png_dir=None, data_image_dir=None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^runs/data/annotations/panoptic_val\.json: panoptic JSON of the "
                       r"evaluation split not found \(data\.val\.panoptic_json of m\.onnx\); pass --data-json \.\.\. "):
        split_from_args(args, types.SimpleNamespace(cfg=cfg))
    for path in ("runs/data/annotations/panoptic_val", "runs/data/images/val"):
        (tmp_path / path).mkdir(parents=True)
    (tmp_path / "runs/data/annotations/panoptic_val.json").write_text("{}")
    assert split_from_args(args, types.SimpleNamespace(cfg=cfg)).image_dir == "runs/data/images/val"
