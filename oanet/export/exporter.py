"""Export a trained OANet to one ONNX file that carries its own metadata (docs/deploy.md).

torch >= 2.9 defaults to the dynamo exporter; torchvision's ``roi_align`` and ``nms`` have ONNX
symbolics only for the TorchScript tracer, so this uses ``dynamo=False``. ``grid_sample`` (the SRM's
paste, the stuff branch's resampling) needs opset >= 16; the tracer goes up to opset 20.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from oanet.config import Config, to_dict
from oanet.errors import ConfigError
from oanet.export.graph import PanopticGraph, faster_level_merge
from oanet.fileio import atomic_write_bytes
from oanet.runtime.metadata import (
    DEFAULT_OPSET,
    INPUTS,
    METADATA_KEY,
    MIN_OPSET,
    OUTPUTS,
    build_metadata,
    require,
)

FROZEN_INPUT = "box_score_thresh"


def max_opset() -> int:
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


def check_opset(opset: int) -> int:
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise ConfigError(f"--opset {opset}: the export needs an opset in {MIN_OPSET}..{top} "
                          f"(grid_sample is in ONNX from {MIN_OPSET}; this torch's tracer stops at {top})")
    return opset


def sample_image(cfg: Config) -> torch.Tensor:
    """A deterministic non-square trace input at the model's input size (any image would do)."""
    size = int(cfg.model.min_size[-1])
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, size, min(int(size * 1.25), int(cfg.model.max_size)), generator=generator)


def trace_to_onnx(model: torch.nn.Module, cfg: Config, opset: int) -> bytes:
    """The serialized ONNX graph of :class:`PanopticGraph` (with the box threshold still an input)."""
    graph = PanopticGraph(model).eval()
    # Every box passes and every detection is selected while tracing: the general path is recorded.
    args = (sample_image(cfg), torch.tensor(0.0), torch.tensor(-math.inf))
    detections = {0: "detections"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer warns about every Python-level shape use in torchvision; the parity tests are
        # what tells a good graph from a bad one.
        warnings.simplefilter("ignore")
        with torch.no_grad(), faster_level_merge():
            torch.onnx.export(
                graph,
                args,
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[*INPUTS, FROZEN_INPUT],
                output_names=list(OUTPUTS),
                dynamic_axes={
                    "image": {1: "height", 2: "width"},
                    **{name: detections for name in OUTPUTS if name != "sem_seg_labels"},
                    "sem_seg_labels": {0: "height", 1: "width"},
                },
                do_constant_folding=True,
            )
    return buffer.getvalue()


def freeze_input(proto: Any, name: str, value: np.ndarray) -> None:
    """Turn graph input ``name`` into a constant initializer holding ``value``."""
    from onnx import numpy_helper

    inputs = [i for i in proto.graph.input if i.name == name]
    if len(inputs) != 1:
        raise RuntimeError(f"exported graph has {len(inputs)} inputs named {name!r}, expected 1")
    proto.graph.input.remove(inputs[0])
    proto.graph.initializer.append(numpy_helper.from_array(value, name))


def export_onnx(model: torch.nn.Module, cfg: Config, label_space: Any, path: str | Path,
                opset: Optional[int] = None) -> Path:
    """Write ``model`` (an OANet; moved to the CPU, eval mode) as one ONNX file at ``path``."""
    onnx = require("onnx", "oanet export")
    opset = check_opset(DEFAULT_OPSET if opset is None else int(opset))
    if label_space is None:
        raise ConfigError("export needs the label space (category ids and names) the model was trained on")
    from oanet import __version__

    model = model.to("cpu").eval()
    proto = onnx.load_from_string(trace_to_onnx(model, cfg, opset))
    freeze_input(proto, FROZEN_INPUT, np.array(cfg.model.roi_heads.score_thresh, dtype=np.float32))
    metadata = build_metadata(label_space=label_space, config=to_dict(cfg), opset=opset,
                              oanet_version=__version__)
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    proto.producer_name, proto.producer_version = "oanet", __version__
    proto.doc_string = "OANet panoptic segmentation (image -> detections, masks, SRM ranking scores, stuff labels)"
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, proto.SerializeToString())


def compare_with_pytorch(path: str | Path, model: torch.nn.Module, cfg: Config, tolerance: float = 1e-3) -> dict:
    """Run the exported file (onnxruntime) and ``model`` (PyTorch) on one random image of a size the
    trace did not see; ``{"ok", "message", "detections", "max_box_diff", "max_score_diff"}``."""
    from oanet.runtime.onnx_predictor import load_session

    session = load_session(Path(path), None, None)
    traced = sample_image(cfg)
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(3, int(0.7 * traced.shape[1]) + 1, traced.shape[2], generator=generator)
    thresh = float(cfg.model.fusion.score_thresh)
    feed = {"image": image.numpy(), "score_thresh": np.array(thresh, dtype=np.float32)}
    outputs = dict(zip(OUTPUTS, session.run(list(OUTPUTS), feed)))
    with torch.no_grad():
        expected = model.eval()([image], score_thresh=thresh)[0]
    n_onnx, n_torch = len(outputs["scores"]), len(expected["scores"])
    size = f"a random {image.shape[2]}x{image.shape[1]} image"
    if n_onnx != n_torch:
        return {"ok": False, "detections": (n_onnx, n_torch), "max_box_diff": None, "max_score_diff": None,
                "message": f"check FAILED on {size}: onnxruntime found {n_onnx} detections, PyTorch {n_torch}"}
    box_diff = float(np.abs(outputs["boxes"] - expected["boxes"].numpy()).max(initial=0.0))
    score_diff = float(np.abs(outputs["scores"] - expected["scores"].numpy()).max(initial=0.0))
    ok = box_diff <= tolerance * max(1.0, float(max(image.shape))) and score_diff <= tolerance
    verdict = "agree" if ok else "DISAGREE"
    return {"ok": ok, "detections": (n_onnx, n_torch), "max_box_diff": box_diff, "max_score_diff": score_diff,
            "message": f"check: onnxruntime and PyTorch {verdict} on {size} ({n_torch} detections, "
                       f"max |box diff| {box_diff:.2g} px, max |score diff| {score_diff:.2g})"}
