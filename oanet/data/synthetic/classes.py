"""What the benchmark contains: thing and stuff classes, the depth rules, the splits, the categories."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val")


@dataclass(frozen=True)
class ThingClass:
    id: int
    name: str
    supercategory: str
    color: tuple[int, int, int]  # base colour of the texture and of the panoptic segment colour
    layer: float  # depth layer: higher lies on top
    weight: float  # relative sampling frequency
    size: tuple[float, float]  # range of the characteristic size, as a fraction of the image size


@dataclass(frozen=True)
class StuffClass:
    id: int
    name: str
    supercategory: str
    color: tuple[int, int, int]


# Layers (far -> near): star < person < ring < triangle < ball < cross < box < tie. Frequent
# classes (person, box) and large ones (person, box, ring) are not consistently on top or below.
THINGS: tuple[ThingClass, ...] = (
    ThingClass(1, "person", "person", (230, 150, 100), 1.0, 3.0, (0.40, 0.62)),
    ThingClass(2, "tie", "accessory", (190, 25, 55), 7.0, 0.35, (0.22, 0.32)),
    ThingClass(3, "ball", "shape", (245, 215, 40), 4.0, 1.5, (0.16, 0.30)),
    ThingClass(4, "box", "shape", (150, 95, 45), 6.0, 2.0, (0.18, 0.34)),
    ThingClass(5, "triangle", "shape", (205, 60, 205), 3.0, 1.0, (0.20, 0.36)),
    ThingClass(6, "star", "shape", (250, 250, 235), 0.0, 1.2, (0.22, 0.34)),
    ThingClass(7, "ring", "shape", (30, 200, 180), 2.0, 0.8, (0.24, 0.36)),
    ThingClass(8, "cross", "shape", (45, 45, 55), 5.0, 1.0, (0.18, 0.32)),
)
STUFF: tuple[StuffClass, ...] = (
    StuffClass(101, "sky", "sky", (135, 190, 240)),
    StuffClass(102, "wall", "wall", (165, 80, 60)),
    StuffClass(103, "grass", "plant", (70, 140, 60)),
    StuffClass(104, "water", "water", (30, 90, 170)),
    StuffClass(105, "road", "ground", (115, 115, 115)),
)
THING_BY_NAME = {c.name: c for c in THINGS}
STUFF_BY_NAME = {c.name: c for c in STUFF}

# Depth rules beyond the class layers (documented in docs/synthetic.md).
TIE_ON_PERSON_PROB = 0.85  # a tie is worn by a person whenever the image has one
PERSON_TIE_PROB = 0.45  # chance that a person gets a tie
FLOATING_LAYER = 8.0  # a ball mostly over water floats on top of everything
OUT_OF_ORDER_PROB = 0.05  # an instance whose layer is redrawn at random
ATTACH_PROB = 0.5  # an instance is placed overlapping an earlier one
CROWD_PROB = 0.15
CROWD_CLASSES = ("person", "ball", "star")
STUFF_VOID_PROB = 0.5  # void band along the stuff borders
THING_VOID_PROB = 0.25  # void band along a visible instance's outline
MIN_VISIBLE_FRACTION = 0.35
NUM_THINGS = (3, 7)
THING_IDS = frozenset(c.id for c in THINGS)


def categories(things_only: bool = False) -> list[dict]:
    """The COCO ``categories`` list of the panoptic JSON (things only: of the instances JSON)."""
    cats = [{"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": 1, "color": list(c.color)}
            for c in THINGS]
    if not things_only:
        cats += [{"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": 0,
                  "color": list(c.color)} for c in STUFF]
    return cats
