"""Checkpoints: atomic writes, safe loads, and refusing a checkpoint made for another model.

A training checkpoint (``DIR/last.pth``) holds everything needed to continue exactly where training
stopped: model, optimiser, GradScaler, iteration, RNG states of python/numpy/torch/CUDA (one set per
rank), the config and the label space. ``DIR/model_final.pth`` holds the model, config and label space
only (for inference). Everything stored is tensors, dicts, lists, numbers or strings, so loading uses
``torch.load(weights_only=True)`` and never executes pickled code.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from oanet.config import Config, ModelConfig, diff_configs, from_dict, to_dict
from oanet.errors import ConfigError, DataError
from oanet.fileio import default_file_mode

FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# writing and reading


def atomic_save(obj: dict, path: str | Path) -> None:
    """Write ``obj`` to ``path`` so that a reader (or a crash) sees the old file or the new, never half.

    torch.save to a temporary file in the same folder, fsync it, then os.replace (atomic on POSIX),
    then fsync the folder so the rename itself survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, default_file_mode())  # mkstemp's 0600 would hide checkpoints from the group
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a folder
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by oanet, never unpickling code; clear errors for missing/corrupt files."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.pth"))
        hint = f"pass one of its .pth files: {', '.join(found[:8])}" if found else "it holds no .pth file"
        raise ConfigError(f"{path}: is a folder, not a checkpoint; {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if is_onnx_file(path):
        raise ConfigError(f"{path}: this is an ONNX file (from `oanet export`): use --onnx, or oanet.runtime.OnnxPredictor")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle with code, ...
        # torch's messages run to many lines (weights_only advice, miniz notes): keep the first.
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise ConfigError(f"{path}: not a readable oanet checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(data, dict) or "model" not in data or "config" not in data:
        raise ConfigError(f"{path}: not an oanet checkpoint (expected a dict with 'model' and 'config')")
    return data


def is_onnx_file(path: Path) -> bool:
    """An ONNX model (a protobuf whose first field is ir_version), not a torch zip or pickle."""
    if path.suffix.lower() == ".onnx":
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x08 and head[1] < 0x80 and not head.startswith(b"PK")


# --------------------------------------------------------------------------------------------
# RNG states as plain containers (weights_only-safe)


def capture_rng_state() -> dict:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in states])


# --------------------------------------------------------------------------------------------
# config checks


def model_config_differences(checkpoint_config: dict, cfg: Config) -> list[str]:
    """Differences between a checkpoint's model config and ``cfg.model`` (empty = compatible).

    Keys added to the config after the checkpoint was written count at their defaults, which
    reproduce what older versions did (a field is added with its old behaviour as default).
    """
    stored = checkpoint_config.get("model", {})
    try:
        stored = to_dict(from_dict(ModelConfig, stored, "checkpoint model config"))
    except ConfigError:
        pass  # unknown or malformed keys: compare as stored, so the differences name them
    return diff_configs(stored, to_dict(cfg.model), prefix="model.")


def check_model_config(checkpoint_config: dict, cfg: Config, path: str | Path) -> None:
    differences = model_config_differences(checkpoint_config, cfg)
    if differences:
        listing = "; ".join(f"{line} (checkpoint != current)" for line in differences[:20])
        more = f"; and {len(differences) - 20} more" if len(differences) > 20 else ""
        raise ConfigError(f"{path}: checkpoint was trained with a different model config: {listing}{more}")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DistributedDataParallel (state dict keys without 'module.')."""
    return model.module if hasattr(model, "module") else model


# --------------------------------------------------------------------------------------------
# training checkpoints


def training_state(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    iteration: int,
    cfg: Config,
    label_space: Any,
    schedule: dict,
    rng_states: list[dict],
) -> dict:
    """The dict written to ``last.pth``. ``iteration`` is the number of completed iterations."""
    return {
        "format_version": FORMAT_VERSION,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "iteration": int(iteration),
        "schedule": dict(schedule),
        "rng": rng_states,  # one entry per rank
        "config": to_dict(cfg),
        "label_space": label_space.to_dict() if label_space is not None else None,
    }


def final_model_state(model: torch.nn.Module, cfg: Config, label_space: Any, iteration: int) -> dict:
    """The dict written to ``model_final.pth``: what inference needs, nothing more."""
    return {
        "format_version": FORMAT_VERSION,
        "model": unwrap(model).state_dict(),
        "iteration": int(iteration),
        "config": to_dict(cfg),
        "label_space": label_space.to_dict() if label_space is not None else None,
    }


def load_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu", *,
                               needs_labels_to: Optional[str] = None):
    """Build the model a checkpoint describes and load its weights.

    Returns ``(model, cfg, label_space)``: the model in eval mode on ``device``, the full training
    :class:`~oanet.config.Config` and the :class:`~oanet.data.labels.LabelSpace` (or None when
    the checkpoint has none). Works on ``last.pth`` and ``model_final.pth`` alike. With
    ``needs_labels_to`` (e.g. "name segments"), a checkpoint without a label space is a ConfigError.
    """
    from oanet.data.labels import LabelSpace
    from oanet.model.oanet import build_model

    data = load_checkpoint_file(path, map_location="cpu")
    cfg = from_dict(Config, data["config"], where=f"{path}: config")
    try:
        label_space = LabelSpace.from_dict(data["label_space"]) if data.get("label_space") else None
    except (DataError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{path}: bad label space in the checkpoint ({exc})") from None
    if label_space is None and needs_labels_to:
        raise ConfigError(f"{path}: checkpoint holds no label space (category names); cannot {needs_labels_to}")
    # The checkpoint has every weight: do not fetch or read the ImageNet initialisation again.
    init_free = dataclasses.replace(
        cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=None)
    )
    model = build_model(init_free)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        # load_state_dict lists every missing/unexpected key over many lines: one line, shortened.
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise ConfigError(f"{path}: weights do not fit the model its config describes: {detail}") from None
    model.to(device).eval()
    return model, cfg, label_space
