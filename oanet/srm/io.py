"""Read an SRM from any of the files that hold one: ``oanet srm train``'s, ``oanet ablate``'s
``srm_<name>.pth``, or an OANet checkpoint (its ``srm.*`` weights). Never unpickles code (the files
are read with :func:`~oanet.model.checkpoint.load_checkpoint_file`)."""

from __future__ import annotations

from pathlib import Path

from oanet.data.labels import LabelSpace
from oanet.errors import ConfigError, DataError
from oanet.model.srm import SRM_KERNELS, SpatialRankingModule


def _label_space(data: dict, path: Path) -> LabelSpace:
    if not data.get("label_space"):
        raise ConfigError(f"{path}: holds no label space (which category is which SRM channel); "
                          "retrain it with `oanet srm train`")
    try:
        return LabelSpace.from_dict(data["label_space"])
    except (DataError, AttributeError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: bad label space ({exc})") from None


def _build(path: Path, weights: dict, kernel: str, num_classes: int, stride: int, loss_weight: float) -> SpatialRankingModule:
    if kernel not in SRM_KERNELS:
        raise ConfigError(f"{path}: unknown SRM kernel {kernel!r} (expected one of {SRM_KERNELS})")
    srm = SpatialRankingModule(int(num_classes), kernel, int(stride), float(loss_weight))
    try:
        srm.load_state_dict(weights)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{path}: SRM weights do not fit a {kernel} SRM of {num_classes} classes: {detail}") from None
    return srm.eval()


def load_ranker_parts(path: str | Path) -> tuple[SpatialRankingModule, LabelSpace, int, int]:
    """``(srm, label_space, short_side, max_size)`` from an SRM file or an OANet checkpoint."""
    from oanet.model.checkpoint import load_checkpoint_file

    path = Path(path)
    data = load_checkpoint_file(path, map_location="cpu")
    model = data["model"]
    if not isinstance(model, dict):
        raise ConfigError(f"{path}: not an SRM file or OANet checkpoint (its 'model' is not a state dict)")
    config = data.get("config") or {}
    if "kernel" in data and "num_thing_classes" in data:  # a standalone SRM (srm train, ablate)
        label_space = _label_space(data, path)
        srm = _build(path, model, data["kernel"], data["num_thing_classes"], data.get("stride", 4),
                     data.get("loss_weight", 1.0))
        model_cfg = config.get("model", {}) if isinstance(config, dict) else {}
        short_side = data.get("short_side") or (model_cfg.get("min_size") or [800])[-1]
        max_size = data.get("max_size") or model_cfg.get("max_size", 1333)
        return srm, label_space, int(short_side), int(max_size)
    srm_weights = {k[len("srm."):]: v for k, v in model.items() if isinstance(k, str) and k.startswith("srm.")}
    if not srm_weights:
        raise ConfigError(f"{path}: this checkpoint has no SRM (trained with model.srm.enabled false, or not an "
                          "OANet model); give a file of `oanet srm train` or an OANet checkpoint trained with its SRM")
    model_cfg = config.get("model", {}) if isinstance(config, dict) else {}
    srm_cfg = model_cfg.get("srm", {})
    label_space = _label_space(data, path)
    srm = _build(path, srm_weights, srm_cfg.get("kernel", "gcn7"), label_space.num_things, srm_cfg.get("stride", 4),
                 srm_cfg.get("loss_weight", 1.0))
    return srm, label_space, int((model_cfg.get("min_size") or [800])[-1]), int(model_cfg.get("max_size", 1333))
