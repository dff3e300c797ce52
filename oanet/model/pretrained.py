"""Start OANet from pretrained detectors: torchvision / detectron2 Mask R-CNN and Panoptic FPN, oanet.

:func:`load_pretrained` copies every tensor of the source that has a counterpart in the model (names
translated by :mod:`oanet.model.weight_formats`), takes class-indexed rows (classifier, box regression,
mask predictor, stuff classifier, SRM) by category, and returns a :class:`LoadReport` of what was
loaded, remapped, left at its fresh initialisation, and not used. A tensor whose shape does not fit
is an error, never skipped quietly. :func:`freeze` stops submodules from training.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from oanet.data.labels import LabelSpace
from oanet.errors import ConfigError
from oanet.fileio import write_json_atomic
from oanet.model.weight_formats import (
    BACKGROUND,
    Slot,
    SourceWeights,
    label_space_slots,
    oanet_class_kind,
    read_source,
)

# Modules the stuff branch owns when it does not share them (model.sharing none / backbone): they
# start as copies of the instance branch's.
_STUFF_BRANCH_COPIES = {"backbone.stuff_body.": "backbone.body.", "backbone.stuff_fpn.": "backbone.fpn."}


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with every tensor of the model and of the source."""

    source: str
    description: str
    loaded: list[dict] = field(default_factory=list)  # {"target", "source"}: copied whole
    remapped: list[dict] = field(default_factory=list)  # {"target", "source", "detail"}: rows by class
    reinitialized: list[dict] = field(default_factory=list)  # {"target", "detail"}: fresh (no source)
    unused: list[dict] = field(default_factory=list)  # {"source", "detail"}: in the source, not used
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["counts"] = {k: len(out[k]) for k in ("loaded", "remapped", "reinitialized", "unused")}
        return out

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict(), indent=1)

    def __str__(self) -> str:
        lines = [f"init from {self.source}: {self.description}"]
        lines.append(f"  loaded         {len(self.loaded):4d} tensors  {_grouped(e['target'] for e in self.loaded)}")
        lines.append(f"  remapped       {len(self.remapped):4d} tensors")
        lines += [f"    {e['target']} <- {e['source']}: {e['detail']}" for e in self.remapped]
        lines.append(f"  re-initialised {len(self.reinitialized):4d} tensors")
        lines += _grouped_details(self.reinitialized, "target")
        lines.append(f"  unused         {len(self.unused):4d} tensors")
        lines += _grouped_details(self.unused, "source")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _group_of(name: str, depth: int = 2) -> str:
    parts = name.split(".")
    return ".".join(parts[:depth]) if len(parts) > depth else parts[0]


def _grouped(names) -> str:
    counts = Counter(_group_of(n) for n in names)
    return ", ".join(f"{group} ({n})" for group, n in counts.items())


def _grouped_details(entries: list[dict], key: str) -> list[str]:
    """One line per (module, reason): the tensor itself when alone, else the module and a count."""
    groups: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        groups.setdefault((_group_of(entry[key], 1), entry["detail"]), []).append(entry[key])
    lines = []
    for (group, detail), names in groups.items():
        what = names[0] if len(names) == 1 else f"{group}.* ({len(names)})"
        lines.append(f"    {what}: {detail}")
    return lines


# --------------------------------------------------------------------------------------------
# class rows


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


def match_slots(target: list[Slot], source: list[Slot]) -> tuple[list[int], list[str]]:
    """For each target slot, the index of its source slot (-1: none) and how it was found.

    Background and "any thing" match their own kind. A category matches the source class with the same
    id and name (COCO ids: torchvision's row index, detectron2's sorted things), else the one source
    class with the same name (another dataset naming a COCO class), else nothing (fresh rows).
    """
    special, by_key, by_name = {}, {}, {}
    for i, slot in enumerate(source):
        if isinstance(slot, str):
            special[slot] = i
        elif slot is not None:
            by_key[(slot[0], _norm(slot[1]))] = i
            by_name.setdefault(_norm(slot[1]), []).append(i)
    index, how = [], []
    for slot in target:
        if isinstance(slot, str):
            found, kind = special.get(slot, -1), slot
        elif (slot[0], _norm(slot[1])) in by_key:
            found, kind = by_key[(slot[0], _norm(slot[1]))], "id"
        elif len(by_name.get(_norm(slot[1]), [])) == 1:
            found, kind = by_name[_norm(slot[1])][0], "name"
        else:
            found, kind = -1, "fresh"
        index.append(found)
        how.append(kind if found >= 0 else "fresh")
    return index, how


def gather_rows(target: Tensor, source: Tensor, index: list[int], rows: int, class_dims: int) -> Tensor:
    """``target`` with the rows of each matched slot taken from ``source`` (``index[t]`` = source slot
    of target slot t, -1 = keep). ``class_dims`` leading dims are class-indexed (2 for the SRM's
    class-to-class convs); each slot spans ``rows`` rows (4 for box regression)."""
    out = target.detach().clone()
    pairs = [(t, s) for t, s in enumerate(index) if s >= 0]
    if not pairs:
        return out
    offsets = torch.arange(rows)
    t_rows = (torch.tensor([t for t, _ in pairs])[:, None] * rows + offsets).reshape(-1)
    s_rows = (torch.tensor([s for _, s in pairs])[:, None] * rows + offsets).reshape(-1)
    src = source.detach().to(device=out.device, dtype=out.dtype)
    if class_dims == 1:
        out[t_rows] = src[s_rows]
    else:
        out[t_rows[:, None], t_rows[None, :]] = src[s_rows[:, None], s_rows[None, :]]
    return out


def _describe_match(how: list[str], target_slots: list[Slot]) -> str:
    counts = Counter(how)
    parts = [f"{counts['id']} classes by category id"]
    if counts["name"]:
        parts.append(f"{counts['name']} by name")
    if counts[BACKGROUND]:
        parts.append("background")
    if counts["things"]:
        parts.append("'things' channel")
    fresh = [s for s, h in zip(target_slots, how) if h == "fresh"]
    if fresh:
        parts.append(f"{len(fresh)} fresh")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# loading


def load_pretrained(model: nn.Module, source: str | Path, label_space: LabelSpace, format: str = "auto") -> LoadReport:
    """Load pretrained weights into ``model`` (an OANet for ``label_space``); returns the :class:`LoadReport`.

    ``source``: ``"torchvision:<WeightsEnum>.<NAME>"`` (e.g. ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``,
    downloaded once by torchvision), a local torchvision Mask R-CNN state dict (``.pth``), a detectron2
    model-zoo checkpoint (``.pkl``: Mask R-CNN or Panoptic FPN; read without executing anything), or an
    oanet checkpoint. ``format`` forces the file's layout ("torchvision", "detectron2", "oanet").
    Class rows are taken by category (COCO id and name, else name); rows of classes the source lacks,
    and everything the source does not have (stuff head, SRM), keep their fresh initialisation.
    """
    weights = read_source(str(source), format)
    return load_weights(model, weights, label_space, str(source))


def load_weights(model: nn.Module, weights: SourceWeights, label_space: LabelSpace, source: str) -> LoadReport:
    """:func:`load_pretrained` on weights already read."""
    cfg = getattr(model, "cfg", None)
    if cfg is not None and (label_space.num_things, label_space.num_stuff) != (
        cfg.num_thing_classes, cfg.num_stuff_classes
    ):
        raise ConfigError(
            f"load_pretrained: the label space has {label_space.num_things} things and {label_space.num_stuff} "
            f"stuff, the model {cfg.num_thing_classes} and {cfg.num_stuff_classes}"
        )
    target_slots = label_space_slots(label_space, cfg.stuff_head.classes if cfg is not None else "all")
    report = LoadReport(source, weights.description, notes=list(weights.notes))
    state = model.state_dict()
    new_state, used, why_unused, mismatches = {}, set(), {}, []
    fresh_classes: dict[str, list[Slot]] = {}
    for name, value in state.items():
        new_state[name] = value
        source_name = name if name in weights.tensors else _stuff_branch_copy(name, weights)
        if source_name is None:
            report.reinitialized.append({"target": name, "detail": _fresh_reason(name, weights)})
            continue
        src, original, kind = weights.tensors[source_name], weights.names[source_name], oanet_class_kind(name)
        fits = src.shape == value.shape
        if kind is not None and source_name in weights.slots:
            remapped = _remap(name, value, src, weights.slots[source_name], target_slots[kind[0]], kind[1])
            fits = remapped is not None
            if fits:
                new_state[name], detail, how = remapped
                report.remapped.append({"target": name, "source": original, "detail": detail})
                fresh_classes[kind[0]] = [s for s, h in zip(target_slots[kind[0]], how) if h == "fresh"]
                used.add(source_name)
                continue
        elif kind is not None:  # class rows whose classes the source does not name
            report.reinitialized.append({"target": name, "detail": f"the classes of {original} are unknown"})
            why_unused[source_name] = "its classes are unknown"
            continue
        if not fits:
            message = f"{name} {tuple(value.shape)} <- {original} {tuple(src.shape)}"
            if source_name not in weights.optional:
                mismatches.append(message)
            report.reinitialized.append({"target": name, "detail": f"shape does not fit: {message}"})
            why_unused[source_name] = "shape does not fit (see re-initialised)"
            continue
        new_state[name] = src.detach().to(dtype=value.dtype)
        used.add(source_name)
        if source_name != name:
            report.remapped.append({"target": name, "source": original, "detail": "copy for the stuff branch"})
        else:
            report.loaded.append({"target": name, "source": original})
    _check_fit(report, mismatches, source, weights)
    report.unused = [{"source": k, "detail": v} for k, v in weights.unused.items()] + [
        {"source": weights.names[n], "detail": why_unused.get(n) or _unused_reason(n)}
        for n in weights.tensors if n not in used
    ]
    report.notes += _fresh_class_notes(fresh_classes) + _input_notes(cfg, weights.expects)
    model.load_state_dict(new_state)
    return report


def _check_fit(report: LoadReport, mismatches: list[str], source: str, weights: SourceWeights) -> None:
    """A ConfigError when required tensors do not fit, or when nothing of the source was used."""
    if mismatches:
        raise ConfigError(
            f"model.init: {source}: {len(mismatches)} tensor(s) do not fit this model: "
            + "; ".join(mismatches[:3]) + ("; ..." if len(mismatches) > 3 else "")
            + " (are model.backbone.depth, fpn_channels and the head widths the source's?)"
        )
    if not report.loaded and not report.remapped:
        raise ConfigError(f"model.init: {source}: no tensor of it fits this model ({weights.description})")


def _stuff_branch_copy(name: str, weights: SourceWeights) -> Optional[str]:
    for prefix, instance_prefix in _STUFF_BRANCH_COPIES.items():
        if name.startswith(prefix):
            candidate = instance_prefix + name[len(prefix):]
            return candidate if candidate in weights.tensors else None
    return None


def _remap(name, value, src, source_slots, target_slots, rows):
    """``(tensor, detail, how)`` for a class-indexed tensor, or None when the non-class dims differ."""
    slots, source_rows = source_slots
    class_dims = 2 if name.startswith("srm.") and value.dim() > 1 else 1
    expected = len(slots) * source_rows
    if src.shape[:class_dims] != (expected,) * class_dims or src.shape[class_dims:] != value.shape[class_dims:]:
        return None
    index, how = match_slots(target_slots, slots)
    out = gather_rows(value, src, index, rows, class_dims)
    return out, _describe_match(how, target_slots), how


def _fresh_reason(name: str, weights: SourceWeights) -> str:
    if name.endswith("num_batches_tracked"):
        return "BatchNorm counter"
    if name.startswith(("stuff_head.", "srm.")):
        return f"the source ({weights.format}) has no {name.split('.')[0]}"
    return "not in the source"


def _unused_reason(name: str) -> str:
    if name.endswith("num_batches_tracked"):
        return "BatchNorm counter (the model's norms are frozen)"
    return "no counterpart in this model"


def _fresh_class_notes(fresh_classes: dict[str, list[Slot]]) -> list[str]:
    notes = []
    labels = {"det": "detection", "channel": "stuff-branch", "thing": "SRM"}
    for kind, slots in fresh_classes.items():
        named = [f"{s[1]} ({s[0]})" for s in slots if isinstance(s, tuple)]
        if named:
            shown = ", ".join(named[:12]) + (f" and {len(named) - 12} more" if len(named) > 12 else "")
            notes.append(f"{labels[kind]} rows without a source class (fresh): {shown}")
    return notes


def _config_value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _input_notes(cfg, expects: dict) -> list[str]:
    """Where the model's input/backbone settings differ from those the weights were trained with."""
    if cfg is None:
        return []
    notes = []
    for key, expected in expects.items():
        actual = _config_value(cfg, key)
        same = (
            all(abs(float(a) - float(b)) < 1e-3 for a, b in zip(actual, expected)) and len(actual) == len(expected)
            if isinstance(expected, tuple)
            else actual == expected
        )
        if not same:
            notes.append(f"model.{key} is {actual!r} but the source was trained with {expected!r}")
    return notes


# --------------------------------------------------------------------------------------------
# freezing


def freeze(model: nn.Module, paths) -> list[str]:
    """Stop every parameter under each module path (``backbone``, ``rpn``, ``roi_heads.box_head``...)
    from training; returns the frozen paths. BatchNorm layers that would still update their running
    statistics in training mode are refused (use ``model.backbone.frozen_bn: true``)."""
    frozen = []
    for path in paths:
        try:
            module = model.get_submodule(str(path))
        except AttributeError:
            known = ", ".join(name for name, child in model.named_children() if child is not None)
            raise ConfigError(f"model.freeze: {path!r} is not a module of this model (top level: {known})") from None
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in module.modules()):
            raise ConfigError(
                f"model.freeze: {path} has BatchNorm layers whose statistics would keep changing in training; "
                "set model.backbone.frozen_bn: true"
            )
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        frozen.append(str(path))
    return frozen
