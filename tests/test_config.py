"""Config loading, `_base_` inheritance, overrides and the shipped presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from oanet.config import Config, load_config, save_config, to_dict
from oanet.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(CONFIGS.rglob("*.yaml"))


def test_defaults_are_the_papers_recipe():
    cfg = Config()
    s = cfg.solver
    assert (s.base_lr, s.momentum, s.weight_decay) == (0.02, 0.9, 1e-4)
    assert (s.warmup_iters, s.base_lr * s.warmup_factor) == (2000, pytest.approx(0.002))
    assert (s.steps, s.max_iter, s.ims_per_batch) == ((60000, 80000), 100000, 16)
    assert cfg.model.stuff_head.loss_weight == 0.25


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_preset_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_paper_presets():
    r50 = load_config(CONFIGS / "coco_r50.yaml")
    assert r50.model.backbone.depth == 50 and r50.model.backbone.weights
    assert r50.model.min_size == (800,) and r50.model.max_size == 1333
    assert r50.solver.ims_per_batch == 16 and r50.solver.max_iter == 100000
    assert r50.data.train.panoptic_json.startswith("datasets/coco/")
    r101 = load_config(CONFIGS / "coco_r101.yaml")
    assert r101.model.backbone.depth == 101
    assert to_dict(r101.solver) == to_dict(r50.solver)


def test_ablation_presets_change_one_thing():
    base = to_dict(load_config(CONFIGS / "ablations" / "baseline_r50.yaml"))
    assert base["model"]["srm"]["enabled"] is False
    for lam in ("0.2", "0.25", "0.33", "0.5", "0.75"):
        cfg = load_config(CONFIGS / "ablations" / f"lambda_{lam}.yaml")
        assert cfg.model.stuff_head.loss_weight == float(lam)
    assert load_config(CONFIGS / "ablations" / "stuff_classes_stuff.yaml").model.stuff_head.classes == "stuff"
    for mode in ("none", "backbone", "fpn"):
        assert load_config(CONFIGS / "ablations" / f"sharing_{mode}.yaml").model.sharing == mode
    for kernel in ("1x1", "3x3", "gcn7"):
        cfg = load_config(CONFIGS / "ablations" / f"srm_{kernel}.yaml")
        assert cfg.model.srm.enabled and cfg.model.srm.kernel == kernel
    pano = load_config(CONFIGS / "ablations" / "pano_instance_gt.yaml")
    assert pano.data.instance_source == "panoptic"
    # Apart from output_dir, a lambda preset differs from the baseline in exactly one key.
    lam = to_dict(load_config(CONFIGS / "ablations" / "lambda_0.5.yaml"))
    lam["output_dir"] = base["output_dir"]
    assert lam["model"]["stuff_head"].pop("loss_weight") == 0.5
    base["model"]["stuff_head"].pop("loss_weight")
    assert lam == base


def test_overrides_parse_yaml_values():
    cfg = load_config(
        CONFIGS / "tiny_test.yaml",
        ["solver.max_iter=7", "solver.steps=[3,5]", "model.backbone.weights=null", "solver.precision=bf16", "seed=3"],
    )
    assert cfg.solver.max_iter == 7 and cfg.solver.steps == (3, 5)
    assert cfg.model.backbone.weights is None and cfg.solver.precision == "bf16" and cfg.seed == 3


def test_exponent_floats_without_a_dot():
    # PyYAML reads "1e-4" as a string (YAML 1.1); the config accepts it as the number users mean.
    cfg = load_config(None, ["solver.weight_decay=1e-4", "solver.base_lr=2E-2"])
    assert cfg.solver.weight_decay == 1e-4 and cfg.solver.base_lr == 0.02


@pytest.mark.parametrize(
    "override, message",
    [
        ("solver.max_iters=5", "unknown key"),
        ("solver.max_iter=abc", "expected an integer"),
        ("model.sharing=everything", "not one of"),
        ("solver", "key.path=value"),
        ("solver.steps=[1,", r"override 'solver.steps=\[1,': the value is not valid YAML \(.* at line 1, column 4\)"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "tiny_test.yaml", [override])


def test_bad_yaml_and_non_mapping_sections_are_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML \(.* at line 2, column 1\)") as info:
        load_config(path)
    assert "\n" not in str(info.value)
    from oanet.config import from_dict

    with pytest.raises(ConfigError, match="ckpt: config: expected a mapping, got 'hello'"):
        from_dict(Config, "hello", where="ckpt: config")


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("solver:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key.*lr"):
        load_config(path)


def test_missing_base_and_roundtrip(tmp_path):
    path = tmp_path / "child.yaml"
    path.write_text("_base_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(path)
    cfg = load_config(CONFIGS / "synthetic_cpu.yaml")
    save_config(cfg, tmp_path / "saved.yaml")
    assert to_dict(load_config(tmp_path / "saved.yaml")) == to_dict(cfg)
