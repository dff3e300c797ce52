"""What an exported ``.onnx`` file says about itself, so that the file alone is enough. No torch here.

``oanet export`` writes one JSON document under the metadata key ``"oanet"``: the label space (category
ids, names, colours), the stuff branch's channel space, the fusion settings, the preprocessing (resize
limits and normalisation, applied inside the graph), the opset and the graph's inputs and outputs.
:func:`read_metadata` parses it back and refuses a file that is not an oanet export, naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from oanet.config import Config, FusionConfig, from_dict
from oanet.data.labels import STUFF_CLASSES, LabelSpace
from oanet.errors import ConfigError, DataError, OANetError

METADATA_KEY = "oanet"
FORMAT = "oanet-panoptic-onnx"
FORMAT_VERSION = 1
MIN_OPSET = 16  # grid_sample (the SRM's paste, the stuff branch's resampling) is in ONNX from opset 16
DEFAULT_OPSET = 17

# Graph inputs: the image, and the detection score from which a detection is selected (ranked by
# the SRM and pasted by fusion), a float32 scalar, so a threshold needs no new export.
INPUTS = ("image", "score_thresh")
# Graph outputs, N = detections (0..detections_per_img), M = RoI mask resolution (28).
OUTPUTS = ("boxes", "labels", "scores", "mask_probs", "ranking_scores", "selected", "sem_seg_labels")
OUTPUT_DOC = {
    "image": "float32 3 x H x W, RGB in 0..1, any H and W (resize, normalisation and padding happen inside)",
    "score_thresh": "float32 scalar: a detection is selected when score >= score_thresh",
    "boxes": "float32 N x 4, x0 y0 x1 y1 in input pixels",
    "labels": "int64 N, thing index 0..T-1 (label_space things sorted by id)",
    "scores": "float32 N, detection score",
    "mask_probs": "float32 N x M x M, mask probabilities of the detected class in the box (RoI resolution); "
    "0 for detections that are not selected (the mask head runs on the selected ones only)",
    "ranking_scores": "float32 N, SRM ranking score (Eq. 3) of the selected detections, 0 elsewhere",
    "selected": "bool N, scores >= score_thresh: the detections the SRM ranked and fusion pastes",
    "sem_seg_labels": "int64 H x W, argmax over the stuff branch's channels at the input size",
}


class MissingExtraError(OANetError, ImportError):
    """An optional dependency of the deploy path is not installed."""


def require(module: str, purpose: str):
    """``import module``, or a one-line MissingExtraError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{purpose} needs {module}, which is not installed: pip install 'oanet[deploy]'") from None


@dataclass(frozen=True)
class DeployInfo:
    """The parsed metadata of an exported model."""

    label_space: LabelSpace
    stuff_classes: str
    fusion: FusionConfig
    min_size: int
    max_size: int
    opset: int
    srm: bool
    config: Config  # the training config of the exported checkpoint
    raw: dict


def build_metadata(*, label_space: Any, config: Mapping, opset: int, oanet_version: str) -> dict:
    """The JSON document written into an exported model (``config``: ``to_dict`` of the training Config)."""
    model_config = config["model"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "oanet_version": oanet_version,
        "opset": int(opset),
        "label_space": label_space.to_dict(),
        "stuff_classes": model_config["stuff_head"]["classes"],
        "fusion": dict(model_config["fusion"]),
        "srm": bool(model_config["srm"]["enabled"]),
        "preprocessing": {
            "input": "float32 3 x H x W RGB in 0..1 (uint8 / 255); no other step outside the graph",
            "in_graph": "channel order input_format, x * input_scale, (x - pixel_mean) / pixel_std, resize "
            "(short side min_size, long side <= max_size, bilinear), pad to a multiple of 32",
            "min_size": int(model_config["min_size"][-1]),
            "max_size": int(model_config["max_size"]),
            "input_format": model_config.get("input_format", "RGB"),
            "input_scale": float(model_config.get("input_scale", 1.0)),
            "pixel_mean": list(model_config["pixel_mean"]),
            "pixel_std": list(model_config["pixel_std"]),
        },
        "inputs": {name: OUTPUT_DOC[name] for name in INPUTS},
        "outputs": {name: OUTPUT_DOC[name] for name in OUTPUTS},
        "mask_thresh": 0.5,
        "config": dict(config),  # the checkpoint's whole config: provenance, and data.val for evaluation
    }


def read_metadata(custom: Mapping[str, str], path: str | Path) -> DeployInfo:
    """Parse the ``"oanet"`` entry of a model's metadata map; ConfigError naming ``path`` otherwise."""
    text = custom.get(METADATA_KEY)
    if text is None:
        raise ConfigError(f"{path}: not an oanet export (no '{METADATA_KEY}' metadata); make one with `oanet export`")
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        if int(data.get("format_version", -1)) > FORMAT_VERSION:
            raise ValueError(f"format_version {data['format_version']} is newer than this oanet reads ({FORMAT_VERSION})")
        if data["stuff_classes"] not in STUFF_CLASSES:
            raise ValueError(f"stuff_classes {data['stuff_classes']!r}")
        prep = data["preprocessing"]
        info = DeployInfo(
            label_space=LabelSpace.from_dict(data["label_space"]),
            stuff_classes=data["stuff_classes"],
            fusion=from_dict(FusionConfig, data["fusion"], f"{path}: metadata fusion"),
            min_size=int(prep["min_size"]),
            max_size=int(prep["max_size"]),
            opset=int(data["opset"]),
            srm=bool(data["srm"]),
            config=from_dict(Config, data["config"], f"{path}: metadata config"),
            raw=data,
        )
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, DataError) as exc:
        raise ConfigError(f"{path}: bad oanet metadata ({type(exc).__name__}: {exc})") from None
    check_class_counts(info, path)
    return info


def check_class_counts(info: DeployInfo, path: str | Path) -> None:
    """The metadata's categories against the class counts the graph was built with (its config's
    ``num_thing_classes`` / ``num_stuff_classes``, the sizes of the box predictor and stuff head):
    an edited category list would index past the label table in fusion."""
    model = info.config.model
    things, stuff = info.label_space.num_things, info.label_space.num_stuff
    if (things, stuff) != (model.num_thing_classes, model.num_stuff_classes):
        raise ConfigError(
            f"{path}: the metadata declares {things} thing and {stuff} stuff categories, the graph was built for "
            f"{model.num_thing_classes} and {model.num_stuff_classes}; export the checkpoint again"
        )


__all__ = [
    "METADATA_KEY", "FORMAT_VERSION", "MIN_OPSET", "DEFAULT_OPSET", "INPUTS", "OUTPUTS", "DeployInfo",
    "MissingExtraError", "build_metadata", "read_metadata", "require",
]
