"""Pretrained weights from torchvision, detectron2 and oanet files, named in OANet's terms.

Every reader returns a :class:`SourceWeights`: the tensors under OANet's parameter names, the name
each had in its file, the class layout ("slots") of the class-indexed tensors, the tensors that have
no counterpart in OANet (with the reason), and the input settings the weights were trained with.
:func:`oanet.model.pretrained.load_pretrained` maps them onto a model.

detectron2's ``.pkl`` files are read with a restricted unpickler that admits numpy arrays, dicts,
lists, strings and numbers only: a pickle naming anything else is refused before anything runs.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from oanet.data.coco_categories import COCO_NAMES, COCO_STUFF_IDS, COCO_THING_IDS
from oanet.data.labels import LabelSpace
from oanet.errors import ConfigError, DataError

# A class slot: one class-indexed row (or group of rows) of a classifier-like tensor.
BACKGROUND = "background"  # the detector's background class
ANY_THING = "things"  # the "any thing" channel of a stuff-only semantic head
Slot = Union[str, tuple[int, str], None]  # BACKGROUND | ANY_THING | (category id, name) | None (unusable)

FORMATS = ("auto", "torchvision", "detectron2", "oanet")
TORCHVISION_PREFIX = "torchvision:"
# Input settings the weights were trained with (ModelConfig / BackboneConfig / RoIHeadsConfig fields).
TORCHVISION_EXPECTS = {
    "input_format": "RGB", "input_scale": 1.0,
    "pixel_mean": (0.485, 0.456, 0.406), "pixel_std": (0.229, 0.224, 0.225),
    "backbone.stride_in_1x1": False, "roi_heads.pooler_aligned": False,
}
DETECTRON2_EXPECTS = {
    "input_format": "BGR", "input_scale": 255.0,
    "pixel_mean": (103.53, 116.28, 123.675), "pixel_std": (1.0, 1.0, 1.0),
    "backbone.stride_in_1x1": True, "roi_heads.pooler_aligned": True,
}


@dataclass
class SourceWeights:
    description: str
    format: str  # torchvision | detectron2 | oanet
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # OANet name -> tensor
    names: dict[str, str] = field(default_factory=dict)  # OANet name -> name in the file
    slots: dict[str, tuple[list[Slot], int]] = field(default_factory=dict)  # OANet name -> (slots, rows each)
    unused: dict[str, str] = field(default_factory=dict)  # name in the file -> why it has no counterpart
    optional: set[str] = field(default_factory=set)  # reported, not refused, when their shape does not fit
    expects: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: torch.Tensor, original: str, slots=None, optional: bool = False) -> None:
        if name in self.tensors:
            self.unused[original] = f"duplicate of {self.names[name]}"
            return
        self.tensors[name] = value
        self.names[name] = original
        if slots is not None:
            self.slots[name] = slots
        if optional:
            self.optional.add(name)


# --------------------------------------------------------------------------------------------
# reading files


class _Refused(Exception):
    pass


# What numpy arrays, scalars and OrderedDicts pickle to; none of these can run anything.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes with protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core"):  # numpy 1 wrote numpy.core, numpy 2 reads numpy._core
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _Refused(f"{module}.{name}")
        if module.startswith("numpy._core") and not hasattr(np, "_core"):
            module = "numpy.core" + module[len("numpy._core"):]
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def read_restricted_pickle(path: Path) -> Any:
    """Unpickle ``path`` admitting numpy arrays, dicts, lists, strings and numbers only."""
    try:
        with open(path, "rb") as handle:
            data = _RestrictedUnpickler(handle, encoding="latin1").load()
    except _Refused as exc:
        raise ConfigError(
            f"{path}: refused to unpickle: it names {exc} (only numpy arrays, dicts, lists, strings and "
            "numbers are allowed; nothing was executed)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # truncated or not a pickle at all
        raise ConfigError(f"{path}: not a readable pickle ({type(exc).__name__}: {str(exc)[:200]})") from None
    _check_plain(data, path)
    return data


def _check_plain(value: Any, path: Path) -> None:
    """Numeric arrays only: an object array's items came through the unpickler, but are not weights."""
    if isinstance(value, dict):
        for item in value.values():
            _check_plain(item, path)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, path)
    elif isinstance(value, np.ndarray) and value.dtype.kind not in "biuf":
        raise ConfigError(f"{path}: holds an array of dtype {value.dtype} (weights are numeric arrays)")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickled code, ...
        # torch's messages run to many lines (weights_only advice): keep the first sentence.
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise ConfigError(f"{path}: not a readable weights file ({type(exc).__name__}: {first})") from None


def _torchvision_weights(name: str) -> tuple[dict, Optional[list[str]]]:
    """State dict and class names of a torchvision weights enum (downloaded once into the hub cache)."""
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(
            f"model.init: {TORCHVISION_PREFIX}{name} is not a torchvision weights name "
            "(e.g. torchvision:MaskRCNN_ResNet50_FPN_Weights.COCO_V1)"
        ) from None
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", weights_only=True)
    except Exception as exc:  # offline, proxy, truncated download
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise ConfigError(
            f"model.init: cannot fetch {weights.url} ({type(exc).__name__}: {str(exc)[:120]}); offline, copy "
            f"that file to {cache} or set model.init to its path"
        ) from None
    return state, weights.meta.get("categories")


def read_source(source: str, format: str = "auto") -> SourceWeights:
    """Read ``source`` (see :func:`oanet.model.pretrained.load_pretrained`) into a :class:`SourceWeights`."""
    if format not in FORMATS:
        raise ConfigError(f"pretrained format {format!r} is not one of {', '.join(FORMATS)}")
    if source.startswith(TORCHVISION_PREFIX):
        if format not in ("auto", "torchvision"):
            raise ConfigError(f"model.init: {source} is a torchvision weights name, not {format}")
        state, categories = _torchvision_weights(source[len(TORCHVISION_PREFIX):])
        return from_torchvision(state, categories, f"torchvision weights {source[len(TORCHVISION_PREFIX):]}")
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.init: {source} is neither a file nor a torchvision weights name (torchvision:<Enum>.<NAME>)"
        )
    raw = read_restricted_pickle(path) if path.suffix == ".pkl" else _torch_load(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a dict of weights, found {type(raw).__name__}")
    if format in ("auto", "oanet") and "model" in raw and "config" in raw:
        return from_oanet(raw, path)
    if format == "oanet":
        raise ConfigError(f"{path}: not an oanet checkpoint (expected a dict with 'model' and 'config')")
    state = raw
    for key in ("model", "state_dict", "blobs"):  # detectron2 / generic trainers / Detectron 1
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, (torch.Tensor, np.ndarray))}
    if format == "auto":
        format = _guess_layout(tensors, path)
    if format == "detectron2":
        return from_detectron2(tensors, f"detectron2 checkpoint {path}")
    return from_torchvision(tensors, None, f"torchvision state dict {path}")


def _guess_layout(tensors: dict, path: Path) -> str:
    names = list(tensors)
    if any(n.startswith(("backbone.bottom_up.", "proposal_generator.")) for n in names):
        return "detectron2"
    if any(n.startswith(("backbone.body.", "roi_heads.box_predictor.", "rpn.head.")) for n in names):
        return "torchvision"
    hint = ""
    if any(re.match(r"res\d_\d+_branch", n) for n in names):
        hint = " (Caffe2/Detectron 1 names such as res2_0_branch2a_w are not supported)"
    elif any(n.startswith("layer1.") for n in names):
        hint = " (a classification ResNet? use model.backbone.weights for ImageNet weights)"
    raise ConfigError(
        f"{path}: neither torchvision Mask R-CNN names (backbone.body.*) nor detectron2 names "
        f"(backbone.bottom_up.*) nor an oanet checkpoint{hint}"
    )


# --------------------------------------------------------------------------------------------
# torchvision


def torchvision_current_name(name: str) -> str:
    """Names of torchvision < 0.13 state dicts (the COCO_V1 file) as today's modules have them.

    torchvision's own load hooks do the same renames (FPN, RPN head and mask head convs became
    Conv2dNormActivation blocks).
    """
    name = re.sub(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$", r"\1.0.\2", name)
    name = re.sub(r"^rpn\.head\.conv\.(weight|bias)$", r"rpn.head.conv.0.0.\1", name)
    match = re.match(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$", name)
    if match:
        name = f"roi_heads.mask_head.{int(match.group(1)) - 1}.0.{match.group(2)}"
    return name


def _is_torchvision_v2(names) -> bool:
    """MaskRCNN_ResNet50_FPN_V2: BatchNorm in the FPN and heads, a 4-conv box head, a 2-conv RPN head."""
    return any(
        re.match(r"backbone\.fpn\.inner_blocks\.\d+\.1\.|roi_heads\.box_head\.0\.0\.|rpn\.head\.conv\.1\.", n)
        for n in names
    )


def _torchvision_class_slots(categories: Optional[list[str]], rows: int) -> Optional[list[Slot]]:
    """Slots of the detection rows: index = COCO category id for torchvision's COCO models."""
    if categories is None:
        if rows != 91:
            return None
        categories = ["__background__"] + [COCO_NAMES.get(i, "N/A") for i in range(1, 91)]
    if len(categories) != rows:
        return None
    return [BACKGROUND if i == 0 else (None if n == "N/A" else (i, n)) for i, n in enumerate(categories)]


_TV_CLASS_ROWS = {
    "roi_heads.box_predictor.cls_score.": 1,
    "roi_heads.box_predictor.bbox_pred.": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.": 1,
}


def from_torchvision(state: dict, categories: Optional[list[str]], description: str) -> SourceWeights:
    source = SourceWeights(description, "torchvision", expects=dict(TORCHVISION_EXPECTS))
    v2 = _is_torchvision_v2(state)
    if v2:
        source.description += " (MaskRCNN_ResNet50_FPN_V2 layout: the ResNet body maps, the rest does not)"
    cls = state.get("roi_heads.box_predictor.cls_score.weight")
    slots = _torchvision_class_slots(categories, cls.shape[0]) if cls is not None else None
    if cls is not None and slots is None:
        source.notes.append(
            f"the source's classifier has {cls.shape[0]} classes whose names are unknown (not torchvision's "
            "91-entry COCO layout): class rows start fresh"
        )
    for original, value in state.items():
        value = torch.as_tensor(value)
        if v2 and not original.startswith("backbone.body."):
            source.unused[original] = "V2 layout (BatchNorm FPN/heads, 4-conv box head): no counterpart in OANet"
            continue
        name = torchvision_current_name(original)
        rows = next((r for prefix, r in _TV_CLASS_ROWS.items() if name.startswith(prefix)), None)
        source.add(name, value, original, slots=(slots, rows) if rows and slots else None)
    return source


# --------------------------------------------------------------------------------------------
# detectron2

_D2_THINGS: list[Slot] = [(i, COCO_NAMES[i]) for i in COCO_THING_IDS]  # contiguous 0..79 = things by COCO id
_D2_SEM_SEG: list[Slot] = [ANY_THING] + [(i, COCO_NAMES[i]) for i in COCO_STUFF_IDS]  # 54 channels

# (detectron2 pattern, OANet replacement); the first match wins. Class-indexed ones come with slots below.
_D2_RULES = [
    (r"backbone\.bottom_up\.stem\.conv1\.weight", r"backbone.body.conv1.weight"),
    (r"backbone\.bottom_up\.stem\.conv1\.norm\.(\w+)", r"backbone.body.bn1.\1"),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight", r"backbone.body.layer{\1-1}.\2.conv\3.weight"),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)", r"backbone.body.layer{\1-1}.\2.bn\3.\4"),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.weight", r"backbone.body.layer{\1-1}.\2.downsample.0.weight"),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.(\w+)", r"backbone.body.layer{\1-1}.\2.downsample.1.\3"),
    (r"backbone\.fpn_lateral(\d)\.(weight|bias)", r"backbone.fpn.inner_blocks.{\1-2}.0.\2"),
    (r"backbone\.fpn_output(\d)\.(weight|bias)", r"backbone.fpn.layer_blocks.{\1-2}.0.\2"),
    (r"proposal_generator\.rpn_head\.conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
    (r"proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)", r"rpn.head.cls_logits.\1"),
    (r"proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)", r"rpn.head.bbox_pred.\1"),
    (r"roi_heads\.box_head\.fc1\.(weight|bias)", r"roi_heads.box_head.fc6.\1"),
    (r"roi_heads\.box_head\.fc2\.(weight|bias)", r"roi_heads.box_head.fc7.\1"),
    (r"roi_heads\.box_predictor\.cls_score\.(weight|bias)", r"roi_heads.box_predictor.cls_score.\1"),
    (r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)", r"roi_heads.box_predictor.bbox_pred.\1"),
    (r"roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)", r"roi_heads.mask_head.{\1-1}.0.\2"),
    (r"roi_heads\.mask_head\.deconv\.(weight|bias)", r"roi_heads.mask_predictor.conv5_mask.\1"),
    (r"roi_heads\.mask_head\.predictor\.(weight|bias)", r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
    # Panoptic FPN's semantic head: only its first conv per level has a counterpart in OANet's stuff
    # head (same input, same resolution); its later convs run after a 2x upsampling that OANet's do not.
    (r"sem_seg_head\.scale_heads\.(\d)\.0\.weight", r"stuff_head.per_level.\1.0.0.weight"),
    (r"sem_seg_head\.scale_heads\.(\d)\.0\.norm\.(weight|bias)", r"stuff_head.per_level.\1.0.1.\2"),
    (r"sem_seg_head\.predictor\.(weight|bias)", r"stuff_head.classifier.\1"),
]
_D2_SLOTS = {
    "roi_heads.box_predictor.cls_score.": (_D2_THINGS + [BACKGROUND], 1),
    "roi_heads.box_predictor.bbox_pred.": (_D2_THINGS, 4),
    "roi_heads.mask_predictor.mask_fcn_logits.": (_D2_THINGS, 1),
    "stuff_head.classifier.": (_D2_SEM_SEG, 1),
}


def detectron2_name(name: str) -> Optional[str]:
    """OANet's name for a detectron2 parameter, or None when OANet has no counterpart."""
    for pattern, replacement in _D2_RULES:
        match = re.fullmatch(pattern, name)
        if match:
            out = match.expand(replacement)
            # "{k-1}" / "{k-2}": detectron2 counts ResNet stages res2-res5 and FPN levels p2-p5.
            return re.sub(r"\{(\d+)-(\d)\}", lambda m: str(int(m.group(1)) - int(m.group(2))), out)
    return None


def _d2_unused_reason(name: str) -> str:
    if name in ("pixel_mean", "pixel_std"):
        return "input normalisation (compared with model.pixel_mean/pixel_std)"
    if re.match(r"sem_seg_head\.p\d\.", name):
        return "alias of sem_seg_head.scale_heads (detectron2 registers each level twice)"
    if name.startswith("sem_seg_head.scale_heads."):
        return "runs after a 2x upsampling in Panoptic FPN: no counterpart in OANet's stuff head"
    return "no counterpart in OANet"


def from_detectron2(arrays: dict, description: str) -> SourceWeights:
    source = SourceWeights(description, "detectron2", expects=dict(DETECTRON2_EXPECTS))
    for original, value in arrays.items():
        value = torch.tensor(np.asarray(value)) if isinstance(value, np.ndarray) else value
        if original in ("pixel_mean", "pixel_std"):
            source.expects[original] = tuple(float(v) for v in value.reshape(-1).tolist())
        name = detectron2_name(original)
        if name is None:
            source.unused[original] = _d2_unused_reason(original)
            continue
        slots = next((s for prefix, s in _D2_SLOTS.items() if name.startswith(prefix)), None)
        rows_known = slots is None or value.shape[0] == len(slots[0]) * slots[1]
        if not rows_known:  # not COCO's 80 things / 54 semantic channels: class names unknown
            source.notes.append(
                f"{original} has {value.shape[0]} rows, not COCO's {len(slots[0]) * slots[1]}: its classes are "
                "unknown and start fresh"
            )
        source.add(name, value, original, slots=slots if rows_known else None,
                   optional=name.startswith("stuff_head."))
    return source


# --------------------------------------------------------------------------------------------
# oanet checkpoints


def label_space_slots(label_space: LabelSpace, stuff_classes: str) -> dict[str, list[Slot]]:
    """Slots of an OANet's class-indexed tensors: detection rows, stuff-branch channels, SRM channels."""
    things: list[Slot] = [(int(i), label_space.category(int(i)).name) for i in label_space.thing_ids]
    channels: list[Slot] = [
        ANY_THING if cid < 0 else (int(cid), label_space.category(int(cid)).name)
        for cid in label_space.channel_category_ids(stuff_classes).tolist()
    ]
    return {"det": [BACKGROUND] + things, "channel": channels, "thing": things}


def oanet_class_kind(name: str) -> Optional[tuple[str, int]]:
    """``(slot kind, rows per slot)`` of a class-indexed OANet parameter, else None."""
    if name.startswith(("roi_heads.box_predictor.cls_score.", "roi_heads.mask_predictor.mask_fcn_logits.")):
        return "det", 1
    if name.startswith("roi_heads.box_predictor.bbox_pred."):
        return "det", 4
    if name.startswith("stuff_head.classifier."):
        return "channel", 1
    if name.startswith("srm."):
        return "thing", 1
    return None


def from_oanet(checkpoint: dict, path: Path) -> SourceWeights:
    config = checkpoint.get("config") or {}
    model_cfg = config.get("model", {}) if isinstance(config, dict) else {}
    expects = {k: model_cfg[k] for k in ("input_format", "input_scale", "pixel_mean", "pixel_std") if k in model_cfg}
    for section, key in (("backbone", "stride_in_1x1"), ("roi_heads", "pooler_aligned")):
        if key in model_cfg.get(section, {}):
            expects[f"{section}.{key}"] = model_cfg[section][key]
    expects = {k: tuple(v) if isinstance(v, list) else v for k, v in expects.items()}
    source = SourceWeights(f"oanet checkpoint {path}", "oanet", expects=expects)
    slots = None
    if checkpoint.get("label_space"):
        try:
            label_space = LabelSpace.from_dict(checkpoint["label_space"])
        except (DataError, AttributeError, TypeError) as exc:
            raise ConfigError(f"{path}: bad label space in the checkpoint ({exc})") from None
        slots = label_space_slots(label_space, model_cfg.get("stuff_head", {}).get("classes", "all"))
    else:
        source.notes.append("the checkpoint has no label space: class rows start fresh")
    for name, value in checkpoint["model"].items():
        kind = oanet_class_kind(name)
        source.add(name, value, name, slots=(slots[kind[0]], kind[1]) if kind and slots else None)
    return source
