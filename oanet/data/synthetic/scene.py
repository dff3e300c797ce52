"""A scene: the stuff layout and 3-7 thing instances (plus maybe a crowd), their depth and visibility."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from oanet.data.synthetic.classes import (
    ATTACH_PROB,
    CROWD_CLASSES,
    CROWD_PROB,
    FLOATING_LAYER,
    MIN_VISIBLE_FRACTION,
    NUM_THINGS,
    OUT_OF_ORDER_PROB,
    PERSON_TIE_PROB,
    STUFF,
    STUFF_BY_NAME,
    THING_BY_NAME,
    THINGS,
    TIE_ON_PERSON_PROB,
    ThingClass,
)
from oanet.data.synthetic.geometry import Grid, Shape, shape_mask
from oanet.data.synthetic.rendering import stuff_layout


@dataclass
class Instance:
    cls: ThingClass
    shapes: list[Shape]  # one shape, or the members of a crowd
    mask: np.ndarray  # amodal
    layer: float
    iscrowd: bool = False

    @property
    def bottom(self) -> int:
        """Lowest image row of the instance: the nearer of two same-class instances lies lower."""
        return int(np.flatnonzero(self.mask.any(axis=1))[-1])

    def depth_key(self) -> tuple[float, int]:
        return (self.layer, self.bottom)


def _sample_class(rng: np.random.Generator) -> ThingClass:
    weights = np.array([c.weight for c in THINGS])
    return THINGS[int(rng.choice(len(THINGS), p=weights / weights.sum()))]


def _clip_centre(value: float, radius: float, size: int) -> float:
    """Keep most of a shape inside the image."""
    margin = min(0.8 * radius, 0.5 * size)
    return float(np.clip(value, margin, size - margin))


def _new_shape(rng: np.random.Generator, cls: ThingClass, size: int, placed: list[Instance]) -> Shape:
    length = rng.uniform(*cls.size) * size
    angle = {"person": rng.uniform(-0.25, 0.25), "tie": rng.uniform(-0.3, 0.3)}.get(
        cls.name, rng.uniform(0, 2 * math.pi)
    )
    aspect = rng.uniform(0.75, 1.3) if cls.name == "box" else 1.0
    persons = [p for p in placed if p.cls.name == "person" and not p.iscrowd]
    if cls.name == "tie" and persons and rng.random() < TIE_ON_PERSON_PROB:
        person = persons[int(rng.integers(len(persons)))].shapes[0]
        h = person.size
        length = rng.uniform(0.42, 0.52) * h
        # hangs from the neck along the body axis
        along = -0.5 * h + 0.24 * h + 0.5 * length
        cos, sin = math.cos(person.angle), math.sin(person.angle)
        return Shape("tie", person.cx - sin * along, person.cy + cos * along, person.angle, length)
    shape = Shape(cls.name, 0.0, 0.0, angle, length, aspect)
    singles = [p for p in placed if not p.iscrowd]
    if singles and rng.random() < ATTACH_PROB:
        partner = singles[int(rng.integers(len(singles)))].shapes[0]
        direction = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.15, 0.75) * (partner.radius + shape.radius)
        cx, cy = partner.cx + distance * math.cos(direction), partner.cy + distance * math.sin(direction)
    else:
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
    shape.cx, shape.cy = _clip_centre(cx, shape.radius, size), _clip_centre(cy, shape.radius, size)
    return shape


def _layer(cls: ThingClass, mask: np.ndarray, stuff: np.ndarray, rng: np.random.Generator) -> float:
    water = STUFF.index(STUFF_BY_NAME["water"])
    if cls.name == "ball" and (stuff[mask] == water).mean() > 0.5:
        return FLOATING_LAYER
    if rng.random() < OUT_OF_ORDER_PROB:
        return float(rng.uniform(-0.5, 8.5))
    return cls.layer


def paint_order(instances: Sequence[Instance]) -> list[int]:
    """Indices far -> near: crowds first, then by (layer, lowest row)."""
    return sorted(range(len(instances)), key=lambda i: (not instances[i].iscrowd, instances[i].depth_key()))


def visible_masks(instances: Sequence[Instance]) -> list[np.ndarray]:
    """Visible part of each instance given the depth order."""
    owner = np.full(instances[0].mask.shape, -1, dtype=np.int64)
    for i in paint_order(instances):
        owner[instances[i].mask] = i
    return [owner == i for i in range(len(instances))]


def _acceptable(instances: Sequence[Instance], min_pixels: int) -> bool:
    for inst, visible in zip(instances, visible_masks(instances)):
        area = int(visible.sum())
        if area < min_pixels or area < MIN_VISIBLE_FRACTION * inst.mask.sum():
            return False
    return True


def _crowd(rng: np.random.Generator, size: int, grid: Grid) -> Instance:
    cls = THING_BY_NAME[str(rng.choice(CROWD_CLASSES))]
    cx, cy = rng.uniform(0.25, 0.75) * size, rng.uniform(0.4, 0.8) * size
    shapes, mask = [], np.zeros(grid.xs.shape, dtype=bool)
    for _ in range(int(rng.integers(6, 13))):
        member = Shape(cls.name, cx + rng.normal(0, 0.08) * size, cy + rng.normal(0, 0.05) * size,
                       rng.uniform(-0.2, 0.2) if cls.name == "person" else rng.uniform(0, 2 * math.pi),
                       rng.uniform(0.07, 0.1) * size * (2.0 if cls.name == "person" else 1.0))
        shapes.append(member)
        mask |= shape_mask(member, grid)
    return Instance(cls, shapes, mask, layer=-1.0, iscrowd=True)


def compose_scene(rng: np.random.Generator, size: int, grid: Grid) -> tuple[np.ndarray, list[Instance]]:
    """Stuff labels (indices into STUFF) and the instances (crowd first if any)."""
    stuff = stuff_layout(rng, grid)
    min_pixels = int((0.06 * size) ** 2)
    instances: list[Instance] = []
    if rng.random() < CROWD_PROB:
        instances.append(_crowd(rng, size, grid))
    n_things = int(rng.integers(NUM_THINGS[0], NUM_THINGS[1] + 1))
    classes = sorted((_sample_class(rng) for _ in range(n_things)), key=lambda c: c.name != "person")
    # persons come first so that ties can be worn; a person may get a tie of its own
    extra_ties = sum(rng.random() < PERSON_TIE_PROB for c in classes if c.name == "person")
    classes += [THING_BY_NAME["tie"]] * int(extra_ties)
    for cls in classes:
        for _attempt in range(8):
            shape = _new_shape(rng, cls, size, instances)
            mask = shape_mask(shape, grid)
            if mask.sum() < min_pixels:
                continue
            candidate = Instance(cls, [shape], mask, _layer(cls, mask, stuff, rng))
            if _acceptable(instances + [candidate], min_pixels):
                instances.append(candidate)
                break
    return stuff, instances



def scene_stats(instances: Sequence[Instance], singles: Sequence[np.ndarray], ids: np.ndarray) -> dict:
    """Counts for the dataset summary: how many thing instances overlap another, crowd, void."""
    things = [inst for inst in instances if not inst.iscrowd]
    overlapping, same_class_pairs = 0, 0
    for i, a in enumerate(singles):
        if any((a & b).any() for j, b in enumerate(singles) if j != i):
            overlapping += 1
        same_class_pairs += sum(
            things[i].cls.id == things[j].cls.id and bool((a & singles[j]).any()) for j in range(i + 1, len(singles))
        )
    return {"things": len(things), "overlapping": overlapping, "same_class_overlap_pairs": same_class_pairs,
            "crowd": int(any(inst.iscrowd for inst in instances)), "void_pixels": int((ids == 0).sum()),
            "pixels": int(ids.size)}
