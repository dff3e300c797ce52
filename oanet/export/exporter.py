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


def check_inputs(cfg: Config) -> list[tuple[str, torch.Tensor]]:
    """What the self-check runs on, best first: the first readable image of the config's val split (a
    real image, where a trained model detects), then a random image of a size the trace did not see."""
    from oanet.data.images import IMAGE_EXTENSIONS, load_rgb_image, to_float_chw
    from oanet.errors import DataError

    inputs = []
    folder = Path(cfg.data.val.image_dir) if cfg.data.val.image_dir else None
    if folder is not None and folder.is_dir():
        for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:5]:
            try:
                image = torch.from_numpy(to_float_chw(load_rgb_image(file)))
            except (DataError, OSError):
                continue
            inputs.append((f"val image {file.name} ({image.shape[2]}x{image.shape[1]})", image))
            break
    traced = sample_image(cfg)
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(3, int(0.7 * traced.shape[1]) + 1, traced.shape[2], generator=generator)
    inputs.append((f"a random {image.shape[2]}x{image.shape[1]} image", image))
    return inputs


def compare_with_pytorch(path: str | Path, model: torch.nn.Module, cfg: Config, tolerance: float = 1e-3) -> dict:
    """Run the exported file (onnxruntime) and ``model`` (PyTorch) on an image with detections, and compare
    every output fusion reads: boxes, scores, labels, selection, SRM ranking scores, masks, stuff labels.

    The image is a val image of ``cfg`` when there is one, else a random one; when the model selects no
    detection there at the fusion threshold, the selection threshold is lowered to 0 (every detection the
    box head keeps). Returns ``{"ok", "warning", "message", "detections": (onnx, torch), "compared",
    "max_box_diff", "max_score_diff", "max_rank_diff"}``; ``warning`` when nothing but the stuff labels
    could be compared (no detection even so: the box head's own threshold is frozen in the graph).
    """
    from oanet.runtime.onnx_predictor import load_session

    session = load_session(Path(path), None, None)
    model = model.eval()
    fusion_thresh = float(cfg.model.fusion.score_thresh)
    chosen = None
    for name, image in check_inputs(cfg):
        for thresh in dict.fromkeys((fusion_thresh, 0.0)):
            with torch.no_grad():
                expected = model([image], score_thresh=thresh)[0]
            if chosen is None or int(expected["selected"].sum()) > int(chosen[3]["selected"].sum()):
                chosen = (name, image, thresh, expected)
            if expected["selected"].any():
                break
        if chosen[3]["selected"].any():
            break
    name, image, thresh, expected = chosen
    feed = {"image": image.numpy(), "score_thresh": np.array(thresh, dtype=np.float32)}
    outputs = dict(zip(OUTPUTS, session.run(list(OUTPUTS), feed)))
    box_tolerance = tolerance * max(1.0, float(max(image.shape)))
    report = compare_outputs(outputs, {k: v.numpy() for k, v in expected.items()}, box_tolerance, tolerance)
    report["message"] = check_message(report, name, thresh, fusion_thresh, float(cfg.model.roi_heads.score_thresh))
    return report


def compare_outputs(outputs: dict, expected: dict, box_tolerance: float, tolerance: float) -> dict:
    """The graph's outputs against the eager model's on one image (numpy arrays); see compare_with_pytorch."""
    from oanet.runtime.paste import paste_masks

    n_onnx, n_torch = len(outputs["scores"]), len(expected["scores"])
    report = {"ok": False, "warning": False, "detections": (n_onnx, n_torch), "compared": 0, "max_box_diff": None,
              "max_score_diff": None, "max_rank_diff": None, "mask_share": 0.0,
              "stuff_share": float(np.mean(outputs["sem_seg_labels"] != expected["sem_seg_labels"]))}
    if n_onnx != n_torch:
        return report
    keep = np.flatnonzero(expected["selected"])
    height, width = expected["sem_seg_labels"].shape
    pasted = paste_masks(outputs["mask_probs"][keep], outputs["boxes"][keep], height, width)
    # A pasted mask edge sits at exactly 0.5, so float rounding may flip a few pixels: a share, not equality.
    report["mask_share"] = float(np.mean(pasted != (expected["masks"][keep] > 0.5))) if keep.size else 0.0
    for key, name in (("boxes", "max_box_diff"), ("scores", "max_score_diff"), ("ranking_scores", "max_rank_diff")):
        report[name] = float(np.abs(outputs[key] - expected[key]).max(initial=0.0))
    report["compared"] = int(keep.size)
    report["ok"] = bool(
        np.array_equal(outputs["selected"], expected["selected"]) and np.array_equal(outputs["labels"], expected["labels"])
        and report["max_box_diff"] <= box_tolerance and report["max_score_diff"] <= tolerance
        and report["max_rank_diff"] <= tolerance and report["mask_share"] <= 1e-3 and report["stuff_share"] <= 1e-3
    )
    report["warning"] = report["ok"] and keep.size == 0
    return report


def check_message(report: dict, name: str, thresh: float, fusion_thresh: float, box_thresh: float) -> str:
    """The self-check's one line (with ``WARNING`` / ``FAILED`` where it applies)."""
    n_onnx, n_torch = report["detections"]
    if n_onnx != n_torch:
        return f"check FAILED on {name}: onnxruntime found {n_onnx} detections, PyTorch {n_torch}"
    stuff = f"stuff labels differ on {100 * report['stuff_share']:.2g}% of pixels"
    if report["warning"]:
        return (f"check: WARNING: no detection on {name}, even with every detection selected (the box head's "
                f"score threshold {box_thresh:g} is frozen in the graph): boxes, masks and SRM ranking scores were "
                f"NOT compared; {stuff}")
    verdict = "agree" if report["ok"] else "DISAGREE"
    lowered = (f", at selection threshold {thresh:g} since none reached the fusion threshold {fusion_thresh:g}"
               if thresh != fusion_thresh else "")
    rest = f", {n_torch - report['compared']} more below it (boxes and scores only)" if n_torch > report["compared"] else ""
    return (f"check: onnxruntime and PyTorch {verdict} on {name}: {report['compared']} detections "
            f"compared{lowered}{rest} (max |box diff| {report['max_box_diff']:.2g} px, |score diff| "
            f"{report['max_score_diff']:.2g}, |ranking score diff| {report['max_rank_diff']:.2g}; mask pixels "
            f"differ {100 * report['mask_share']:.2g}%, {stuff})")
