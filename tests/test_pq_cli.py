"""``oanet pq`` end to end in a subprocess, and the PNG reader it relies on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from oanet.data import png_io
from oanet.data.png_io import read_id_png, write_id_png
from oanet.errors import DataError
from test_pq import good_case


def oanet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oanet.cli", *args], capture_output=True, text=True, timeout=120)


def pq_args(paths) -> list[str]:
    gt_json, gt_dir, pred_json, pred_dir = map(str, paths)
    return ["pq", "--gt-json", gt_json, "--gt-dir", gt_dir, "--pred-json", pred_json, "--pred-dir", pred_dir]


def test_cli_prints_the_table_and_writes_the_results(tmp_path):
    output = tmp_path / "out" / "results.json"
    done = oanet(*pq_args(good_case(tmp_path)), "--workers", "1", "--no-progress", "--output", str(output))
    assert done.returncode == 0, done.stderr
    assert "All       | 100.00  100.00  100.00     2" in done.stdout
    results = json.loads(output.read_text())
    assert set(results) == {"All", "Things", "Stuff", "per_class"}
    assert set(results["All"]) == {"pq", "sq", "rq", "n"}
    assert set(results["per_class"]) == {"1", "2", "3"}
    assert set(results["per_class"]["1"]) == {"pq", "sq", "rq", "tp", "fp", "fn"}


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path):
    paths = good_case(tmp_path)
    write_id_png(paths[3] / "000001.png", np.zeros((2, 2), dtype=np.uint32))
    done = oanet(*pq_args(paths), "--no-progress")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oanet pq: error:"), done.stderr
    assert "prediction for image 1" in lines[0] and "differs from the ground truth" in lines[0]


@pytest.mark.parametrize("where, words", [("folder", "--output names a folder"), ("under_a_file", "a file is in the way")])
def test_cli_unwritable_output_is_one_line_before_evaluating(tmp_path, where, words):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    output = tmp_path if where == "folder" else blocker / "results.json"
    done = oanet(*pq_args(good_case(tmp_path / "case")), "--no-progress", "--output", str(output))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oanet pq: error:") and words in lines[0], done.stderr
    assert done.stdout == ""  # refused before the evaluation, not after


def test_pq_imports_no_torch():
    code = "import sys, oanet.cli, oanet.commands.pq, oanet.evaluation.pq; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("fast_decoder", [True, False])
def test_read_id_png_round_trips_with_either_decoder(tmp_path, monkeypatch, fast_decoder):
    if not fast_decoder:
        monkeypatch.setattr(png_io, "pyspng", None)
    elif png_io.pyspng is None:
        pytest.skip("pyspng not installed")
    ids = np.random.default_rng(0).integers(0, 256**3, size=(5, 7), dtype=np.uint32)
    write_id_png(tmp_path / "ids.png", ids)
    decoded = read_id_png(tmp_path / "ids.png")
    assert decoded.dtype == np.uint32 and np.array_equal(decoded, ids)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: not a readable PNG"):
        read_id_png(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        read_id_png(tmp_path / "nothing.png")


def test_write_id_png_refuses_ids_a_png_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="segment ids must be in"):
        write_id_png(tmp_path / "x.png", np.array([[256**3]], dtype=np.int64))
