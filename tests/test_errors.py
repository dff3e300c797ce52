"""The error layer: every bad path or file is one line naming it, found before the work starts."""

from __future__ import annotations

import json
import os
import stat

import pytest

from oanet import cli
from oanet.config import Config, load_config, to_dict
from oanet.errors import ConfigError, DataError, check_output_file, make_dir


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------------------------
# output paths, checked before the work


def test_export_onto_an_existing_folder(tmp_path, capsys):
    pytest.importorskip("onnx")
    (tmp_path / "model.onnx").mkdir()
    rc, err = _cli(capsys, "export", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "model.onnx"))
    assert rc == 2
    # Refused before the checkpoint is even looked at (it does not exist).
    assert f"{tmp_path / 'model.onnx'}: is a folder" in _one_line(err)


def test_export_under_a_regular_file(tmp_path, capsys):
    pytest.importorskip("onnx")
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub" / "model.onnx"
    rc, err = _cli(capsys, "export", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(out))
    assert rc == 2
    assert f"{tmp_path / 'file' / 'sub'}: cannot create the folder of the ONNX file (--out) (a file is in the way)" \
        in _one_line(err)


@pytest.mark.parametrize("nested", [False, True], ids=["read-only folder", "missing folder under a read-only one"])
def test_export_into_a_read_only_folder(tmp_path, capsys, monkeypatch, nested):
    pytest.importorskip("onnx")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:
        # root writes through permission bits: make os.access and mkdir see the folder as a read-only mount would.
        real_access, real_mkdir = os.access, os.mkdir
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).startswith(str(readonly)) and mode & os.W_OK
                            else real_access(p, mode, **kw))

        def mkdir(p, *a, **kw):
            if str(p).startswith(str(readonly) + os.sep):
                raise PermissionError(13, "Permission denied", str(p))
            return real_mkdir(p, *a, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
    out = readonly / "sub" / "m.onnx" if nested else readonly / "m.onnx"
    try:
        rc, err = _cli(capsys, "export", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(out))
    finally:
        readonly.chmod(stat.S_IRWXU)
    assert rc == 2
    line = _one_line(err)
    if nested:
        assert f"{readonly / 'sub'}: cannot create the folder of the ONNX file (--out) (Permission denied)" in line
    else:
        assert f"{readonly}: the folder of the ONNX file (--out) is not writable" in line


def test_an_os_error_during_the_work_is_one_line_naming_the_path(monkeypatch, capsys):
    from oanet.commands import pq

    def fail(args):
        raise PermissionError(13, "Permission denied", "/data/out/results.json")

    monkeypatch.setattr(pq, "run", fail)
    rc, err = _cli(capsys, "pq", "--gt-json", "a", "--gt-dir", "b", "--pred-json", "c", "--pred-dir", "d")
    assert rc == 2
    assert _one_line(err) == "oanet pq: error: /data/out/results.json: Permission denied"


@pytest.mark.parametrize("command", ["predict", "evaluate", "demo", "train"])
def test_every_command_checks_its_output_folder_first(tmp_path, capsys, command):
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / "file" / "out")
    argv = {
        "predict": ["predict", str(tmp_path / "file"), "--checkpoint", "missing.pth", "--out", out],
        "evaluate": ["evaluate", "--checkpoint", "missing.pth", "--out", out],
        "demo": ["demo", "--out", out],
        "train": ["train", "--config", "tiny_test", "--output", out],
    }[command]
    rc, err = _cli(capsys, *argv)
    assert rc == 2
    assert f"{out}: cannot create the" in _one_line(err) and "a file is in the way" in err


def test_make_dir_and_check_output_file(tmp_path):
    assert make_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="a file is in the way"):
        make_dir(tmp_path / "f" / "x")
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path / "a")
    assert check_output_file(tmp_path / "new" / "x.json") == tmp_path / "new" / "x.json"


# --------------------------------------------------------------------------------------------
# files oanet reads back


def test_a_truncated_ablation_plan_names_the_file(tmp_path, capsys):
    (tmp_path / "plan.json").write_text('{"preset": "synthetic_cpu_ab')
    rc, err = _cli(capsys, "ablate", "--out", str(tmp_path), "--quick")
    assert rc == 2
    assert f"{tmp_path / 'plan.json'}: not valid JSON" in _one_line(err)


def test_read_json_names_the_file_and_its_role(tmp_path):
    from oanet.fileio import read_json

    path = tmp_path / "x.json"
    path.write_text("[1, 2")
    with pytest.raises(DataError, match=f"{path}: malformed run result JSON"):
        read_json(path, "run result")
    with pytest.raises(FileNotFoundError, match="y.json: JSON file not found"):
        read_json(tmp_path / "y.json")


def test_onnx_metadata_whose_categories_disagree_with_the_graph(tmp_path):
    from oanet.data.labels import LabelSpace, parse_categories
    from oanet.runtime.metadata import METADATA_KEY, build_metadata, read_metadata

    cats = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 1}, {"id": 3, "name": "s", "isthing": 0}]
    cfg = load_config(None, ["model.num_thing_classes=3", "model.num_stuff_classes=1"])
    meta = build_metadata(label_space=LabelSpace(parse_categories(cats, "cats")), config=to_dict(cfg), opset=17,
                          oanet_version="test")
    with pytest.raises(ConfigError, match="m.onnx: the metadata declares 2 thing and 1 stuff categories, the graph was "
                                          "built for 3 and 1"):
        read_metadata({METADATA_KEY: json.dumps(meta)}, "m.onnx")
    cfg2 = load_config(None, ["model.num_thing_classes=2", "model.num_stuff_classes=1"])
    ok = build_metadata(label_space=LabelSpace(parse_categories(cats, "cats")), config=to_dict(cfg2), opset=17,
                        oanet_version="test")
    assert read_metadata({METADATA_KEY: json.dumps(ok)}, "m.onnx").label_space.num_things == 2


# --------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoints_get_the_umask_mode(tmp_path):
    from oanet.model.checkpoint import atomic_save

    old = os.umask(0o022)
    try:
        atomic_save({"model": {}, "config": {}}, tmp_path / "c.pth")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.pth").stat().st_mode) == 0o644


def test_a_folder_or_an_onnx_file_given_as_checkpoint(tmp_path):
    from oanet.model.checkpoint import load_checkpoint_file

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model_final.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"run: is a folder, not a checkpoint; pass one of its \.pth files: model_final\.pth"):
        load_checkpoint_file(tmp_path / "run")
    (tmp_path / "m.onnx").write_bytes(b"\x08\x08\x12\x04oanet")
    with pytest.raises(ConfigError, match="m.onnx: this is an ONNX file .*use --onnx"):
        load_checkpoint_file(tmp_path / "m.onnx")
    (tmp_path / "renamed.pth").write_bytes(b"\x08\x08\x12\x04oanet")  # an ONNX file by its content
    with pytest.raises(ConfigError, match="this is an ONNX file"):
        load_checkpoint_file(tmp_path / "renamed.pth")


# --------------------------------------------------------------------------------------------
# configs


@pytest.mark.parametrize("override,message", [
    ("model.min_size=[abc]", r"override 'model.min_size=\[abc\]' \(command line\): model.min_size\[0\]: expected an integer"),
    ("solver.steps=[a,3]", r"override 'solver.steps=\[a,3\]' \(command line\): solver.steps\[0\]: expected an integer"),
    ("model.pixel_mean=[0.1,x,0.3]", r"model.pixel_mean\[1\]: expected a number"),
    ("solver.base_lr=abc", r"override 'solver.base_lr=abc' \(command line\): solver.base_lr: expected a number"),
])
def test_bad_override_elements_are_config_errors_naming_the_override(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny_test", [override])


def test_a_bad_value_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  steps: [1, b]\n")
    with pytest.raises(ConfigError, match=rf"{path}.solver.steps\[1\]: expected an integer"):
        load_config(path)


def test_tuple_fields_are_typed_and_kept_as_tuples():
    cfg = load_config(None, ["model.min_size=[64, 96]", "solver.steps=[]", "model.freeze=[backbone]"])
    assert cfg.model.min_size == (64, 96) and cfg.solver.steps == () and cfg.model.freeze == ("backbone",)
    assert Config().model.rpn.aspect_ratios == (0.5, 1.0, 2.0)


def test_config_cli_error_is_one_line(capsys):
    rc, err = _cli(capsys, "train", "--config", "tiny_test", "model.min_size=[abc]")
    assert rc == 2 and "model.min_size[0]: expected an integer, got 'abc'" in _one_line(err)


def test_presets_by_name():
    assert load_config("coco_r50").model.backbone.depth == 50
    assert load_config("synthetic_cpu.yaml") == load_config("synthetic_cpu")
    assert load_config("ablations/srm_1x1").model.srm.kernel == "1x1"
    with pytest.raises(FileNotFoundError, match="no preset has that name .*coco_r50"):
        load_config("coco_r5")
