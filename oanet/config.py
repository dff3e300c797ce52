"""Typed configuration: plain dataclasses, loadable from YAML, with ``a.b.c=value`` overrides.

No registries and no magic: a YAML file mirrors the dataclass tree, an unknown key is an error that
names it, and every default is the paper's (COCO, ResNet-50, §4.2) unless it says otherwise.
This module imports no torch, so the CLI can parse configs cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml

from oanet.dataclass_codec import diff_configs, from_dict, to_dict  # noqa: F401  (the config API)
from oanet.errors import ConfigError


@dataclass
class BackboneConfig:
    depth: int = 50  # ResNet-18/34/50/101
    # torchvision weights: None (random init), a weights enum name such as "IMAGENET1K_V1" or
    # "DEFAULT" (downloaded by torchvision when online), or the path of a local .pth state dict.
    weights: Optional[str] = None
    trainable_layers: int = 3  # as torchvision's Mask R-CNN: res3-res5 train, stem+res2 frozen
    frozen_bn: bool = True  # FrozenBatchNorm2d, as torchvision's detection backbones
    fpn_channels: int = 256
    # Where a bottleneck block that downsamples puts its stride: false = in the 3x3 conv (torchvision,
    # "ResNet v1.5"), true = in the first 1x1 conv (the MSRA ResNets behind detectron2's model zoo,
    # detectron2's RESNETS.STRIDE_IN_1X1). Same weights shapes either way; ResNet-50/101 only.
    stride_in_1x1: bool = False


@dataclass
class RPNConfig:
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one size per FPN level P2-P6
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    pre_nms_top_n_train: int = 2000
    post_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5


@dataclass
class RoIHeadsConfig:
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    box_representation_size: int = 1024  # the two-FC box head's width
    mask_head_channels: int = 256  # width of the four 3x3 convs of the mask head
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100  # paper §4.2: at most 100 boxes per image
    # RoIAlign of the box and mask heads: torchvision's is aligned=False with 2x2 samples per bin;
    # detectron2's FPN models use ROIAlignV2 = aligned=True (half-pixel shift) with adaptive sampling (0).
    pooler_aligned: bool = False
    pooler_sampling_ratio: int = 2


@dataclass
class StuffHeadConfig:
    # "all": every thing and stuff class (object context, paper Table 2, default);
    # "stuff": the stuff classes plus one class for all things (as detectron2's Panoptic FPN).
    classes: Literal["all", "stuff"] = "all"
    channels: int = 128  # width of the per-level 3x3 convs (Fig. 3)
    loss_weight: float = 0.25  # lambda of Eq. 1 (Table 1)


@dataclass
class SRMConfig:
    enabled: bool = True
    kernel: Literal["1x1", "3x3", "gcn7"] = "gcn7"  # Table 5; gcn7 = 1x7 + 7x1 large kernel
    stride: int = 4  # the SRM works at 1/stride of the network input (see docs/model.md)
    loss_weight: float = 1.0


@dataclass
class FusionConfig:
    score_thresh: float = 0.5  # detections below this are not pasted (nor fed to the SRM)
    overlap_thresh: float = 0.5  # drop an instance when less than this share of it stays visible
    stuff_area_limit: int = 4900  # paper §4.2, at an 800-px short side; scaled by (short/800)^2
    stuff_area_reference_size: int = 800

    def min_stuff_area(self, height: int, width: int) -> float:
        """The minimum stuff area in pixels for an image of this size (scaled with the squared short side)."""
        return self.stuff_area_limit * (min(height, width) / self.stuff_area_reference_size) ** 2


@dataclass
class ModelConfig:
    # Filled from the dataset's categories when left at 0 (training), and stored in checkpoints.
    num_thing_classes: int = 0
    num_stuff_classes: int = 0
    sharing: Literal["none", "backbone", "fpn"] = "fpn"  # Table 4; fpn = "+skip-connection"
    min_size: tuple[int, ...] = (800,)  # shortest edge; several values = multi-scale training
    max_size: int = 1333
    # Images enter the model as RGB in [0, 1]. The network sees them in ``input_format`` channel order,
    # multiplied by ``input_scale``, minus ``pixel_mean``, divided by ``pixel_std`` (mean and std in that
    # order and those units). torchvision's weights: RGB, 1, the ImageNet values below; detectron2's
    # MSRA models: BGR, 255, [103.53, 116.28, 123.675], [1, 1, 1] (docs/pretrained.md).
    input_format: Literal["RGB", "BGR"] = "RGB"
    input_scale: float = 1.0
    pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    # Weights loaded once when a training run starts fresh (never on resume, never at inference):
    # "torchvision:<WeightsEnum>.<NAME>", a torchvision Mask R-CNN state dict (.pth), a detectron2
    # model-zoo .pkl, or an oanet checkpoint. See oanet.model.pretrained.load_pretrained.
    init: Optional[str] = None
    # Submodules of OANet that do not train, by path: backbone, backbone.body, backbone.fpn, rpn,
    # roi_heads, roi_heads.box_predictor, stuff_head, srm, ...
    freeze: tuple[str, ...] = ()
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)
    stuff_head: StuffHeadConfig = field(default_factory=StuffHeadConfig)
    srm: SRMConfig = field(default_factory=SRMConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)


@dataclass
class SplitConfig:
    """One split in COCO panoptic layout."""

    panoptic_json: str = ""
    panoptic_dir: str = ""  # folder of panoptic PNGs
    image_dir: str = ""
    instances_json: Optional[str] = None  # COCO instances JSON (overlapping masks), optional
    # Optional category list with colours (panopticapi's panoptic_coco_categories.json) for
    # categories the panoptic JSON gives none; otherwise colours are generated from the ids.
    categories_json: Optional[str] = None


@dataclass
class DataConfig:
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    # Where thing instances for the instance branch come from: "instances" (COCO's overlapping
    # instance masks, the paper's default; falls back to "panoptic" when no instances_json is
    # given) or "panoptic" (non-overlapping masks cut from the panoptic PNG: Table 3 "pano-instance GT").
    instance_source: Literal["instances", "panoptic"] = "instances"
    hflip_prob: float = 0.5
    num_workers: int = 2
    aspect_ratio_grouping: bool = True


@dataclass
class SolverConfig:
    base_lr: float = 0.02  # for ims_per_batch=16; linear scaling rule for other batch sizes
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 2000
    warmup_factor: float = 0.1  # 0.002 -> 0.02, paper §4.2
    steps: tuple[int, ...] = (60000, 80000)
    gamma: float = 0.1
    max_iter: int = 100000
    ims_per_batch: int = 16  # global batch over all processes
    # Images one process puts through the model at once; 0 = ims_per_batch / world_size. When a
    # process's share is larger, it accumulates gradients over chunks (same result, less memory).
    ims_per_device: int = 0
    # Linear scaling rule: when true, the learning rate used is base_lr * ims_per_batch / 16.
    scale_lr_with_batch: bool = False
    # Autocast of the forward pass (docs/training.md): "amp_fp16" = float16 with a GradScaler on CUDA
    # (fp32 on the CPU), "bf16" = bfloat16 on CPU and CUDA (no scaler), "fp32" = none. The old key
    # `amp: true/false` still loads as amp_fp16/fp32.
    precision: Literal["fp32", "amp_fp16", "bf16"] = "amp_fp16"
    clip_grad_norm: float = 0.0  # 0 = off
    checkpoint_period: int = 5000
    log_period: int = 20

    @staticmethod
    def _upgrade_legacy(data: dict, where: str) -> dict:
        """``amp: bool`` (configs and checkpoints before ``precision``) -> ``precision``."""
        if "amp" not in data:
            return data
        data = dict(data)
        amp = data.pop("amp")
        if not isinstance(amp, bool):
            raise ConfigError(f"{where}.amp: expected true or false, got {amp!r}")
        implied = "amp_fp16" if amp else "fp32"
        if data.setdefault("precision", implied) != implied:
            raise ConfigError(
                f"{where}: amp={str(amp).lower()} (the old key) contradicts precision={data['precision']}; "
                "give only precision"
            )
        return data


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    output_dir: str = "output"
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu


def check_score_thresh(score_thresh: Optional[float], name: str = "score_thresh") -> Optional[float]:
    """A detection score threshold in [0, 1] (None = the model's own); ConfigError naming ``name``."""
    if score_thresh is None:
        return None
    if isinstance(score_thresh, bool) or not isinstance(score_thresh, (int, float)) or not 0.0 <= score_thresh <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {score_thresh!r}")
    return float(score_thresh)


# --------------------------------------------------------------------------------------------
# YAML


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(exc)})") from None
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (``None`` = all defaults) and apply overrides.

    A file may name another with ``_base_: other.yaml`` (relative to itself); its keys are merged over
    the base recursively. That is the only indirection: presets for ablations are a base plus a few keys.
    """
    if path is not None:
        path = resolve_config_path(path)
    data = _load_yaml_with_base(Path(path)) if path is not None else {}
    where = str(path) if path is not None else "config"
    overrides = list(overrides or [])
    if not overrides:
        return from_dict(Config, data, where)
    from_dict(Config, data, where)  # the file alone: its own errors name it
    for item in overrides:
        # One at a time, so that an error names the override it came from, not the file.
        apply_overrides(data, [item])
        try:
            from_dict(Config, data, "config")
        except ConfigError as exc:
            detail = str(exc)
            detail = detail[len("config."):] if detail.startswith("config.") else detail
            raise ConfigError(f"override {item!r} (command line): {detail}") from None
    return from_dict(Config, data, where)


def resolve_config_path(path: str | Path) -> Path:
    """``path`` when it exists; else a preset shipped with oanet of that name (``coco_r50``,
    ``synthetic_cpu.yaml``, ``ablations/srm_gcn7``); else FileNotFoundError listing the presets."""
    path = Path(path)
    if path.exists():
        return path
    from oanet.presets import find_preset, preset_names

    name = path.as_posix() if path.suffix in (".yaml", ".yml") else path.as_posix() + ".yaml"
    try:
        return find_preset(name)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: config not found, and no preset has that name (presets: {', '.join(preset_names())})"
        ) from None


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's multi-line message as one line: the problem and where."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _load_yaml_with_base(path: Path, seen: tuple = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base_name = data.pop("_base_", None)
    if base_name is None:
        return data
    base = _load_yaml_with_base(path.parent / base_name, seen + (path.resolve(),))
    return _merge(base, data)


SPLIT_PATH_FIELDS = ("panoptic_json", "panoptic_dir", "image_dir", "instances_json", "categories_json")


def resolve_data_paths(cfg: Config, base: str | Path | None = None) -> Config:
    """``cfg`` with every relative data path made absolute against ``base`` (default: the current folder).

    Relative data paths mean "from where you run", as detectron2's ``datasets/`` (a preset shipped inside
    the package could not mean its own folder). Training stores the absolute form in config.yaml and the
    checkpoints, so evaluating or exporting the model later works from any folder.
    """
    import dataclasses

    root = Path(base) if base is not None else Path.cwd()

    def absolute(split: SplitConfig) -> SplitConfig:
        changes = {name: str((root / value).absolute()) for name in SPLIT_PATH_FIELDS
                   if (value := getattr(split, name)) and not Path(value).is_absolute()}
        return dataclasses.replace(split, **changes)

    data = dataclasses.replace(cfg.data, train=absolute(cfg.data.train), val=absolute(cfg.data.val))
    return dataclasses.replace(cfg, data=data)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------------------------
# cross-field checks


def validate(cfg: Config, world_size: int = 1) -> Config:
    """``cfg`` unchanged, or ConfigError naming the first value no command can run with.

    Types and allowed literals are checked when a config is loaded; this checks ranges and how fields
    relate (the global batch must split over ``world_size`` processes, LR steps must increase, ...),
    before any data is read or any file written.
    """
    solver = cfg.solver
    if solver.max_iter < 1:
        raise ConfigError(f"solver.max_iter must be >= 1, got {solver.max_iter}")
    if solver.ims_per_batch < 1 or solver.ims_per_batch % world_size:
        raise ConfigError(
            f"solver.ims_per_batch={solver.ims_per_batch} is the global batch and must be a positive "
            f"multiple of the number of processes ({world_size})"
        )
    if solver.ims_per_device < 0:
        raise ConfigError(f"solver.ims_per_device must be >= 0, got {solver.ims_per_device}")
    if solver.base_lr <= 0 or solver.warmup_iters < 0 or not 0 < solver.warmup_factor <= 1:
        raise ConfigError(
            "solver: need base_lr > 0, warmup_iters >= 0 and 0 < warmup_factor <= 1 "
            f"(got {solver.base_lr}, {solver.warmup_iters}, {solver.warmup_factor})"
        )
    if list(solver.steps) != sorted(solver.steps):
        raise ConfigError(f"solver.steps must be increasing, got {list(solver.steps)}")
    if solver.momentum < 0 or solver.weight_decay < 0 or solver.clip_grad_norm < 0:
        raise ConfigError(
            "solver: need momentum, weight_decay and clip_grad_norm >= 0 "
            f"(got {solver.momentum}, {solver.weight_decay}, {solver.clip_grad_norm})"
        )
    if solver.checkpoint_period < 1 or solver.log_period < 1:
        raise ConfigError("solver.checkpoint_period and solver.log_period must be >= 1")
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {cfg.data.num_workers}")
    if not 0 <= cfg.data.hflip_prob <= 1:
        raise ConfigError(f"data.hflip_prob must be in 0..1, got {cfg.data.hflip_prob}")
    validate_model(cfg.model)
    return cfg


def validate_model(model: ModelConfig) -> ModelConfig:
    """The model fields' ranges and relations (part of :func:`validate`; also checked when a model is built
    from a checkpoint's config)."""
    for name in ("pixel_mean", "pixel_std"):
        values = getattr(model, name)
        if len(values) != 3:
            raise ConfigError(f"model.{name} needs 3 values (one per input channel), got {list(values)}")
    if any(float(v) == 0 for v in model.pixel_std):
        raise ConfigError(f"model.pixel_std must not contain 0, got {list(model.pixel_std)}")
    if model.input_scale <= 0:
        raise ConfigError(f"model.input_scale must be > 0, got {model.input_scale}")
    if model.roi_heads.pooler_sampling_ratio < 0:
        raise ConfigError(f"model.roi_heads.pooler_sampling_ratio must be >= 0, got {model.roi_heads.pooler_sampling_ratio}")
    if model.backbone.stride_in_1x1 and model.backbone.depth < 50:
        raise ConfigError(
            f"model.backbone.stride_in_1x1 needs a bottleneck ResNet (depth 50 or 101), got depth {model.backbone.depth}"
        )
    if any(not isinstance(entry, str) or not entry.strip() for entry in model.freeze):
        raise ConfigError(f"model.freeze entries must be module names such as backbone, rpn, roi_heads; got {list(model.freeze)}")
    if not model.min_size or any(int(s) < 1 for s in model.min_size) or model.max_size < 1:
        raise ConfigError(f"model.min_size and model.max_size must be positive, got {list(model.min_size)}, {model.max_size}")
    check_score_thresh(model.fusion.score_thresh, "model.fusion.score_thresh")
    check_score_thresh(model.fusion.overlap_thresh, "model.fusion.overlap_thresh")
    return model
