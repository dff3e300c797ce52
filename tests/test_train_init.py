"""``oanet train`` with ``model.init`` and ``model.freeze``: the init is applied once, on a fresh start only,
reported beside the checkpoints, and frozen modules do not move. Tiny model, synthetic images, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from oanet.config import load_config, to_dict
from oanet.model.checkpoint import check_model_config, load_model_from_checkpoint
from oanet.train.trainer import train
from oanet.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_test.yaml"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from oanet.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, train=4, val=1, size=96, seed=3, workers=1, progress=False)
    return root


def _cfg(root: Path, output: Path, *overrides: str):
    return load_config(TINY, [
        f"data.train.panoptic_json={root}/annotations/panoptic_train.json",
        f"data.train.panoptic_dir={root}/annotations/panoptic_train",
        f"data.train.image_dir={root}/images/train",
        f"data.train.instances_json={root}/annotations/instances_train.json",
        f"output_dir={output}", *overrides,
    ])


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_init_once_then_frozen_instance_branch_and_resume_without_init(synthetic, tmp_path, capsys):
    source_run = tmp_path / "source"
    train(_cfg(synthetic, source_run, "solver.max_iter=1"))
    source = _weights(source_run / "model_final.pth")

    out = tmp_path / "finetune"
    frozen = ["backbone", "rpn", "roi_heads"]
    cfg = _cfg(synthetic, out, f"model.init={source_run / 'model_final.pth'}", f"model.freeze={frozen}",
               "solver.max_iter=2")
    train(cfg)
    report = json.loads((out / "init_report.json").read_text())
    assert report["counts"]["loaded"] + report["counts"]["remapped"] == len(source)
    assert report["counts"]["reinitialized"] == 0 and report["counts"]["unused"] == 0
    assert "init from " in capsys.readouterr().err  # the report is printed (stderr; stdout stays JSON)

    after = _weights(out / "last.pth")
    for name, value in after.items():
        if name.startswith(tuple(frozen)):
            assert torch.equal(value, source[name]), name  # loaded, then never trained
    moved = [n for n in after if n.startswith(("stuff_head.", "srm.")) and not torch.equal(after[n], source[n])]
    assert moved, "the stuff head and SRM should have trained"

    # Resuming applies no init (the checkpoint has every weight): the source may even be gone.
    (out / "init_report.json").unlink()
    (source_run / "model_final.pth").unlink()
    summary = train(_cfg(synthetic, out, f"model.init={source_run / 'model_final.pth'}", f"model.freeze={frozen}",
                         "solver.max_iter=3"), resume=True)
    assert summary["iteration"] == 3 and not (out / "init_report.json").exists()
    resumed = _weights(out / "last.pth")
    assert all(torch.equal(resumed[n], source[n]) for n in resumed if n.startswith(tuple(frozen)))
    # Inference never reads model.init either.
    model, loaded_cfg, _ = load_model_from_checkpoint(out / "model_final.pth")
    assert loaded_cfg.model.init == str(source_run / "model_final.pth")


def test_checkpoints_of_older_versions_resume_with_new_config_fields_at_their_defaults(synthetic, tmp_path):
    cfg = _cfg(synthetic, tmp_path)
    new_fields = ("init", "freeze", "input_format", "input_scale")
    stored = {"model": {k: v for k, v in to_dict(cfg)["model"].items() if k not in new_fields}}
    check_model_config(stored, cfg, "old/last.pth")  # absent keys = defaults: no difference
    with pytest.raises(ConfigError, match="model.input_format: 'RGB' != 'BGR'"):
        check_model_config(stored, _cfg(synthetic, tmp_path, "model.input_format=BGR"), "old/last.pth")
